"""N:M structured sparsity along the reduction dimension (2:4 for sparse tensor cores)."""

from __future__ import annotations

import numpy as np

from zeroskip.errors import FormatError
from zeroskip.formats import _common as c


class NM(c.SparseBase):
    """An M x K matrix where each group of `m` consecutive columns of a row keeps `n` values.

    `values[M, K / m * n]` are the kept values in order; `meta[M, stride]` holds each kept value's
    offset inside its group, `bits` bits per offset (2 for m <= 4), packed little-endian (first
    offset in the lowest bits of byte 0). Offsets are strictly increasing inside a group. Groups with
    fewer than n nonzeros keep zeros at the lowest free offsets.
    """

    __slots__ = ("__weakref__", "m", "meta", "n", "shape", "values")

    def __init__(
        self, values: object, meta: object, shape: object, n: int = 2, m: int = 4, *, validate: bool = True
    ):
        self.shape = c.check_shape(shape)
        self.n, self.m = _check_pattern(n, m)
        self.values = c.frozen(values, np.float32, "values")
        self.meta = c.frozen(meta, np.uint8 if np.asarray(meta).dtype.kind in "iu" else None, "meta")
        if validate:
            self.validate()

    @property
    def bits(self) -> int:
        return _bits(self.m)

    @classmethod
    def from_dense(cls, w: object, n: int = 2, m: int = 4) -> NM:
        a = c.as_weight(w)
        n, m = _check_pattern(n, m)
        rows, k = a.shape
        if k % m:
            raise FormatError(f"K={k} is not a multiple of the group size m={m}; {n}:{m} needs whole groups")
        groups = a.reshape(rows, k // m, m)
        nz = c.nonzero_mask(groups)
        counts = nz.sum(axis=2)
        bad = np.argwhere(counts > n)
        if bad.size:
            i, g = (int(v) for v in bad[0])
            raise FormatError(
                f"weight is not {n}:{m} sparse: row {i}, columns {g * m}..{g * m + m - 1} hold "
                f"{int(counts[i, g])} nonzeros (at most {n} allowed); prune it with zeroskip.prune.nm_mask"
            )
        # Nonzero positions first, then free (zero) ones, each by offset; keep n, in offset order.
        order = np.argsort(np.where(nz, 0, m) + np.arange(m), axis=2, kind="stable")[:, :, :n]
        offsets = np.sort(order, axis=2).astype(np.uint8)
        kept = k // m * n
        values = np.take_along_axis(groups, offsets.astype(np.intp), axis=2).reshape(rows, kept)
        return cls(
            values, pack_offsets(offsets.reshape(rows, kept), _bits(m)), (rows, k), n, m, validate=False
        )

    def offsets(self) -> np.ndarray:
        """In-group offset of every kept value, shape (M, K / m * n), uint8."""
        return unpack_offsets(self.meta, self.bits, self.values.shape[1])

    def to_dense(self) -> np.ndarray:
        rows, k = self.shape
        groups = np.zeros((rows, k // self.m, self.m), dtype=np.float32)
        off = self.offsets().reshape(rows, k // self.m, self.n).astype(np.intp)
        np.put_along_axis(groups, off, self.values.reshape(rows, k // self.m, self.n), axis=2)
        return groups.reshape(rows, k)

    def _arrays(self) -> tuple[np.ndarray, ...]:
        return (self.values, self.meta)

    def validate(self) -> None:
        """Raise FormatError unless the arrays fit the shape and every offset is valid."""
        rows, k = self.shape
        if k % self.m:
            raise FormatError(f"K={k} is not a multiple of the group size m={self.m}")
        kept = k // self.m * self.n
        if self.values.dtype != np.float32 or self.values.shape != (rows, kept):
            raise FormatError(
                f"values must be float32 of shape {(rows, kept)}, got {self.values.dtype} {self.values.shape}"
            )
        stride = -(-kept * self.bits // 8)
        if (
            self.meta.dtype != np.uint8
            or self.meta.ndim != 2
            or self.meta.shape[0] != rows
            or self.meta.shape[1] < stride
        ):
            raise FormatError(
                f"meta must be uint8 of shape ({rows}, >= {stride}), got {self.meta.dtype} {self.meta.shape}"
            )
        off = self.offsets().reshape(rows, k // self.m, self.n).astype(np.int64)
        bad = np.argwhere(off >= self.m)
        if bad.size:
            i, g, _ = (int(v) for v in bad[0])
            raise FormatError(f"offset in row {i}, group {g} is outside [0, {self.m})")
        bad = np.argwhere(np.diff(off, axis=2) <= 0)
        if bad.size:
            i, g, _ = (int(v) for v in bad[0])
            raise FormatError(f"offsets in row {i}, group {g} are not strictly increasing")

    def __repr__(self) -> str:
        return f"NM(shape={self.shape}, pattern={self.n}:{self.m}, density={self.density:.3f})"


def _check_pattern(n: object, m: object) -> tuple[int, int]:
    n, m = int(n), int(m)  # type: ignore[call-overload]
    if not 1 <= n < m <= 256:
        raise FormatError(f"N:M pattern needs 1 <= n < m <= 256, got {n}:{m}")
    return n, m


def _bits(m: int) -> int:
    return 2 if m <= 4 else 4 if m <= 16 else 8


def pack_offsets(offsets: np.ndarray, bits: int) -> np.ndarray:
    """Pack (rows, count) offsets into (rows, ceil(count * bits / 8)) bytes, little-endian."""
    rows, count = offsets.shape
    per = 8 // bits
    nbytes = -(-count // per)
    padded = np.zeros((rows, nbytes * per), dtype=np.uint8)
    padded[:, :count] = offsets
    shifts = (np.arange(per, dtype=np.uint8) * bits).astype(np.uint8)
    return np.bitwise_or.reduce(padded.reshape(rows, nbytes, per) << shifts, axis=2).astype(np.uint8)


def unpack_offsets(meta: np.ndarray, bits: int, count: int) -> np.ndarray:
    per = 8 // bits
    shifts = (np.arange(per, dtype=np.uint8) * bits).astype(np.uint8)
    mask = np.uint8((1 << bits) - 1)
    return ((meta[:, :, None] >> shifts) & mask).reshape(meta.shape[0], meta.shape[1] * per)[:, :count]
