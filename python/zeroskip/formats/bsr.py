"""Block sparse rows."""

from __future__ import annotations

import numpy as np

from zeroskip.errors import FormatError
from zeroskip.formats import _common as c


class BSR(c.SparseBase):
    """An M x K matrix cut into r x c blocks; only blocks with a nonzero are stored.

    `values[nblocks, r, c]` (row-major blocks), block-column `indices[nblocks]`, block-row pointers
    `indptr[ceil(M / r) + 1]`. When M or K is not a multiple of the block, the last blocks stick out
    of the matrix and hold zeros there.
    """

    __slots__ = ("__weakref__", "block", "indices", "indptr", "shape", "values")

    def __init__(
        self,
        values: object,
        indices: object,
        indptr: object,
        shape: object,
        block: tuple[int, int],
        *,
        validate: bool = True,
    ):
        self.shape = c.check_shape(shape)
        self.block = _check_block(block)
        kb = -(-self.shape[1] // self.block[1])
        self.values = c.frozen(values, np.float32, "values")
        idx = np.asarray(indices)
        self.indices = c.frozen(idx, c.index_dtype(kb) if idx.dtype.kind in "iu" else idx.dtype, "indices")
        self.indptr = c.frozen(indptr, np.int64 if np.asarray(indptr).dtype.kind in "iu" else None, "indptr")
        if validate:
            self.validate()

    @classmethod
    def from_dense(cls, w: object, block: tuple[int, int] = (4, 1)) -> BSR:
        a = c.as_weight(w)
        r, cb = _check_block(block)
        m, k = a.shape
        mb, kb = -(-m // r), -(-k // cb)
        padded = np.zeros((mb * r, kb * cb), dtype=np.float32)
        padded[:m, :k] = a
        tiles = padded.reshape(mb, r, kb, cb).transpose(0, 2, 1, 3)  # (mb, kb, r, c)
        keep = c.nonzero_mask(np.ascontiguousarray(tiles)).any(axis=(2, 3))
        indptr = np.zeros(mb + 1, dtype=np.int64)
        np.cumsum(keep.sum(axis=1), out=indptr[1:])
        bcols = np.nonzero(keep)[1]
        return cls(tiles[keep], bcols.astype(c.index_dtype(kb)), indptr, (m, k), (r, cb), validate=False)

    def to_dense(self) -> np.ndarray:
        m, k = self.shape
        r, cb = self.block
        mb, kb = -(-m // r), -(-k // cb)
        tiles = np.zeros((mb, kb, r, cb), dtype=np.float32)
        brows = np.repeat(np.arange(mb), np.diff(self.indptr))
        tiles[brows, self.indices.astype(np.int64)] = self.values
        return np.ascontiguousarray(tiles.transpose(0, 2, 1, 3).reshape(mb * r, kb * cb)[:m, :k])

    @property
    def nblocks(self) -> int:
        return int(self.indices.shape[0])

    def _arrays(self) -> tuple[np.ndarray, ...]:
        return (self.values, self.indices, self.indptr)

    def validate(self) -> None:
        """Raise FormatError unless every array is consistent and every index is in range."""
        m, k = self.shape
        r, cb = self.block
        mb, kb = -(-m // r), -(-k // cb)
        c.check_array(self.indices, "indices", "iu", 1)
        if self.values.dtype != np.float32 or self.values.shape != (self.nblocks, r, cb):
            raise FormatError(
                f"values must be float32 of shape (nblocks, {r}, {cb}) = {(self.nblocks, r, cb)}, "
                f"got {self.values.dtype} {self.values.shape}"
            )
        c.check_indptr(self.indptr, mb, self.nblocks)
        c.check_indices(self.indices, self.indptr, kb, "block column index")
        # Entries of blocks that stick out of the matrix must be zero.
        rows = np.repeat(np.arange(mb), np.diff(self.indptr))[:, None] * r + np.arange(r)  # (nblocks, r)
        cols = self.indices.astype(np.int64)[:, None] * cb + np.arange(cb)  # (nblocks, c)
        outside = (rows[:, :, None] >= m) | (cols[:, None, :] >= k)
        bad = np.argwhere(outside & (self.values != 0))
        if bad.size:
            b = int(bad[0][0])
            raise FormatError(f"block {b} has a nonzero outside the {m}x{k} matrix")

    def __repr__(self) -> str:
        return (
            f"BSR(shape={self.shape}, block={self.block}, nblocks={self.nblocks}, density={self.density:.3f})"
        )


def _check_block(block: object) -> tuple[int, int]:
    try:
        r, cb = (int(b) for b in block)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise FormatError(f"block must be two integers (rows, cols), got {block!r}") from None
    if not (1 <= r <= 1024 and 1 <= cb <= 1024):
        raise FormatError(f"block sides must be within [1, 1024], got {(r, cb)}")
    return r, cb
