"""What every sparse weight type offers: the abstract base `SparseMatrix` and shared checks.

A sparse weight W of shape (n_rows, n_cols) = (out, in) is a flat `values` array (the numbers a
layer trains) plus index arrays (which positions those numbers sit at). Activations are
feature-major: X is (n_cols, k) with k the batch, so a layer computes Y = W @ X.

Two levels of "thing stored":
- an *element* is one weight; `values`, `coords()` and `sddmm` are element-level;
- a *unit* is the smallest thing the format adds or removes (an element for CSR, Masked and NM,
  a bs x bs block for Block). The topology interface (`unit_coords`, `unit_scores`,
  `unit_groups`, `update`) is unit-level, so pruning and growth algorithms never branch on format.

Products run in kernels picked by `kernels_for(*arrays)` (NumPy/Numba on the CPU, CuPy on a GPU).

On a GPU (`weight.to("cuda")`, or a layer moved with `model.to("cuda")`) the values live on the
device and the kernels read device copies of the index arrays, uploaded once per topology. The
index arrays themselves stay on the host: they are what the topology interface (`coords`,
`update`, ...) computes with, in O(nnz) steps that run every few hundred training steps.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from .. import backend
from ..kernels import get_backend

FLOAT_DTYPES = (np.float32, np.float64)


# ----- kernels ---------------------------------------------------------------------------
def kernels_for(*arrays):
    """The kernel module (cpu, or gpu for CuPy arrays) that works on these arrays."""
    return get_backend(*arrays)


def trusted_kernels(*arrays):
    """The products of `kernels_for` without their per-call O(nnz) index checks: for the
    sparse types only, whose index arrays are validated when built and read-only after."""
    module = get_backend(*arrays)
    return getattr(module, "trusted", module)


def owned(array):
    """A private, read-only copy of an index array: the object's topology can then change only
    through `update` (a caller editing the array it passed in, or `w.indices[...] = ...`, cannot
    make the kernels read outside their arrays)."""
    xp = backend.array_module(array)
    copy = xp.array(array, copy=True)
    if xp is np:
        copy.flags.writeable = False
    return copy


def frozen(array):
    """`array` made read-only in place (for index arrays the object alone holds)."""
    if isinstance(array, np.ndarray):
        array.flags.writeable = False
    return array


def apply_epilogue(out, bias, relu):
    """out += bias[:, None], then ReLU (out * (out > 0)), in place: what the CSR kernel fuses
    into its product, done here after the product for the other formats."""
    if bias is not None:
        check_values(bias, out.shape[0], "bias")
        if bias.dtype != out.dtype:
            raise TypeError(f"bias has dtype {bias.dtype}, expected {out.dtype}")
        out += bias[:, None]
    if relu:
        out *= out > 0
    return out


# ----- shared argument checks ------------------------------------------------------------
def check_shape(shape, name="shape") -> tuple[int, int]:
    if (not isinstance(shape, (tuple, list)) or len(shape) != 2
            or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s > 0
                       for s in shape)):
        raise ValueError(f"{name} must be a pair of positive integers (n_rows, n_cols), got {shape!r}")
    return int(shape[0]), int(shape[1])


def check_values(values, length, name="values"):
    """A 1-D float32/float64 array of `length` entries (never converted: it is the trained data)."""
    if not hasattr(values, "dtype") or not hasattr(values, "shape"):
        raise TypeError(f"{name} must be an array, got {type(values).__name__}")
    if values.dtype.type not in FLOAT_DTYPES:
        raise TypeError(f"{name} must have dtype float32 or float64, got {values.dtype}")
    if values.shape != (length,):
        raise ValueError(f"{name} must have shape ({length},), got {values.shape}")
    return values


def check_index_array(arr, name, ndim=1):
    """An integer array (any integer dtype; widened or narrowed later only after range checks)."""
    arr = np.asarray(arr)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must be an integer array, got dtype {arr.dtype}")
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {arr.shape}")
    return arr


def check_dense(array, name="array"):
    if not isinstance(array, np.ndarray):
        raise TypeError(f"{name} must be a NumPy array, got {type(array).__name__}")
    if array.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_rows, n_cols), got shape {array.shape}")
    if array.dtype.type not in FLOAT_DTYPES:
        raise TypeError(f"{name} must have dtype float32 or float64, got {array.dtype}")
    if array.size and not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or infinity")
    return array


def check_mask(mask, shape, name="mask"):
    if not isinstance(mask, np.ndarray) or mask.dtype != np.bool_:
        raise TypeError(f"{name} must be a boolean NumPy array, got "
                        f"{getattr(mask, 'dtype', type(mask).__name__)}")
    if mask.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {mask.shape}")
    return mask


def units_for_density(density, n_units, name="density") -> int:
    """round(density * n_units), after checking density lies in (0, 1]."""
    if isinstance(density, bool) or not isinstance(density, (float, int, np.floating, np.integer)):
        raise TypeError(f"{name} must be a number in (0, 1], got {density!r}")
    if not 0 < density <= 1:
        raise ValueError(f"{name} must lie in (0, 1], got {density}")
    return int(round(float(density) * n_units))


def top_k_mask(scores, k):
    """Boolean mask of the k largest entries of `scores` (any shape); ties go to the lower flat
    index (the kernels' rule), so two formats ranking the same scores keep the same entries."""
    flat = np.ascontiguousarray(scores).ravel()
    keep = np.zeros(flat.shape, dtype=bool)
    keep[kernels_for(flat).topk_flat(flat, k)] = True
    return keep.reshape(scores.shape)


def top_k_per_row_mask(scores, k):
    """Boolean mask of the k largest entries along the last axis of 2-D (rows) or 3-D (groups)
    scores; ties go to the lower position."""
    scores = np.ascontiguousarray(scores)
    kernels = kernels_for(scores)
    if scores.ndim == 2:
        order = kernels.topk_per_row(scores, k, np.empty((scores.shape[0], k), np.int32))
    else:
        order = kernels.topk_per_group(scores, k, np.empty((*scores.shape[:2], k), np.uint8))
    keep = np.zeros(scores.shape, dtype=bool)
    np.put_along_axis(keep, order.astype(np.int64), True, axis=-1)
    return keep


def check_operand(x, n, dtype, name):
    """A 2-D (n, k) array of `dtype`, made C-contiguous for the kernels (a copy only if needed)."""
    if not hasattr(x, "ndim") or x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array ({n}, k), got "
                         f"{getattr(x, 'shape', type(x).__name__)}")
    if x.shape[0] != n:
        raise ValueError(f"{name} must have {n} rows, got shape {x.shape}")
    if x.dtype != dtype:
        raise TypeError(f"{name} has dtype {x.dtype} but the weights are {dtype}; "
                        "convert explicitly with .astype()")
    return backend.array_module(x).ascontiguousarray(x)


def output(out, shape, dtype, like):
    """`out` checked, or a new array of `shape` on the device of `like`."""
    if out is None:
        return backend.array_module(like).empty(shape, dtype=dtype)
    return check_out(out, shape, dtype)


def check_out(out, shape, dtype, name="out"):
    """A caller-provided output array must already be right: it is written, never reallocated."""
    if out.shape != tuple(shape) or out.dtype != dtype:
        raise ValueError(f"{name} must have shape {tuple(shape)} and dtype {dtype}, got "
                         f"{out.shape} {out.dtype}")
    if not out.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous")
    return out


# ----- the common interface --------------------------------------------------------------
class SparseMatrix(ABC):
    """A sparse (n_rows, n_cols) weight: flat `values` plus the index arrays of its format.

    Objects are immutable in their topology: `update` returns a new object, so caches (the
    transposed index of `spmm_t`) stay valid for the object's whole life. `values` may be
    changed in place (an optimizer step) or swapped with `with_values`.
    """

    format = ""              # "csr", "block", "nm" or "masked"
    unit_shape = ()          # element shape of one unit: () for an element, (bs, bs) for a block

    shape: tuple
    values: np.ndarray

    # ----- facts -----------------------------------------------------------------------
    @property
    def dtype(self):
        return self.values.dtype

    @property
    @abstractmethod
    def nnz(self) -> int:
        """Number of stored weights (for Masked: the True entries of the mask)."""

    @property
    def density(self) -> float:
        return self.nnz / (self.shape[0] * self.shape[1])

    @abstractmethod
    def _index_arrays(self) -> list:
        """Every index array held, caches included (for an honest `nbytes`)."""

    @property
    def nbytes(self) -> int:
        return int(self.values.nbytes + sum(a.nbytes for a in self._index_arrays()))

    @property
    def cache_nbytes(self) -> int:
        """Bytes of the caches built on use (the transposed index of the backward pass): part
        of `nbytes`, not of the state a file holds."""
        return int(sum(a.nbytes for a in (getattr(self, "_transposed", None) or ())))

    def __repr__(self):
        return (f"{type(self).__name__}(shape={self.shape}, nnz={self.nnz}, "
                f"density={self.density:.4f}, dtype={self.dtype})")

    # ----- elements --------------------------------------------------------------------
    @abstractmethod
    def coords(self):
        """(rows, cols) int64 of every stored weight, aligned with `values`."""

    @abstractmethod
    def to_dense(self) -> np.ndarray:
        """The (n_rows, n_cols) dense matrix, zeros where nothing is stored."""

    def active(self):
        """(rows, cols, values) of the stored pattern (Masked: only the True mask entries)."""
        rows, cols = self.coords()
        return rows, cols, backend.to_numpy(self.values)

    def mask(self) -> np.ndarray:
        """Dense boolean pattern (for tests and pictures: it is as big as the dense matrix)."""
        rows, cols, _ = self.active()
        out = np.zeros(self.shape, dtype=bool)
        out[rows, cols] = True
        return out

    def with_values(self, values) -> "SparseMatrix":
        """The same topology (index arrays and caches shared) with other `values`."""
        check_values(values, self.values.size)
        if values.dtype != self.dtype:
            raise TypeError(f"values has dtype {values.dtype}, expected {self.dtype}")
        self._device_copies()                    # created before the copy, so it is shared
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        clone.values = values
        return clone

    def _values_or_own(self, values):
        if values is None:
            return self.values
        check_values(values, self.values.size)
        if values.dtype != self.dtype:
            raise TypeError(f"values has dtype {values.dtype}, expected {self.dtype}")
        return values

    # ----- where the arrays live -------------------------------------------------------
    @property
    def device(self) -> str:
        """"cpu" or "cuda": where `values` are (the kernels' index arrays follow them)."""
        return backend.device_of(self.values)

    def to(self, device) -> "SparseMatrix":
        """The same weight with its values on `device` ("cpu" or "cuda"); on "cuda" the
        index arrays the kernels read (and a transposed index) are uploaded now."""
        moved = self.with_values(backend.to_device(self.values, device))
        if device == "cuda":
            moved.upload()
        else:
            self._device_copies().clear()            # frees the GPU copies
        return moved

    def upload(self):
        """Put the kernels' index arrays on the GPU now rather than at the first product."""
        self.kernel_index("cuda")

    @abstractmethod
    def _kernel_arrays(self) -> tuple:
        """The (host) index arrays the product kernels read."""

    def kernel_index(self, device="cpu") -> tuple:
        """`_kernel_arrays()` on `device`: the arrays themselves on the CPU; on a GPU, copies
        made once (a topology never changes) and shared by every `with_values` clone."""
        if device == "cpu":
            return self._kernel_arrays()
        copies = self._device_copies()
        if "index" not in copies:
            copies["index"] = tuple(backend.to_device(a, device) for a in self._kernel_arrays())
        return copies["index"]

    def _device_copies(self) -> dict:
        """GPU copies of index arrays, by name (kept in the instance dict, shared by clones)."""
        if "_on_device" not in self.__dict__:
            self.__dict__["_on_device"] = {}
        return self.__dict__["_on_device"]

    def _same_device(self, values):
        """New values (from `update`, computed on the host) placed where this weight's are."""
        return backend.to_device(values, self.device)

    # ----- construction and conversion ---------------------------------------------------
    @classmethod
    @abstractmethod
    def from_dense(cls, array, density=None, mask=None, **options) -> "SparseMatrix":
        """Keep the largest-|.| units (`density`), the True entries of `mask`, or else the nonzeros."""

    @classmethod
    @abstractmethod
    def _from_coo(cls, rows, cols, values, shape, **options) -> "SparseMatrix":
        """Build from element coordinates (any order, no duplicates), checking the structure."""

    @classmethod
    def from_scipy(cls, matrix, **options) -> "SparseMatrix":
        """From a scipy sparse array or matrix; explicitly stored zeros stay stored."""
        import scipy.sparse
        if not scipy.sparse.issparse(matrix):
            raise TypeError(f"matrix must be a scipy sparse array, got {type(matrix).__name__}")
        if matrix.dtype.type not in FLOAT_DTYPES:
            raise TypeError(f"matrix must have dtype float32 or float64, got {matrix.dtype}")
        coo = matrix.tocoo()
        return cls._from_coo(coo.row.astype(np.int64), coo.col.astype(np.int64),
                             np.array(coo.data), check_shape(tuple(matrix.shape)), **options)

    def to_scipy(self):
        """A scipy `csr_array` (Block gives a `bsr_array`)."""
        return self.to_csr().to_scipy()

    def to_csr(self, constant_fan_in=False):
        from .csr import CSR
        return self if type(self) is CSR and self.constant_fan_in == constant_fan_in else \
            CSR._from_coo(*self.active(), self.shape, constant_fan_in=constant_fan_in)

    def to_block(self, block_size):
        from .block import Block
        return Block._from_coo(*self.active(), self.shape, block_size=block_size)

    def to_nm(self, n, m):
        from .nm import NM
        return NM._from_coo(*self.active(), self.shape, n=n, m=m)

    def to_masked(self, constant_fan_in=False):
        from .masked import Masked
        return Masked._from_coo(*self.active(), self.shape, constant_fan_in=constant_fan_in)

    # ----- products ----------------------------------------------------------------------
    @abstractmethod
    def spmm(self, X, values=None, out=None, bias=None, relu=False):
        """W @ X: X (n_cols, k) -> (n_rows, k). `values` overrides the stored ones (a layer's);
        then + bias[:, None] (bias (n_rows,)) and ReLU when asked, as one step."""

    @abstractmethod
    def spmm_t(self, G, values=None, out=None):
        """W.T @ G: G (n_rows, k) -> (n_cols, k), through a cached transposed index."""

    @abstractmethod
    def sddmm(self, A, B, out=None):
        """(A @ B.T) at the stored positions: A (n_rows, k), B (n_cols, k) -> flat like `values`."""

    def spmm_t_sddmm(self, G, X, values=None):
        """Both gradients of a layer W @ X from its output gradient G (n_rows, k): (W.T @ G,
        sddmm(G, X)). Formats with a fused kernel (CSR) compute them in one pass."""
        return self.spmm_t(G, values), self.sddmm(G, X)

    def __matmul__(self, other):
        if not isinstance(other, np.ndarray):
            return NotImplemented
        if other.ndim == 1:
            return self.spmm(other[:, None])[:, 0]
        return self.spmm(other)

    # ----- topology interface --------------------------------------------------------------
    @property
    def unit_grid(self) -> tuple:
        """Shape of the grid unit coordinates live in (the block grid for Block)."""
        return self.shape

    @property
    @abstractmethod
    def n_units(self) -> int:
        """Number of stored units."""

    @abstractmethod
    def unit_coords(self):
        """(rows, cols) int64 of the stored units, in unit order."""

    def unit_scores(self, elem_scores):
        """Per-unit score from a per-element array aligned with `values` (identity here)."""
        check_values(elem_scores, self.values.size, "elem_scores")
        return elem_scores

    @property
    def n_groups(self) -> int:
        """Number of constraint groups (drops and grows must balance inside each, if > 1)."""
        return 1

    def group_of(self, unit_rows, unit_cols):
        """Constraint group of units at these coordinates (stored or not)."""
        return np.zeros(np.shape(unit_rows), dtype=np.int64)

    def unit_groups(self):
        """Constraint group of each stored unit (all zeros: no constraint)."""
        return self.group_of(*self.unit_coords())

    @abstractmethod
    def update(self, drop, grow_rows, grow_cols, grow_values=None):
        """Drop stored units and grow new ones: returns (new_object, new_from_old).

        drop: bool per stored unit. grow_rows/grow_cols: unit coordinates, unique and empty
        once the drop is done. grow_values: starting values (zeros by default), one per grown
        element: shape (n_grow, *unit_shape). new_from_old (int64, one per new value): the old
        position of each value, or -1 for a grown one. The object itself never changes.
        """


class RowGroups:
    """Constraint groups of the formats that can keep a constant fan-in (CSR, Masked): with
    `constant_fan_in`, each row is a group and every non-empty row holds the same number K of
    weights (a row of 0 is an ablated neuron: no input, no output); without it, the whole
    matrix is one group. Listed before SparseMatrix among the bases."""

    @staticmethod
    def check_flag(constant_fan_in) -> bool:
        """constant_fan_in must be a boolean: 'no' or 0.5 would be true and silently apply."""
        if not isinstance(constant_fan_in, (bool, np.bool_)):
            raise ValueError(f"constant_fan_in must be True or False, got {constant_fan_in!r}")
        return bool(constant_fan_in)

    @staticmethod
    def check_fan_in(row_len, context):
        """Raise unless every non-empty row of `row_len` holds the same count."""
        filled = row_len[row_len > 0]
        if filled.size and (filled != filled[0]).any():
            bad = int(np.flatnonzero((row_len > 0) & (row_len != filled[0]))[0])
            raise ValueError(f"{context}: constant fan-in needs every non-empty row to hold the "
                             f"same number of weights; row {bad} would hold {row_len[bad]}, "
                             f"the first non-empty row {filled[0]}")

    @property
    def n_groups(self):
        return self.shape[0] if self.constant_fan_in else 1

    def group_of(self, unit_rows, unit_cols):
        if self.constant_fan_in:
            return np.asarray(unit_rows, dtype=np.int64)
        return np.zeros(np.shape(unit_rows), dtype=np.int64)
