"""Making dense weights sparse, one weight at a time.

Weights are (outputs x reduction) matrices; a pattern says which entries may be zeroed together:

- "unstructured": any entries, `sparsity` of them;
- "N:M" (e.g. "2:4"): in every group of M consecutive reduction entries of a row, M-N are zeroed
  (`sparsity` is ignored);
- "RxC" block (e.g. "4x1", also written "block4x1"): whole R x C blocks, `sparsity` of them.

Methods:

- magnitude: drop the smallest |w| (`magnitude`, `block_magnitude`, `nm_mask`, or `select` with any
  pattern);
- Wanda (Sun et al. 2023): drop the smallest |w_ij| * ||x_j||, the input column norms from calibration
  data, compared within each output row (`wanda`);
- SparseGPT (Frantar & Alistarh 2023): choose the mask from w^2 / [H^-1]_jj^2 and update the remaining
  weights of the row to compensate, column by column (an OBS step), with H = X^T X of the layer's
  calibration inputs (`sparsegpt`; unstructured and N:M).

Each function returns a new float32 array with the pruned entries set to 0; ties are broken by position,
so results are deterministic. Only numpy is needed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from zeroskip.errors import FormatError
from zeroskip.formats._common import as_weight

__all__ = [
    "Pattern",
    "block_magnitude",
    "magnitude",
    "nm_mask",
    "parse_pattern",
    "select",
    "sparsegpt",
    "wanda",
]


@dataclass(frozen=True)
class Pattern:
    kind: str  # "unstructured" | "nm" | "block"
    a: int = 0  # N (nm) or R (block)
    b: int = 0  # M (nm) or C (block)

    def __str__(self) -> str:
        return {"unstructured": "unstructured", "nm": f"{self.a}:{self.b}"}.get(
            self.kind, f"{self.a}x{self.b}"
        )


def parse_pattern(text: str | Pattern) -> Pattern:
    """ "unstructured", "N:M" or "[block]RxC" -> Pattern."""
    if isinstance(text, Pattern):
        return text
    t = str(text).strip().lower()
    if t == "unstructured":
        return Pattern("unstructured")
    m = re.fullmatch(r"(\d+):(\d+)", t)
    if m:
        n, mm = int(m.group(1)), int(m.group(2))
        if not 1 <= n < mm:
            raise FormatError(f"N:M pattern needs 1 <= N < M, got {t}")
        return Pattern("nm", n, mm)
    m = re.fullmatch(r"(?:block)?(\d+)x(\d+)", t)
    if m:
        r, c = int(m.group(1)), int(m.group(2))
        if r < 1 or c < 1:
            raise FormatError(f"block sides must be positive, got {t}")
        return Pattern("block", r, c)
    raise FormatError(f"unknown pattern {text!r}: use unstructured, N:M (e.g. 2:4) or RxC (e.g. 4x1)")


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


def _nm_keep(scores: np.ndarray, n: int, m: int) -> np.ndarray:
    rows, k = scores.shape
    if k % m:
        raise FormatError(f"K={k} is not a multiple of m={m}")
    groups = scores.reshape(rows, k // m, m)
    drop = np.argsort(groups, axis=2, kind="stable")[:, :, : m - n]
    keep = np.ones(groups.shape, dtype=bool)
    np.put_along_axis(keep, drop, False, axis=2)
    return keep.reshape(rows, k)


def keep_mask(
    scores: np.ndarray, pattern: str | Pattern, sparsity: float, per_row: bool = False
) -> np.ndarray:
    """Which entries of a (rows x k) score matrix to keep under `pattern`: the lowest scores go.
    `per_row` compares unstructured scores within each row (else over the whole matrix); blocks are
    scored by the L2 norm of their entries' scores."""
    p = parse_pattern(pattern)
    s = _check_sparsity(sparsity)
    scores = np.asarray(scores, dtype=np.float64)
    rows, k = scores.shape
    if p.kind == "nm":
        return _nm_keep(scores, p.a, p.b)
    if p.kind == "unstructured":
        if per_row:
            count = round(s * k)
            keep = np.ones((rows, k), dtype=bool)
            if count:
                np.put_along_axis(keep, np.argsort(scores, axis=1, kind="stable")[:, :count], False, axis=1)
            return keep
        return _zero_smallest(scores.ravel(), round(s * scores.size)).reshape(rows, k)
    r, c = p.a, p.b
    mb, kb = -(-rows // r), -(-k // c)
    padded = np.zeros((mb * r, kb * c))
    padded[:rows, :k] = scores
    norms = np.sqrt((padded.reshape(mb, r, kb, c) ** 2).sum(axis=(1, 3)))
    keep = _zero_smallest(norms.ravel(), round(s * norms.size)).reshape(mb, kb)
    return np.repeat(np.repeat(keep, r, axis=0), c, axis=1)[:rows, :k]


def select(w: object, pattern: str | Pattern, sparsity: float = 0.0) -> np.ndarray:
    """Magnitude pruning of `w` with any pattern."""
    a = as_weight(w)
    return np.where(keep_mask(np.abs(a), pattern, sparsity), a, np.float32(0))


def magnitude(w: object, sparsity: float) -> np.ndarray:
    """Zero the round(sparsity * size) entries of smallest |w|."""
    return select(w, Pattern("unstructured"), sparsity)


def block_magnitude(w: object, sparsity: float, block: tuple[int, int] = (4, 1)) -> np.ndarray:
    """Zero whole r x c blocks of smallest L2 norm, round(sparsity * blocks) of them."""
    r, c = (int(b) for b in block)
    if r < 1 or c < 1:
        raise FormatError(f"block sides must be positive, got {block}")
    return select(w, Pattern("block", r, c), sparsity)


def nm_mask(w: object, n: int = 2, m: int = 4) -> np.ndarray:
    """Keep the n largest-|w| entries of every group of m consecutive columns of each row."""
    if not 1 <= n < m:
        raise FormatError(f"N:M pattern needs 1 <= n < m, got {n}:{m}")
    return select(w, Pattern("nm", n, m))


def wanda(w: object, input_norms: object, pattern: str | Pattern, sparsity: float = 0.0) -> np.ndarray:
    """Wanda: scores |w_ij| * ||x_j||_2 (`input_norms`: one L2 norm per reduction column over the
    calibration rows), compared within each output row (blocks: over the whole matrix)."""
    a = as_weight(w)
    norms = np.asarray(input_norms, dtype=np.float64).reshape(-1)
    if norms.size != a.shape[1]:
        raise FormatError(f"{norms.size} input norms for a weight with {a.shape[1]} reduction columns")
    scores = np.abs(a) * norms[None, :]
    return np.where(keep_mask(scores, pattern, sparsity, per_row=True), a, np.float32(0))


def _inverse_cholesky(h: np.ndarray, damp: float) -> np.ndarray:
    """Upper factor U with U^T U = (H + damp * mean(diag H) I)^-1; more damping if H is not PD."""
    k = h.shape[0]
    mean_diag = float(np.mean(np.diag(h))) or 1.0
    for attempt in range(6):
        hd = h + (damp * 10**attempt) * mean_diag * np.eye(k)
        try:
            inv = np.linalg.inv(np.linalg.cholesky(hd))  # L^-1, with H = L L^T
            return np.linalg.cholesky(inv.T @ inv).T
        except np.linalg.LinAlgError:
            continue
    raise FormatError("the calibration Hessian is not positive definite even with heavy damping")


def sparsegpt(
    w: object,
    hessian: object,
    pattern: str | Pattern,
    sparsity: float = 0.0,
    *,
    block: int = 128,
    damp: float = 0.01,
    cross: object | None = None,
    refit: int = 20,
) -> np.ndarray:
    """SparseGPT on one (outputs x reduction) weight with H = X^T X of its calibration inputs (k x k).

    Columns are processed left to right in blocks of `block`: within a block the mask is chosen from
    w^2 / [H^-1]_jj^2 (unstructured: the block's `sparsity` lowest; N:M: per group of M as it is
    reached), each pruned column's error is spread over the columns to its right through the inverse
    Hessian's Cholesky factor, and the block's accumulated error updates the columns after it.

    `cross` (k x k, X'^T X) corrects for the layers pruned before this one: H is then X'^T X' of the
    inputs the pruned model gives this layer, X the dense model's, and the weight is first moved to the
    one that best maps X' to the dense output X w (ridge towards w, with the same damping), so the
    pruned layer also makes up for the error it receives.

    `refit` > 0: once the mask is fixed, the kept weights of every row are solved for exactly (least
    squares on the calibration inputs, same damping) by that many conjugate-gradient steps at most,
    starting from SparseGPT's own update, which only corrects the columns to the right of each pruned
    one."""
    p = parse_pattern(pattern)
    if p.kind == "block":
        raise FormatError("SparseGPT prunes unstructured or N:M patterns; use wanda or magnitude for blocks")
    s = _check_sparsity(sparsity)
    wt = as_weight(w).astype(np.float64)
    k = wt.shape[1]
    h = np.array(hessian, dtype=np.float64)
    if h.shape != (k, k):
        raise FormatError(f"Hessian of shape {h.shape} for a weight with {k} reduction columns")
    if p.kind == "nm":
        if k % p.b:
            raise FormatError(f"K={k} is not a multiple of m={p.b}")
        block = max(p.b, block - block % p.b)
    dead = np.diag(h) == 0
    h[dead, dead] = 1.0
    wt[:, dead] = 0.0
    lam = damp * (float(np.mean(np.diag(h))) or 1.0)
    if cross is not None:
        c = np.asarray(cross, dtype=np.float64)
        if c.shape != (k, k):
            raise FormatError(f"cross term of shape {c.shape} for a weight with {k} reduction columns")
        wt = np.linalg.solve(h + lam * np.eye(k), c @ wt.T + lam * wt.T).T
        wt[:, dead] = 0.0
    target = wt.copy()
    u = _inverse_cholesky(h, damp)
    for i1 in range(0, k, block):
        i2 = min(i1 + block, k)
        w1 = wt[:, i1:i2].copy()
        err1 = np.zeros_like(w1)
        u1 = u[i1:i2, i1:i2]
        d1 = np.diag(u1)
        prune = np.zeros(w1.shape, dtype=bool)
        if p.kind == "unstructured":
            prune = ~keep_mask(w1**2 / d1[None, :] ** 2, p, s)
        for i in range(i2 - i1):
            if p.kind == "nm" and i % p.b == 0:
                prune[:, i : i + p.b] = ~_nm_keep(
                    w1[:, i : i + p.b] ** 2 / d1[None, i : i + p.b] ** 2, p.a, p.b
                )
            col = w1[:, i]
            q = np.where(prune[:, i], 0.0, col)
            e = (col - q) / d1[i]
            w1[:, i:] -= np.outer(e, u1[i, i:])
            w1[:, i] = q
            err1[:, i] = e
        wt[:, i1:i2] = w1
        wt[:, i2:] -= err1 @ u[i1:i2, i2:]
    if refit > 0:
        wt = _refit(wt, target, h + lam * np.eye(k), refit)
    return wt.astype(np.float32)


def _refit(x: np.ndarray, target: np.ndarray, a: np.ndarray, steps: int, tol: float = 1e-6) -> np.ndarray:
    """Per row r: minimise (x_r - t_r)^T A (x_r - t_r) over the entries nonzero in x_r (A symmetric
    positive definite), by conjugate gradients on all rows at once, starting from x."""
    mask = x != 0
    x = x.copy()
    r = mask * ((target - x) @ a)
    p = r.copy()
    rs = (r * r).sum(axis=1)
    stop = tol**2 * max(float(rs.max()), 1e-300)
    for _ in range(steps):
        if float(rs.max()) <= stop:
            break
        ap = mask * (p @ a)
        alpha = rs / np.maximum((p * ap).sum(axis=1), 1e-300)
        x += alpha[:, None] * p
        r -= alpha[:, None] * ap
        rs_new = (r * r).sum(axis=1)
        p = r + (rs_new / np.maximum(rs, 1e-300))[:, None] * p
        rs = rs_new
    return np.where(mask, x, 0.0)
