"""Helpers shared by the formats."""

from __future__ import annotations

import numpy as np

from zeroskip.errors import FormatError


def as_weight(w: object) -> np.ndarray:
    """A 2-D float32 view or copy of `w` (float16/32/64 accepted, others refused)."""
    a = np.asarray(w)
    if a.ndim != 2:
        raise FormatError(f"expected a 2-D weight (M, K), got shape {a.shape}")
    if a.dtype.kind != "f":
        raise FormatError(f"expected a floating-point weight, got dtype {a.dtype}")
    return np.ascontiguousarray(a, dtype=np.float32)


def nonzero_mask(w: np.ndarray) -> np.ndarray:
    """True where the float32 bit pattern is not +0.0 (keeps -0.0 and NaN)."""
    return w.view(np.uint32) != 0


def index_dtype(limit: int) -> type[np.unsignedinteger]:
    """The narrowest unsigned type holding indices in [0, limit)."""
    return np.uint16 if limit <= 1 << 16 else np.uint32


def frozen(a: object, dtype: object, name: str = "array") -> np.ndarray:
    """A private, C-contiguous, read-only copy of `a` in `dtype`; refuses a conversion that would change
    values (integers out of the target's range would wrap; complex values would lose their imaginary
    part) or that numpy cannot make."""
    src = np.asarray(a) if not isinstance(a, np.ndarray) else a
    want = np.dtype(dtype) if dtype is not None else src.dtype
    if src.dtype.kind == "c" or src.dtype.kind not in "biuf":
        raise FormatError(f"{name} has dtype {src.dtype}; expected real numbers")
    if want.kind in "iu" and src.dtype.kind in "iu" and src.size:
        info = np.iinfo(want)
        lo, hi = int(src.min()), int(src.max())
        if lo < info.min or hi > info.max:
            raise FormatError(
                f"{name} holds {lo if lo < info.min else hi}, outside the {want} range it is stored in"
            )
    out = np.array(src, dtype=want, order="C", copy=True)
    out.flags.writeable = False
    return out


def check_shape(shape: object) -> tuple[int, int]:
    try:
        m, k = (int(s) for s in shape)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise FormatError(f"shape must be two integers (M, K), got {shape!r}") from None
    if m < 0 or k < 0:
        raise FormatError(f"shape must not be negative, got {(m, k)}")
    return m, k


def check_array(a: np.ndarray, name: str, kind: str, ndim: int) -> None:
    if a.ndim != ndim:
        raise FormatError(f"{name} must be {ndim}-D, got shape {a.shape}")
    if a.dtype.kind not in kind:
        raise FormatError(
            f"{name} has dtype {a.dtype}, expected {'an integer' if kind != 'f' else 'a float'} type"
        )


def check_indptr(indptr: np.ndarray, rows: int, count: int) -> None:
    """Row pointers: rows + 1 entries, start at 0, never decrease, end at count."""
    check_array(indptr, "indptr", "iu", 1)
    if indptr.shape[0] != rows + 1:
        raise FormatError(f"indptr has {indptr.shape[0]} entries, expected rows + 1 = {rows + 1}")
    p = indptr.astype(np.int64)
    if p[0] != 0:
        raise FormatError(f"indptr[0] is {p[0]}, expected 0")
    bad = np.flatnonzero(np.diff(p) < 0)
    if bad.size:
        i = int(bad[0])
        raise FormatError(f"indptr decreases at row {i} ({p[i]} -> {p[i + 1]})")
    if p[-1] != count:
        raise FormatError(f"indptr[-1] is {p[-1]}, expected the number of stored entries {count}")


def check_indices(indices: np.ndarray, indptr: np.ndarray, limit: int, what: str) -> None:
    """Indices in [0, limit) and strictly increasing within each row (indptr already checked)."""
    idx = indices.astype(np.int64)
    bad = np.flatnonzero((idx < 0) | (idx >= limit))
    if bad.size:
        e = int(bad[0])
        row = int(np.searchsorted(indptr, e, side="right")) - 1
        raise FormatError(f"{what} {idx[e]} at position {e} (row {row}) is outside [0, {limit})")
    rows = np.repeat(np.arange(indptr.shape[0] - 1), np.diff(indptr.astype(np.int64)))
    same_row = rows[1:] == rows[:-1]
    bad = np.flatnonzero(same_row & (np.diff(idx) <= 0))
    if bad.size:
        e = int(bad[0]) + 1
        raise FormatError(f"{what}s are not strictly increasing in row {rows[e]} at position {e}")


class SparseBase:
    """What every format shares: stored-entry count, density and size, from its arrays."""

    __slots__ = ()
    shape: tuple[int, int]
    values: np.ndarray

    def _arrays(self) -> tuple[np.ndarray, ...]:
        raise NotImplementedError

    @property
    def nnz(self) -> int:
        """Stored values (explicit zeros inside blocks or N:M groups included)."""
        return int(self.values.size)

    @property
    def density(self) -> float:
        size = self.shape[0] * self.shape[1]
        return self.nnz / size if size else 0.0

    @property
    def nbytes(self) -> int:
        return int(sum(a.nbytes for a in self._arrays()))
