"""Making dense weights sparse: magnitude pruning (unstructured, block) and N:M masks.

Each function returns a new float32 array with the pruned entries set to 0; ties in magnitude are
broken by position, so results are deterministic.
"""

from __future__ import annotations

import numpy as np

from zeroskip.errors import FormatError
from zeroskip.formats._common import as_weight

__all__ = ["block_magnitude", "magnitude", "nm_mask"]


def _check_sparsity(sparsity: float) -> float:
    s = float(sparsity)
    if not 0.0 <= s <= 1.0:
        raise FormatError(f"sparsity must be within [0, 1], got {sparsity}")
    return s


def _zero_smallest(scores: np.ndarray, count: int) -> np.ndarray:
    """Boolean keep-mask over a flat score array that drops the `count` smallest scores."""
    keep = np.ones(scores.size, dtype=bool)
    if count > 0:
        keep[np.argsort(scores, kind="stable")[:count]] = False
    return keep


def magnitude(w: object, sparsity: float) -> np.ndarray:
    """Zero the round(sparsity * size) entries of smallest |w|."""
    a = as_weight(w)
    count = round(_check_sparsity(sparsity) * a.size)
    keep = _zero_smallest(np.abs(a).ravel(), count).reshape(a.shape)
    return np.where(keep, a, np.float32(0))


def block_magnitude(w: object, sparsity: float, block: tuple[int, int] = (4, 1)) -> np.ndarray:
    """Zero whole r x c blocks of smallest L2 norm, round(sparsity * blocks) of them."""
    a = as_weight(w)
    r, c = (int(b) for b in block)
    if r < 1 or c < 1:
        raise FormatError(f"block sides must be positive, got {block}")
    m, k = a.shape
    mb, kb = -(-m // r), -(-k // c)
    padded = np.zeros((mb * r, kb * c), dtype=np.float32)
    padded[:m, :k] = a
    norms = np.sqrt((padded.reshape(mb, r, kb, c) ** 2).sum(axis=(1, 3)))
    count = round(_check_sparsity(sparsity) * norms.size)
    keep = _zero_smallest(norms.ravel(), count).reshape(mb, kb)
    mask = np.repeat(np.repeat(keep, r, axis=0), c, axis=1)[:m, :k]
    return np.where(mask, a, np.float32(0))


def nm_mask(w: object, n: int = 2, m: int = 4) -> np.ndarray:
    """Keep the n largest-|w| entries of every group of m consecutive columns of each row."""
    a = as_weight(w)
    rows, k = a.shape
    if not 1 <= n < m:
        raise FormatError(f"N:M pattern needs 1 <= n < m, got {n}:{m}")
    if k % m:
        raise FormatError(f"K={k} is not a multiple of m={m}")
    groups = np.abs(a).reshape(rows, k // m, m)
    drop = np.argsort(groups, axis=2, kind="stable")[:, :, : m - n]
    keep = np.ones(groups.shape, dtype=bool)
    np.put_along_axis(keep, drop, False, axis=2)
    return np.where(keep.reshape(rows, k), a, np.float32(0))
