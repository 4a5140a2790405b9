"""Compressed sparse rows."""

from __future__ import annotations

import numpy as np

from zeroskip.errors import FormatError
from zeroskip.formats import _common as c


class CSR(c.SparseBase):
    """An M x K matrix as `values[nnz]`, column `indices[nnz]` and row pointers `indptr[M + 1]`.

    Column indices are uint16 when K <= 65536 (else uint32) and strictly increasing within a row.
    """

    __slots__ = ("__weakref__", "indices", "indptr", "shape", "values")

    def __init__(
        self, values: object, indices: object, indptr: object, shape: object, *, validate: bool = True
    ):
        self.shape = c.check_shape(shape)
        self.values = c.frozen(values, np.float32, "values")
        idx = np.asarray(indices)
        self.indices = c.frozen(
            idx, c.index_dtype(self.shape[1]) if idx.dtype.kind in "iu" else idx.dtype, "indices"
        )
        self.indptr = c.frozen(indptr, np.int64 if np.asarray(indptr).dtype.kind in "iu" else None, "indptr")
        if validate:
            self.validate()

    @classmethod
    def from_dense(cls, w: object) -> CSR:
        a = c.as_weight(w)
        mask = c.nonzero_mask(a)
        indptr = np.zeros(a.shape[0] + 1, dtype=np.int64)
        np.cumsum(mask.sum(axis=1), out=indptr[1:])
        cols = np.nonzero(mask)[1]
        return cls(a[mask], cols.astype(c.index_dtype(a.shape[1])), indptr, a.shape, validate=False)

    def to_dense(self) -> np.ndarray:
        m, _ = self.shape
        out = np.zeros(self.shape, dtype=np.float32)
        rows = np.repeat(np.arange(m), np.diff(self.indptr))
        out[rows, self.indices.astype(np.int64)] = self.values
        return out

    def _arrays(self) -> tuple[np.ndarray, ...]:
        return (self.values, self.indices, self.indptr)

    def validate(self) -> None:
        """Raise FormatError unless every array is consistent and every index is in range."""
        m, k = self.shape
        c.check_array(self.values, "values", "f", 1)
        c.check_array(self.indices, "indices", "iu", 1)
        if self.values.dtype != np.float32:
            raise FormatError(f"values must be float32, got {self.values.dtype}")
        if self.indices.shape != self.values.shape:
            raise FormatError(
                f"indices has {self.indices.shape[0]} entries but values has {self.values.shape[0]}"
            )
        c.check_indptr(self.indptr, m, self.nnz)
        c.check_indices(self.indices, self.indptr, k, "column index")

    def __repr__(self) -> str:
        return (
            f"CSR(shape={self.shape}, nnz={self.nnz}, density={self.density:.3f}, index={self.indices.dtype})"
        )
