"""Every registered SpMM kernel against numpy, on seeded random data over the edge cases.

numpy + pytest only (runs under qemu on arm64 too). Kernels this CPU cannot run are reported as
skipped with the ISA they need.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_spmm_close, sparse_weight
from zeroskip import InputError, KernelError, kernels, prune
from zeroskip.formats import BSR, CSR, NM

ALL = kernels.available()
SPARSITIES = (0.0, 0.5, 0.9, 0.99, 1.0)
NS = (1, 3, 8, 17, 128)


def _param(fmt: str) -> list:
    return [
        pytest.param(k, id=k.name, marks=pytest.mark.skipif(not k.runnable, reason=f"CPU lacks {k.isa}"))
        for k in ALL
        if k.format == fmt
    ]


def _ns(k: kernels.KernelInfo) -> list[int]:
    """The issue's N values plus N below, at and just past the kernel's column tile."""
    tn = k.tile[0]
    return sorted({*NS, max(tn - 1, 1), tn, 2 * tn + 1})


def _shapes(k: kernels.KernelInfo, group: int = 1) -> list[tuple[int, int]]:
    """Rows below, at and past the row tile; K == 1 (or one group), odd K."""
    tm = k.tile[1]
    return [(1, group), (max(tm - 1, 1), 5 * group), (tm, 12 * group), (2 * tm + 1, 75 * group), (37, group)]


def _check(k, a, w, rng, n, what):
    x = rng.standard_normal((w.shape[1], n)).astype(np.float32)
    bias = rng.standard_normal(w.shape[0]).astype(np.float32)
    assert_spmm_close(kernels.spmm(a, x, kernel=k.name), w, x, what=f"{what} N={n}")
    assert_spmm_close(kernels.spmm(a, x, bias=bias, kernel=k.name), w, x, bias, what=f"{what} N={n} +bias")


@pytest.mark.parametrize("k", _param("csr"))
def test_csr_kernel(k, rng):
    for n in _ns(k):
        for m, kk in _shapes(k):
            for s in SPARSITIES:
                w = sparse_weight(rng, m, kk, s)
                _check(k, CSR.from_dense(w), w, rng, n, f"{k.name} {m}x{kk} s={s}")


@pytest.mark.parametrize("k", _param("bsr"))
@pytest.mark.parametrize("block", [(1, 1), (4, 1), (1, 4), (8, 1), (16, 1), (3, 5), (2, 2)])
def test_bsr_kernel(k, block, rng):
    for n in _ns(k):
        for m, kk in _shapes(k):
            for s in SPARSITIES:
                w = prune.block_magnitude(rng.standard_normal((m, kk)), s, block)
                _check(k, BSR.from_dense(w, block), w, rng, n, f"{k.name} {block} {m}x{kk} s={s}")


@pytest.mark.parametrize("k", _param("nm"))
@pytest.mark.parametrize("pattern", [(2, 4), (1, 4), (2, 8), (4, 16)])
def test_nm_kernel(k, pattern, rng):
    n_keep, group = pattern
    if k.nm is not None and k.nm != pattern:
        pytest.skip(f"{k.name} takes only {k.nm[0]}:{k.nm[1]}")
    for n in _ns(k):
        for m, kk in _shapes(k, group):
            for s in SPARSITIES:
                # N:M weight with extra zeros: groups with fewer than n nonzeros are kept as zeros.
                w = prune.nm_mask(rng.standard_normal((m, kk)), n_keep, group)
                w[rng.random(w.shape) < s] = 0.0
                _check(k, NM.from_dense(w, n_keep, group), w, rng, n, f"{k.name} {pattern} {m}x{kk} s={s}")


def _stores_column(a, w: np.ndarray, col: int) -> np.ndarray:
    """Rows whose stored entries (explicit zeros included) touch column `col`."""
    if isinstance(a, CSR):
        return w[:, col] != 0
    if isinstance(a, BSR):
        r = a.block[0]
        touched = np.array([w[i : i + r, col].any() for i in range(0, w.shape[0], r)])
        return np.repeat(touched, r)[: w.shape[0]]
    group = col // a.m
    return (a.offsets()[:, group * a.n : (group + 1) * a.n] == col % a.m).any(axis=1)


@pytest.mark.parametrize("k", [p for f in ("csr", "bsr", "nm") for p in _param(f)])
def test_clamp_and_nan(k, rng):
    """Fused Relu/Clip epilogue; a NaN in x reaches exactly the rows that store an entry in its row.

    (Unlike a dense matmul, where 0 * NaN poisons every row, skipped zeros are never multiplied.)
    """
    w = prune.nm_mask(rng.standard_normal((19, 64)))
    a = {"csr": CSR.from_dense, "bsr": lambda v: BSR.from_dense(v, (4, 1)), "nm": NM.from_dense}[k.format](w)
    for n in (1, 5, 33):
        x = rng.standard_normal((64, n)).astype(np.float32)
        y = kernels.spmm(a, x, kernel=k.name, clamp=(-0.5, 0.25))
        ref = np.clip(w.astype(np.float64) @ x, -0.5, 0.25)
        np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)
        x[3, 0] = np.nan
        y = kernels.spmm(a, x, kernel=k.name)
        np.testing.assert_array_equal(np.isnan(y[:, 0]), _stores_column(a, w, 3))
        assert np.isfinite(y[:, 1:]).all()


@pytest.mark.parametrize("k", [p for f in ("csr", "bsr") for p in _param(f)])
def test_wide_indices(k, rng):
    """K > 65536: uint32 indices in the format; long column gaps in the packed 8-bit CSR deltas."""
    kk = 70_003
    w = sparse_weight(rng, 5, kk, 0.999)
    w[2, -1] = 1.5  # a nonzero past 65536 in a row with a long gap before it
    a = CSR.from_dense(w) if k.format == "csr" else BSR.from_dense(w, (1, 1))
    assert a.indices.dtype == np.uint32
    if k.format == "csr":
        assert kernels.pack(a).stored > a.nnz  # gaps over 255 bridged by stored zeros
    for n in (1, 3, 20):
        x = rng.standard_normal((kk, n)).astype(np.float32)
        assert_spmm_close(kernels.spmm(a, x, kernel=k.name), w, x, what=f"{k.name} K={kk} N={n}")


@pytest.mark.parametrize("threads", [1, 2, 3, 7])
def test_threads_give_identical_results(threads, rng):
    """Row splitting never changes a row's arithmetic: any thread count gives the same bits."""
    w = sparse_weight(rng, 301, 700, 0.9)
    w[7] = rng.standard_normal(700)  # one dense row, to unbalance the split by rows
    w[9] = 0.0
    w[9, [0, 600, 699]] = 1.0  # gaps over 255: bridged in the packed CSR
    x = rng.standard_normal((700, 40)).astype(np.float32)
    fmts = [CSR.from_dense(w), BSR.from_dense(w, (4, 1)), NM.from_dense(prune.nm_mask(w))]
    xs = [x, x, x]
    before = kernels.num_threads()
    try:
        kernels.set_num_threads(1)
        serial = [kernels.spmm(a, xx) for a, xx in zip(fmts, xs)]
        kernels.set_num_threads(threads)
        assert kernels.num_threads() == threads
        for a, xx, ys in zip(fmts, xs, serial):
            np.testing.assert_array_equal(kernels.spmm(a, xx), ys)
    finally:
        kernels.set_num_threads(before)


def test_split_is_balanced_by_nonzeros():
    from zeroskip import _C

    counts = np.array([300] * 10 + [0] * 990, dtype=np.int64)
    indptr = np.concatenate([[0], np.cumsum(counts)])
    bounds = _C.balanced_split(indptr, 1, 2)
    assert bounds[0] == 0
    assert bounds[-1] == len(counts)
    cost = [indptr[b] - indptr[a] + (b - a) for a, b in zip(bounds, bounds[1:])]
    # Equal row counts would give thread 0 every nonzero; by nonzeros each gets about half.
    assert max(cost) <= (indptr[-1] + len(counts)) / 2 + counts.max()
    assert 3 <= bounds[1] <= 10


def test_default_kernel_is_fastest_isa_runnable():
    by_name = {k.name: k for k in ALL}
    rank = {"scalar": 0, "neon": 1, "avx2": 1, "avx512": 2}
    for a in (
        CSR.from_dense(np.eye(4, dtype=np.float32)),
        BSR.from_dense(np.eye(4, dtype=np.float32)),
        NM.from_dense(np.eye(4, dtype=np.float32)),
        NM.from_dense(np.eye(8, dtype=np.float32), 1, 8),
    ):
        d = by_name[kernels.default_kernel(a)]
        assert d.runnable
        assert d.supports(a)
        best = max(rank[k.isa] for k in ALL if k.runnable and k.supports(a))
        assert rank[d.isa] == best


class TestBadInput:
    @pytest.fixture
    def a(self):
        return CSR.from_dense(np.eye(6, 4, dtype=np.float32))

    def test_wrong_dtype(self, a):
        with pytest.raises(InputError, match=r"float32.*astype"):
            kernels.spmm(a, np.ones((4, 2)))

    def test_non_contiguous(self, a):
        x = np.ones((4, 6), dtype=np.float32)[:, ::2]
        with pytest.raises(InputError, match="C-contiguous"):
            kernels.spmm(a, x)

    def test_wrong_shape(self, a):
        with pytest.raises(InputError, match=r"shape \(5, 2\), expected \(4, N\)"):
            kernels.spmm(a, np.ones((5, 2), dtype=np.float32))
        with pytest.raises(InputError, match="2-D"):
            kernels.spmm(a, np.ones((4, 2, 1), dtype=np.float32))

    def test_bad_out(self, a):
        x = np.ones((4, 2), dtype=np.float32)
        with pytest.raises(InputError, match="out"):
            kernels.spmm(a, x, out=np.empty((6, 3), dtype=np.float32))
        out = np.empty((6, 2), dtype=np.float32)
        out.flags.writeable = False
        with pytest.raises(InputError, match="read-only"):
            kernels.spmm(a, x, out=out)

    def test_out_aliasing_x(self):
        a = CSR.from_dense(np.eye(4, dtype=np.float32))
        buf = np.ones((4, 4), dtype=np.float32)
        with pytest.raises(InputError, match="share memory"):
            kernels.spmm(a, buf, out=buf)

    def test_bad_bias(self, a):
        with pytest.raises(InputError, match="bias"):
            kernels.spmm(a, np.ones((4, 2), dtype=np.float32), bias=np.ones(5, dtype=np.float32))

    def test_bad_clamp(self, a):
        with pytest.raises(InputError, match="clamp"):
            kernels.spmm(a, np.ones((4, 2), dtype=np.float32), clamp=(1.0, -1.0))

    def test_unknown_kernel(self, a):
        with pytest.raises(KernelError, match="unknown kernel 'nope'"):
            kernels.spmm(a, np.ones((4, 1), dtype=np.float32), kernel="nope")

    def test_kernel_for_other_format(self, a):
        with pytest.raises(KernelError, match="bsr weights, not csr"):
            kernels.spmm(a, np.ones((4, 1), dtype=np.float32), kernel="spmm_bsr_f32_1x1_scalar")

    def test_kernel_for_other_pattern(self):
        simd_nm = [k for k in ALL if k.format == "nm" and k.nm == (2, 4) and k.runnable]
        if not simd_nm:
            pytest.skip("no runnable 2:4 SIMD kernel here")
        a = NM.from_dense(np.eye(8, dtype=np.float32), 1, 8)
        with pytest.raises(KernelError, match="takes 2:4 weights, not 1:8"):
            kernels.spmm(a, np.ones((8, 1), dtype=np.float32), kernel=simd_nm[0].name)

    def test_kernel_this_cpu_lacks(self, a):
        missing = [k for k in ALL if k.format == "csr" and not k.runnable]
        if not missing:
            pytest.skip("this CPU runs every registered CSR kernel")
        with pytest.raises(KernelError, match="which this CPU lacks"):
            kernels.spmm(a, np.ones((4, 1), dtype=np.float32), kernel=missing[0].name)

    def test_not_a_sparse_matrix(self):
        with pytest.raises(InputError, match="CSR, BSR or NM"):
            kernels.spmm(np.eye(3, dtype=np.float32), np.ones((3, 1), dtype=np.float32))

    def test_vector_x(self, a, rng):
        x = rng.standard_normal(4).astype(np.float32)
        y = kernels.spmm(a, x)
        assert y.shape == (6,)
        np.testing.assert_array_equal(y, np.eye(6, 4, dtype=np.float32) @ x)


class TestPackRejectsCorruptWeights:
    """Packing re-checks every index in C++, so a corrupt object never reaches a kernel."""

    def _pack(self, a):
        from zeroskip import FormatError

        with pytest.raises(FormatError) as e:
            kernels.pack(a)
        return str(e.value)

    def test_csr_index_out_of_range(self):
        a = CSR([1.0, 2.0], [0, 9], [0, 1, 2], (2, 4), validate=False)
        assert "outside [0, 4)" in self._pack(a)

    def test_csr_indptr_decreasing(self):
        a = CSR([1.0, 2.0], [0, 1], [0, 2, 1, 2], (3, 4), validate=False)
        assert "decreases at row 1" in self._pack(a)

    def test_csr_indptr_end(self):
        a = CSR([1.0, 2.0], [0, 1], [0, 1, 5], (2, 4), validate=False)
        assert "expected 2" in self._pack(a)

    def test_csr_unsorted(self):
        a = CSR([1.0, 2.0], [3, 1], [0, 2], (1, 4), validate=False)
        assert "strictly increasing" in self._pack(a)

    def test_bsr_block_col_out_of_range(self):
        a = BSR(np.ones((1, 2, 2)), [5], [0, 1], (2, 4), (2, 2), validate=False)
        assert "outside [0, 2)" in self._pack(a)

    def test_bsr_nonzero_in_padding(self):
        a = BSR(np.ones((1, 2, 2)), [1], [0, 1], (2, 3), (2, 2), validate=False)
        assert "outside the matrix" in self._pack(a)

    def test_nm_offset_order(self):
        meta = np.array([[0b0100 | 0b01]], dtype=np.uint8)  # offsets 1, 1
        a = NM(np.ones((1, 2)), meta, (1, 4), validate=False)
        assert "strictly increasing" in self._pack(a)
