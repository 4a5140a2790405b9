"""Sparse formats and pruning helpers against numpy (numpy + pytest only)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import sparse_weight
from zeroskip import FormatError, prune
from zeroskip.formats import BSR, CSR, NM

SHAPES = [(0, 0), (0, 5), (3, 0), (1, 1), (7, 13), (64, 40)]
BLOCKS = [(1, 1), (4, 1), (1, 4), (8, 1), (16, 1), (3, 5)]


def _special(rng: np.random.Generator, m: int, k: int, sparsity: float) -> np.ndarray:
    """Sparse weight that also holds -0.0, NaN, inf and a denormal where the shape allows."""
    w = sparse_weight(rng, m, k, sparsity)
    flat = w.ravel()
    for i, v in enumerate([-0.0, np.nan, np.inf, -np.inf, 1e-45]):
        if i < flat.size:
            flat[i] = v
    return w


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.9, 1.0])
def test_csr_round_trip_bit_exact(shape, sparsity, rng):
    w = _special(rng, *shape, sparsity)
    a = CSR.from_dense(w)
    np.testing.assert_array_equal(_bits(a.to_dense()), _bits(w))
    stored = int((_bits(w) != 0).sum())
    assert a.shape == shape
    assert a.nnz == stored
    assert a.density == (stored / w.size if w.size else 0.0)
    assert a.nbytes == a.values.nbytes + a.indices.nbytes + a.indptr.nbytes
    a.validate()


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("block", BLOCKS)
def test_bsr_round_trip_bit_exact(shape, block, rng):
    w = _special(rng, *shape, 0.9)
    a = BSR.from_dense(w, block)
    np.testing.assert_array_equal(_bits(a.to_dense()), _bits(w))
    assert a.values.shape == (a.nblocks, *block)
    assert a.nnz == a.nblocks * block[0] * block[1]
    a.validate()


def test_bsr_keeps_only_nonzero_blocks():
    w = np.zeros((8, 6), dtype=np.float32)
    w[0, 0] = 1.0
    w[5, 4] = 2.0
    a = BSR.from_dense(w, (4, 2))
    assert a.nblocks == 2
    np.testing.assert_array_equal(a.indptr, [0, 1, 2])
    np.testing.assert_array_equal(a.indices, [0, 2])


@pytest.mark.parametrize("pattern", [(2, 4), (1, 4), (2, 8), (4, 16), (16, 32)])
@pytest.mark.parametrize("rows", [0, 1, 9])
def test_nm_round_trip_bit_exact(pattern, rows, rng):
    n, m = pattern
    w = prune.nm_mask(rng.standard_normal((rows, 4 * m)), n, m)
    w[rng.random(w.shape) < 0.3] = 0.0  # groups with fewer than n nonzeros
    if w.size:
        kept = np.flatnonzero(w[0])  # special values only where the pattern allows a value
        w[0, kept[:2]] = [-0.0, np.nan][: len(kept[:2])]
    a = NM.from_dense(w, n, m)
    np.testing.assert_array_equal(_bits(a.to_dense()), _bits(w))
    assert a.values.shape == (rows, 4 * n)
    assert a.meta.shape == (rows, -(-4 * n * a.bits // 8))
    assert a.nnz == rows * 4 * n
    assert a.density == (n / m if rows else 0.0)
    a.validate()


def test_nm_meta_layout():
    """2-bit offsets, little-endian: the layout the SIMD kernels and the GPU metadata packer expect."""
    w = np.zeros((1, 8), dtype=np.float32)
    w[0, [1, 3, 4, 6]] = [1, 2, 3, 4]
    a = NM.from_dense(w)
    assert a.bits == 2
    assert a.meta[0, 0] == (1 | 3 << 2 | 0 << 4 | 2 << 6)
    np.testing.assert_array_equal(a.values, [[1, 2, 3, 4]])


def test_nm_rejects_non_nm_weight_naming_the_group():
    w = np.zeros((3, 8), dtype=np.float32)
    w[2, 4:7] = 1.0
    with pytest.raises(FormatError, match=r"row 2, columns 4\.\.7 hold 3 nonzeros \(at most 2"):
        NM.from_dense(w)


def test_nm_rejects_partial_group():
    with pytest.raises(FormatError, match="K=6 is not a multiple"):
        NM.from_dense(np.zeros((2, 6), dtype=np.float32))


@pytest.mark.parametrize(("k", "dtype"), [(1, np.uint16), (65536, np.uint16), (65537, np.uint32)])
def test_narrowest_index_type(k, dtype):
    w = np.zeros((2, k), dtype=np.float32)
    w[1, k - 1] = 1.0
    assert CSR.from_dense(w).indices.dtype == dtype
    assert BSR.from_dense(w, (1, 1)).indices.dtype == dtype


def test_arrays_are_private_and_read_only(rng):
    w = sparse_weight(rng, 4, 4, 0.5)
    a = CSR.from_dense(w)
    with pytest.raises(ValueError, match="read-only"):
        a.values[0] = 1.0
    vals = np.array([1.0], dtype=np.float32)
    b = CSR(vals, [0], [0, 1], (1, 1))
    vals[0] = 5.0
    assert b.values[0] == 1.0


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda: CSR([1.0], [4], [0, 1], (1, 4), validate=False),
            r"4 at position 0 \(row 0\) is outside \[0, 4\)",
        ),
        (lambda: CSR([1.0], [-1], [0, 1], (1, 4), validate=False), "outside"),
        (lambda: CSR([1.0, 1.0], [2, 2], [0, 2], (1, 4), validate=False), "not strictly increasing in row 0"),
        (lambda: CSR([1.0], [0], [1, 1], (1, 4), validate=False), r"indptr\[0\] is 1"),
        (lambda: CSR([1.0, 1.0], [0, 1], [0, 2, 1, 2], (3, 4), validate=False), "decreases at row 1"),
        (lambda: CSR([1.0], [0], [0, 1, 1], (1, 4), validate=False), "expected rows \\+ 1 = 2"),
        (
            lambda: CSR([1.0, 2.0], [0], [0, 2], (1, 4), validate=False),
            "indices has 1 entries but values has 2",
        ),
        (lambda: CSR([1.0], [0], [0, 3], (1, 4), validate=False), r"indptr\[-1\] is 3"),
        (lambda: CSR([1.0], [0.5], [0, 1], (1, 4), validate=False), "indices has dtype float64"),
        (lambda: BSR(np.ones((1, 2, 2)), [3], [0, 1], (2, 4), (2, 2), validate=False), "outside \\[0, 2\\)"),
        (
            lambda: BSR(np.ones((1, 2, 1)), [0], [0, 1], (2, 4), (2, 2), validate=False),
            "values must be float32 of shape",
        ),
        (
            lambda: BSR(np.ones((1, 2, 2)), [1], [0, 1], (2, 3), (2, 2), validate=False),
            "nonzero outside the 2x3",
        ),
        (lambda: NM(np.ones((1, 2)), [[0b0101]], (1, 4), validate=False), "not strictly increasing"),
        (lambda: NM(np.ones((1, 4)), [[0b01001100]], (1, 6), 2, 3, validate=False), r"outside \[0, 3\)"),
        (lambda: NM(np.ones((1, 3)), [[0b1000]], (1, 4), validate=False), "values must be float32 of shape"),
        (
            lambda: NM(np.ones((1, 4)), np.zeros((1, 0), np.uint8), (1, 8), validate=False),
            "meta must be uint8 of shape",
        ),
        (lambda: CSR([], [], [0], (1, 2, 3)), "shape must be two integers"),
        (lambda: BSR.from_dense(np.ones((2, 2)), (0, 1)), "block sides"),
        (lambda: NM.from_dense(np.ones((2, 4)), 4, 4), "1 <= n < m"),
        (lambda: CSR.from_dense(np.ones((2, 2), dtype=np.int32)), "floating-point"),
        (lambda: CSR.from_dense(np.ones(3)), "2-D"),
    ],
)
def test_validate_names_the_problem(make, message):
    with pytest.raises(FormatError, match=message):
        make().validate()


def test_magnitude_prunes_smallest(rng):
    w = rng.standard_normal((50, 40)).astype(np.float32)
    for s in (0.0, 0.5, 0.9, 1.0):
        p = prune.magnitude(w, s)
        zeros = p == 0
        assert zeros.sum() == round(s * w.size)
        if 0 < s < 1:
            assert np.abs(w[zeros]).max() <= np.abs(w[~zeros]).min()
        np.testing.assert_array_equal(p[~zeros], w[~zeros])


def test_block_magnitude_zeroes_whole_blocks(rng):
    w = rng.standard_normal((18, 10)).astype(np.float32)
    p = prune.block_magnitude(w, 0.75, (4, 1))
    blocks = np.zeros((20, 10), dtype=np.float32)
    blocks[:18] = p
    nonzero_blocks = (blocks.reshape(5, 4, 10) != 0).any(axis=1)
    assert nonzero_blocks.sum() == 50 - round(0.75 * 50)
    a = BSR.from_dense(p, (4, 1))
    assert a.nblocks == nonzero_blocks.sum()


def test_nm_mask_keeps_largest(rng):
    w = rng.standard_normal((6, 16)).astype(np.float32)
    p = prune.nm_mask(w, 2, 4)
    groups_w, groups_p = np.abs(w).reshape(6, 4, 4), p.reshape(6, 4, 4)
    assert ((groups_p != 0).sum(axis=2) == 2).all()
    kept_min = np.where(groups_p != 0, groups_w, np.inf).min(axis=2)
    dropped_max = np.where(groups_p == 0, groups_w, -np.inf).max(axis=2)
    assert (kept_min >= dropped_max).all()
    NM.from_dense(p)


def test_prune_rejects_bad_arguments():
    with pytest.raises(FormatError, match="sparsity"):
        prune.magnitude(np.ones((2, 2)), 1.5)
    with pytest.raises(FormatError, match="multiple"):
        prune.nm_mask(np.ones((2, 6)))
