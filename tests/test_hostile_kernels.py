"""Issue 11 A: nothing can crash the interpreter through the sparse types or the kernels.

Each reproducer runs in a child process, so that a crash (SIGSEGV) fails this test with the
signal instead of killing the whole test run. The child prints one line per case: the
exception type it got (a clean error), or what came back.
"""
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import sparsenet as sn
from sparsenet.sparse import CSR, NM, Block, Masked


def run_child(code):
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, (f"the child process ended with {result.returncode} "
                                    f"(a negative number is the signal that killed it)\n"
                                    f"{result.stderr[-2000:]}")
    return result.stdout.split()


def test_csr_keeps_its_own_read_only_indices():
    ix = np.array([0, 2, 1, 3], np.int32)
    w = CSR(np.array([0, 2, 2, 4]), ix, np.ones(4, np.float32), (3, 4))
    ix[1] = 2 ** 30                               # the caller's array, not the matrix's
    out = w.spmm(np.ones((4, 2), np.float32))
    np.testing.assert_array_equal(out, [[2, 2], [0, 0], [2, 2]])
    for array in (w.indptr, w.indices, *w.transposed_index()):
        with pytest.raises(ValueError, match="read-only"):
            array[0] = 1


def test_layer_index_arrays_cannot_be_edited():
    layer = sn.nn.SparseLinear(784, 300, sparsity=0.9)
    with pytest.raises(ValueError, match="read-only"):
        layer.weight.indices[:50] = 2 ** 31 - 1
    with pytest.raises(ValueError, match="read-only"):
        layer.weight.indices[1] = 4
    with pytest.raises(ValueError, match="read-only"):
        layer.weight.indptr[1] = 10 ** 9
    y = layer(sn.Tensor(np.ones((4, 784), np.float32)))
    assert np.isfinite(y.data).all()


@pytest.mark.parametrize("make", [
    lambda: Block(np.array([0, 1]), np.array([0]), np.ones(4, np.float32), (2, 2), 2).indices,
    lambda: NM(np.ones(4, np.float32), np.array([[[0, 1]], [[1, 2]]], np.uint8), 4).idx,
    lambda: Masked(np.ones(4, np.float32), np.ones((2, 2), bool))._mask,
], ids=["block", "nm", "masked"])
def test_every_format_owns_read_only_indices(make):
    with pytest.raises(ValueError, match="read-only"):
        make()[0] = 1


def test_an_update_gives_read_only_indices_too():
    w = CSR.from_dense(np.eye(4, dtype=np.float32))
    new, _ = w.update(np.array([True, False, False, False]), np.array([0]), np.array([1]))
    with pytest.raises(ValueError, match="read-only"):
        new.indices[0] = 3


HOSTILE_KERNELS = r"""
import numpy as np
from sparsenet.kernels import cpu
f32 = np.float32
def case(name, fn):
    try:
        fn()
        print(f"{name}:returned")
    except (ValueError, TypeError) as e:
        print(f"{name}:{type(e).__name__}")
ip, ix, v = np.array([0, 2, 2, 4]), np.array([0, 2, 1, 3], np.int32), np.ones(4, f32)
X, G = np.ones((4, 2), f32), np.ones((3, 2), f32)
out3, out4 = np.empty((3, 2), f32), np.empty((4, 2), f32)
for label, bad in (("big", 2 ** 30), ("negative", -2 ** 30), ("one_past", 4)):
    b = ix.copy(); b[1] = bad
    case(f"spmm_{label}", lambda: cpu.csr_spmm(ip, b, v, X, out3))
    case(f"spmm_k1_{label}", lambda: cpu.csr_spmm(ip, b, v, X[:, :1].copy(), out3[:, :1].copy()))
    case(f"sddmm_{label}", lambda: cpu.csr_sddmm(ip, b, G, X, np.empty(4, f32)))
    case(f"spmm_t_{label}", lambda: cpu.csr_spmm_t(np.array([0, 1, 2, 3, 4]), b[:4], np.arange(4), v, G, out4))
    case(f"spmm_t_sddmm_{label}", lambda: cpu.csr_spmm_t_sddmm(np.array([0, 1, 2, 3, 4]), b, np.arange(4), v, G, X, out4, np.empty(4, f32)))
    case(f"dense_grad_topk_{label}", lambda: cpu.dense_grad_topk(G, X, ip, b, 2, 2))
bad_ptr = np.array([0, 10 ** 9, 4, 4])
case("spmm_indptr", lambda: cpu.csr_spmm(bad_ptr, ix, v, X, out3))
case("sddmm_indptr", lambda: cpu.csr_sddmm(bad_ptr, ix, G, X, np.empty(4, f32)))
case("spmm_t_perm", lambda: cpu.csr_spmm_t(np.array([0, 1, 2, 3, 4]), np.zeros(4, np.int32), np.array([0, 1, 2, 10 ** 9]), v, G, out4))
case("spmm_t_sddmm_repeated_perm", lambda: cpu.csr_spmm_t_sddmm(np.array([0, 1, 2, 3, 4]), np.zeros(4, np.int32), np.array([0, 0, 1, 2]), v, G, X, out4, np.empty(4, f32)))
case("bsr_spmm", lambda: cpu.bsr_spmm(np.array([0, 1]), np.array([7], np.int32), np.ones((1, 2, 2), f32), np.ones((2, 3), f32), np.empty((2, 3), f32)))
case("bsr_spmm_t", lambda: cpu.bsr_spmm_t(np.array([0, 1]), np.array([7], np.int32), np.array([0]), np.ones((1, 2, 2), f32), np.ones((2, 3), f32), np.empty((2, 3), f32)))
case("bsr_sddmm", lambda: cpu.bsr_sddmm(np.array([0, 1]), np.array([7], np.int32), np.ones((2, 3), f32), np.ones((2, 3), f32), np.empty((1, 2, 2), f32)))
idx = np.array([[[0, 200]]], np.uint8)
case("nm_spmm", lambda: cpu.nm_spmm(np.ones((1, 1, 2), f32), idx, 4, np.ones((4, 2), f32), np.empty((1, 2), f32)))
case("nm_spmm_t", lambda: cpu.nm_spmm_t(np.ones((1, 1, 2), f32), idx, 4, np.ones((1, 2), f32), np.empty((4, 2), f32)))
case("nm_sddmm", lambda: cpu.nm_sddmm(idx, 4, np.ones((1, 2), f32), np.ones((4, 2), f32), np.empty((1, 1, 2), f32)))
"""


def test_public_kernels_refuse_hostile_indices():
    lines = run_child(HOSTILE_KERNELS)
    assert len(lines) == 28, lines
    returned = [line for line in lines if line.endswith(":returned")]
    assert not returned, f"these calls accepted an index out of range: {returned}"
    assert all(line.endswith(":ValueError") for line in lines), lines


def test_hostile_layer_edit_in_a_child_process():
    """The issue's reproducer, end to end, where a crash would show as a signal."""
    lines = run_child("""
        import numpy as np, sparsenet as sn
        l = sn.nn.SparseLinear(784, 300, sparsity=0.9)
        for value in (2 ** 31 - 1, 4):
            try:
                l.weight.indices[:50] = value
                print("edited")
            except ValueError:
                print("refused")
        print(np.isfinite(l(sn.Tensor(np.ones((4, 784), np.float32))).data).all())
    """)
    assert lines == ["refused", "refused", "True"]
