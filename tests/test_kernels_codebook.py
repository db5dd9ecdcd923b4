"""Deep Compression kernels: codebook_spmm and huffman_decode, cpu against reference."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sparsenet import huffman
from sparsenet.kernels import cpu, reference
from test_kernels_common import KSET, assert_same, dtypes, ints, maybe_strided, seeds

FEW = settings(KSET, max_examples=25)
shapes = st.tuples(st.integers(0, 20), st.integers(1, 20))
densities = st.sampled_from([0.0, 0.1, 0.4, 1.0])
ks = st.sampled_from([1, 2, 3, 8])


def random_codes(rng, n_rows, n_cols, density, n_shared, dtype):
    """A CSR pattern with codes into an integer-valued codebook, and its dense form."""
    mask = rng.random((n_rows, n_cols)) < density
    indptr = np.concatenate([[0], np.cumsum(mask.sum(axis=1))]).astype(np.int64)
    indices = np.nonzero(mask)[1].astype(np.int32)
    codebook = ints(rng, n_shared, dtype)
    codes = rng.integers(0, n_shared, indices.size).astype(np.uint8)
    dense = np.zeros((n_rows, n_cols), dtype=dtype)
    dense[mask] = codebook[codes]
    return indptr, indices, codes, codebook, dense


@FEW
@given(shape=shapes, density=densities, k=ks, n_shared=st.sampled_from([1, 5, 256]),
       dtype=dtypes, seed=seeds, strided=st.booleans())
def test_codebook_spmm(shape, density, k, n_shared, dtype, seed, strided):
    rng = np.random.default_rng(seed)
    indptr, indices, codes, codebook, W = random_codes(rng, *shape, density, n_shared, dtype)
    X = maybe_strided(rng, ints(rng, (shape[1], k), dtype), strided)
    want = W @ X
    got_ref = reference.codebook_spmm(indptr, indices, codes, codebook, X,
                                      np.empty((shape[0], k), dtype))
    got_cpu = cpu.codebook_spmm(indptr, indices, codes, codebook, X,
                                np.full((shape[0], k), np.nan, dtype))
    assert_same(got_ref, want)
    assert_same(got_cpu, want)


def test_codebook_spmm_matches_float_csr_on_gaussian_data(rng):
    indptr, indices, codes, _, _ = random_codes(rng, 40, 60, 0.2, 32, np.float32)
    codebook = rng.standard_normal(32).astype(np.float32)
    X = rng.standard_normal((60, 7)).astype(np.float32)
    want = cpu.csr_spmm(indptr, indices, codebook[codes], X, np.empty((40, 7), np.float32))
    got = cpu.codebook_spmm(indptr, indices, codes, codebook, X, np.empty((40, 7), np.float32))
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_codebook_spmm_rejects_bad_arguments(rng):
    indptr, indices, codes, codebook, _ = random_codes(rng, 4, 5, 0.5, 3, np.float32)
    X, out = np.ones((5, 2), np.float32), np.empty((4, 2), np.float32)
    for backend in (reference, cpu):
        with pytest.raises(TypeError, match="codes"):
            backend.codebook_spmm(indptr, indices, codes.astype(np.int32), codebook, X, out)
        with pytest.raises(TypeError, match="X"):
            backend.codebook_spmm(indptr, indices, codes, codebook, X.astype(np.float64), out)
        with pytest.raises(ValueError, match="codebook"):
            backend.codebook_spmm(indptr, indices, codes, np.ones(257, np.float32), X, out)
        with pytest.raises(ValueError, match="out"):
            backend.codebook_spmm(indptr, indices, codes, codebook, X, np.empty((3, 2), np.float32))
    if codes.size:                    # both check every code and index (trusted does not)
        for backend in (reference, cpu):
            with pytest.raises(ValueError, match="codes"):
                backend.codebook_spmm(indptr, indices, np.full_like(codes, 3), codebook, X, out)
            for bad in (5, -1, 2 ** 30):
                hostile = indices.copy()
                hostile[-1] = bad
                with pytest.raises(ValueError, match="indices"):
                    backend.codebook_spmm(indptr, hostile, codes, codebook, X, out)
        got = cpu.trusted.codebook_spmm(indptr, indices, codes, codebook, X, out.copy())
        np.testing.assert_array_equal(
            got, cpu.codebook_spmm(indptr, indices, codes, codebook, X, out.copy()))


@FEW
@given(n=st.integers(0, 300), alphabet=st.sampled_from([1, 2, 7, 32, 256]), seed=seeds,
       skew=st.floats(0.05, 0.9))
def test_huffman_decode_inverts_encode(n, alphabet, seed, skew):
    rng = np.random.default_rng(seed)
    symbols = np.minimum(rng.geometric(skew, n) - 1, alphabet - 1).astype(np.uint8)
    lengths = huffman.code_lengths(np.bincount(symbols, minlength=alphabet))
    if not lengths.any():
        lengths[0] = 1                                   # an empty stream still has a table
    stream, n_bits = huffman.encode(symbols, lengths)
    for backend in (reference, cpu):
        got = backend.huffman_decode(stream, n_bits, lengths, np.empty(n, np.uint8))
        np.testing.assert_array_equal(got, symbols)


def test_huffman_decode_refuses_truncated_and_foreign_streams():
    lengths = np.array([1, 2, 3, 3], np.uint8)           # codes 0, 10, 110, 111
    stream, n_bits = huffman.encode(np.array([3, 1, 0, 2], np.uint8), lengths)   # 11110 0 110
    for backend in (reference, cpu):
        with pytest.raises(ValueError, match="truncated"):
            backend.huffman_decode(stream, n_bits - 2, lengths, np.empty(4, np.uint8))
        with pytest.raises(ValueError, match="truncated"):      # more bits than bytes
            backend.huffman_decode(stream[:1], n_bits, lengths, np.empty(4, np.uint8))
        with pytest.raises(ValueError, match="use"):            # bits left over
            backend.huffman_decode(stream, n_bits, lengths, np.empty(3, np.uint8))
        incomplete = np.array([1, 2, 0, 0], np.uint8)           # codes 0, 10: 11 is no code
        with pytest.raises(ValueError, match="no code"):
            backend.huffman_decode(np.array([0xC0], np.uint8), 2, incomplete,
                                   np.empty(1, np.uint8))
        with pytest.raises(ValueError, match="over-subscribe"):
            backend.huffman_decode(stream, n_bits, np.array([1, 1, 1, 0], np.uint8),
                                   np.empty(4, np.uint8))
        with pytest.raises(ValueError, match="no symbol"):
            backend.huffman_decode(stream, 0, np.zeros(4, np.uint8), np.empty(0, np.uint8))
        with pytest.raises(ValueError, match="most allowed"):
            backend.huffman_decode(stream, n_bits, np.array([1, 40, 0, 0], np.uint8),
                                   np.empty(4, np.uint8))
        with pytest.raises(TypeError, match="stream"):
            backend.huffman_decode(stream.astype(np.int8), n_bits, lengths, np.empty(4, np.uint8))


NO_JIT_SCRIPT = r"""
import numpy as np
from sparsenet import huffman
from sparsenet.kernels import cpu
ip = np.array([0, 2, 3], np.int64); ix = np.array([0, 2, 1], np.int32)
codes = np.array([1, 0, 1], np.uint8); book = np.array([2.0, -1.0], np.float32)
X = np.arange(6, dtype=np.float32).reshape(3, 2)
W = np.array([[-1, 0, 2], [0, -1, 0]], np.float32)
assert np.array_equal(cpu.codebook_spmm(ip, ix, codes, book, X, np.empty((2, 2), np.float32)), W @ X)
assert np.array_equal(cpu.codebook_spmm(ip, ix, codes, book, X[:, :1], np.empty((2, 1), np.float32)), W @ X[:, :1])
s = np.array([0, 3, 3, 1, 2, 0], np.uint8); L = huffman.code_lengths(np.bincount(s, minlength=4))
stream, n = huffman.encode(s, L)
assert np.array_equal(cpu.huffman_decode(stream, n, L, np.empty(6, np.uint8)), s)
print("ok")
"""


def test_cpu_kernels_run_as_plain_python_without_jit():
    import os
    import subprocess
    import sys
    env = dict(os.environ, NUMBA_DISABLE_JIT="1")
    result = subprocess.run([sys.executable, "-c", NO_JIT_SCRIPT], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
