"""Every registered SpMM kernel against numpy, on seeded random data over the edge cases; then the
Linear (x @ W.T) and Conv2d (im2col) entry points over every kernel.

numpy + pytest only (runs under qemu on arm64 too). Kernels this CPU cannot run are reported as
skipped with the ISA they need.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from conftest import assert_spmm_close, conv_ref, reference_spmm, sparse_weight
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


# ---------------------------------------------------------------- Linear and Conv2d entry points

LINEAR_MS = (1, 2, 3, 8, 17, 64, 128)
# Output features x input features; K == 1, odd N and K (multiples of 4 for 2:4).
LINEAR_SHAPES = {"any": [(5, 37), (37, 1), (70, 131)], "nm": [(5, 36), (37, 4), (70, 132)]}
BSR_BLOCKS = [(4, 1), (1, 4), (2, 3)]


def _sparse(fmt: str, w: np.ndarray, rng: np.random.Generator, block=(4, 1)):
    """(format object, its exact dense weight) for a kernel's format, pruned from w."""
    if fmt == "csr":
        w = w.copy()
        w[rng.random(w.shape) < 0.7] = 0.0
        w[0] = 0.0  # an all-zero output feature: bias (and clamp) only
        return CSR.from_dense(w), w
    if fmt == "bsr":
        w = prune.block_magnitude(w, 0.5, block).astype(np.float32)
        return BSR.from_dense(w, block), w
    w = prune.nm_mask(w, 2, 4).astype(np.float32)
    return NM.from_dense(w, 2, 4), w


def _assert_close(y, ref, bound, what):
    assert y.shape == ref.shape, f"{what}: shape {y.shape} != {ref.shape}"
    assert y.dtype == np.float32, f"{what}: dtype {y.dtype}"
    err = np.abs(y.astype(np.float64) - ref)
    bad = np.argwhere(~(err <= bound))
    if bad.size:
        i = tuple(bad[0])
        raise AssertionError(f"{what}: {len(bad)} wrong; first at {i}: got {y[i]!r}, expected {ref[i]!r}")


def _check_linear(k, a, w, x, bias, clamp, what):
    y = kernels.linear(a, x, bias=bias, kernel=k.name, clamp=clamp)
    ref, bound = reference_spmm(w, x.T, bias)  # (N, M)
    if clamp is not None:
        ref = np.clip(ref, *clamp)
    _assert_close(y, ref.T, bound.T, what)


def _linear_cases(k: kernels.KernelInfo) -> list:
    blocks = BSR_BLOCKS if k.format == "bsr" else [(4, 1)]
    return [(n, kk, b) for n, kk in LINEAR_SHAPES["nm" if k.format == "nm" else "any"] for b in blocks]


@pytest.mark.parametrize("k", [p for f in ("csr", "bsr", "nm") for p in _param(f)])
def test_linear(k, rng):
    """y = x @ W.T + bias (clamped) for few batch rows (the batch-1 kernel once per row) and more
    (transposed through scratch: whole, or by blocks of rows per thread), against numpy in float64."""
    for n, kk, block in _linear_cases(k):
        a, w = _sparse(k.format, rng.standard_normal((n, kk)).astype(np.float32), rng, block)
        bias = rng.standard_normal(n).astype(np.float32)
        for m in LINEAR_MS:
            x = rng.standard_normal((m, kk)).astype(np.float32)
            what = f"{k.name} {type(a).__name__}{block if k.format == 'bsr' else ''} N={n} K={kk} M={m}"
            _check_linear(k, a, w, x, None, None, what)
            _check_linear(k, a, w, x, bias, (-0.5, 0.75), what + " +bias clamp")


def test_linear_vector_out_and_direct_call(rng):
    """x (K,) gives y (N,); `out` is filled and returned; the graph runner's positional _C call works."""
    from zeroskip import _C

    w = sparse_weight(rng, 6, 10, 0.5)
    a = CSR.from_dense(w)
    x = rng.standard_normal(10).astype(np.float32)
    y = kernels.linear(a, x)
    assert y.shape == (6,)
    np.testing.assert_allclose(y, w.astype(np.float64) @ x, rtol=1e-5, atol=1e-5)
    xs = rng.standard_normal((4, 10)).astype(np.float32)
    out = np.full((4, 6), np.nan, dtype=np.float32)
    assert kernels.linear(a, xs, out, bias=np.arange(1, 7, dtype=np.float32)) is out
    np.testing.assert_allclose(out, xs @ w.T.astype(np.float64) + np.arange(1, 7), rtol=1e-5, atol=1e-5)
    out2 = np.empty_like(out)
    bias = np.arange(6, dtype=np.float32)
    _C.spmm_linear(kernels.pack(a), xs, out2, bias, 0.0, np.inf, None)
    np.testing.assert_allclose(out2, np.maximum(xs @ w.T.astype(np.float64) + bias, 0), rtol=1e-5, atol=1e-5)
    empty = kernels.linear(a, np.empty((0, 10), dtype=np.float32))
    assert empty.shape == (0, 6)


# (kernel_shape, strides, pads (top, left, bottom, right), dilations)
CONV_CASES = [
    ((1, 1), (1, 1), (0, 0, 0, 0), (1, 1)),  # direct: no im2col
    ((1, 1), (2, 2), (0, 0, 0, 0), (1, 1)),
    ((3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),
    ((3, 3), (2, 2), (1, 0, 2, 1), (1, 1)),
    ((3, 3), (1, 2), (2, 2, 2, 2), (2, 2)),
    ((5, 3), (1, 1), (2, 1, 2, 1), (1, 1)),
    ((2, 2), (1, 1), (0, 0, 0, 0), (1, 1)),
    # row stride 1 with column dilation; pads as wide as or wider than the window
    ((3, 3), (2, 1), (0, 4, 3, 2), (1, 2)),
    ((2, 3), (1, 1), (3, 5, 0, 1), (1, 1)),
]
CONV_IMAGES = [(1, 1), (2, 3), (7, 9), (14, 14)]


@pytest.mark.parametrize("k", [p for f in ("csr", "bsr", "nm") for p in _param(f)])
def test_conv2d(k, rng):
    c = 4  # C * KH * KW a multiple of 4 for 2:4
    for ks, strides, pads, dil in CONV_CASES:
        for cout in (5, 17):
            kk = c * ks[0] * ks[1]
            a, w2 = _sparse(k.format, rng.standard_normal((cout, kk)).astype(np.float32), rng)
            w = w2.reshape(cout, c, *ks)
            bias = rng.standard_normal(cout).astype(np.float32)
            for hw in CONV_IMAGES:
                for b in (1, 3):
                    x = rng.standard_normal((b, c, *hw)).astype(np.float32)
                    ref, bound = conv_ref(x, w, bias, strides, pads, dil)
                    if ref.shape[2] < 1 or ref.shape[3] < 1:
                        continue  # the window does not fit this image (see test_conv2d_bad_args)
                    what = f"{k.name} x={x.shape} w={w.shape} s={strides} p={pads} d={dil}"
                    y = kernels.conv2d(a, x, ks, strides, pads, dil, bias=bias, kernel=k.name)
                    _assert_close(y, ref, bound, what)
                    y = kernels.conv2d(a, x, ks, strides, pads, dil, kernel=k.name, clamp=(-0.5, 0.5))
                    ref, bound = conv_ref(x, w, None, strides, pads, dil)
                    _assert_close(y, np.clip(ref, -0.5, 0.5), bound, what + " clamp")


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_linear_conv_threads_give_identical_results(threads, rng):
    """Transposes and im2col large enough to be split across threads give the same bits as serial."""
    w = sparse_weight(rng, 40, 16 * 9, 0.8)
    a = CSR.from_dense(w)
    # 70 rows: split between threads as whole transposes; 256: by blocks of rows (one thread, any count).
    xs = [rng.standard_normal((m, 16 * 9 * 8)).astype(np.float32) for m in (70, 256)]
    big = CSR.from_dense(sparse_weight(rng, 300, 16 * 9 * 8, 0.9))
    xc = rng.standard_normal((2, 16, 40, 33)).astype(np.float32)
    conv = (a, xc, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1))
    before = kernels.num_threads()
    try:
        kernels.set_num_threads(1)
        lin1, conv1 = [kernels.linear(big, x) for x in xs], kernels.conv2d(*conv)
        kernels.set_num_threads(threads)
        for x, want in zip(xs, lin1):
            np.testing.assert_array_equal(kernels.linear(big, x), want)
        np.testing.assert_array_equal(kernels.conv2d(*conv), conv1)
    finally:
        kernels.set_num_threads(before)
    ref, bound = conv_ref(xc, w.reshape(40, 16, 3, 3), None, (1, 1), (1, 1, 1, 1), (1, 1))
    _assert_close(conv1, ref, bound, "conv 16->40 3x3 on 40x33")


@pytest.mark.parametrize("k", [p for f in ("csr", "bsr", "nm") for p in _param(f)])
def test_conv2d_block_and_row_splits_agree(k, rng):
    """Many output positions are split among threads by column blocks, few by output channels; both
    chunk the columns alike, so 1 thread (18 blocks: by blocks) and 3 (by rows) give the same bits."""
    a, w = _sparse(k.format, rng.standard_normal((24, 16 * 9)).astype(np.float32), rng)
    x = rng.standard_normal((1, 16, 30, 37)).astype(np.float32)
    bias = rng.standard_normal(24).astype(np.float32)
    args = (a, x, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1))
    before = kernels.num_threads()
    try:
        kernels.set_num_threads(1)
        by_blocks = kernels.conv2d(*args, bias=bias, kernel=k.name)
        kernels.set_num_threads(3)
        by_rows = kernels.conv2d(*args, bias=bias, kernel=k.name)
    finally:
        kernels.set_num_threads(before)
    np.testing.assert_array_equal(by_blocks, by_rows)
    ref, bound = conv_ref(x, w.reshape(24, 16, 3, 3), bias, (1, 1), (1, 1, 1, 1), (1, 1))
    _assert_close(by_blocks, ref, bound, f"{k.name} conv 16->24 3x3 on 30x37")


def test_linear_conv_concurrent_callers(rng):
    """Two Python threads (the GIL released in the kernels) each keep their own scratch."""
    jobs = []
    for m, n, kk in ((9, 33, 70), (23, 50, 41)):
        w = sparse_weight(rng, n, kk, 0.6)
        x = rng.standard_normal((m, kk)).astype(np.float32)
        jobs.append((CSR.from_dense(w), x, x @ w.T.astype(np.float64)))
    wc = sparse_weight(rng, 8, 3 * 9, 0.5)
    xc = rng.standard_normal((2, 3, 20, 17)).astype(np.float32)
    conv_expected = conv_ref(xc, wc.reshape(8, 3, 3, 3), None, (1, 1), (1, 1, 1, 1), (1, 1))[0]
    errors: list[str] = []

    def work(t: int) -> None:
        a, x, expected = jobs[t]
        for _ in range(40):
            if not np.allclose(kernels.linear(a, x), expected, rtol=1e-4, atol=1e-4):
                errors.append(f"linear in thread {t}")
            if t == 1:
                y = kernels.conv2d(CSR.from_dense(wc), xc, (3, 3), pads=(1, 1, 1, 1))
                if not np.allclose(y, conv_expected, rtol=1e-4, atol=1e-4):
                    errors.append("conv2d")

    threads = [threading.Thread(target=work, args=(t,)) for t in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


class TestLinearConvBadInput:
    @pytest.fixture
    def a(self):
        return CSR.from_dense(np.eye(6, 4, dtype=np.float32))  # N = 6 outputs, K = 4 inputs

    @pytest.fixture
    def conv_w(self):
        return CSR.from_dense(np.ones((5, 2 * 3 * 3), dtype=np.float32))  # Cout 5, C 2, 3x3

    def test_linear_wrong_dtype(self, a):
        with pytest.raises(InputError, match=r"x must be float32.*astype"):
            kernels.linear(a, np.ones((3, 4)))

    def test_linear_non_contiguous(self, a):
        with pytest.raises(InputError, match="C-contiguous"):
            kernels.linear(a, np.ones((3, 8), dtype=np.float32)[:, ::2])

    def test_linear_k_mismatch(self, a):
        with pytest.raises(InputError, match=r"x has shape \(3, 5\), expected \(M, 4\)"):
            kernels.linear(a, np.ones((3, 5), dtype=np.float32))
        with pytest.raises(InputError, match="2-D"):
            kernels.linear(a, np.ones((3, 4, 1), dtype=np.float32))

    def test_linear_bad_out(self, a):
        x = np.ones((3, 4), dtype=np.float32)
        with pytest.raises(InputError, match=r"out has shape \(3, 5\), expected \(3, 6\)"):
            kernels.linear(a, x, out=np.empty((3, 5), dtype=np.float32))
        with pytest.raises(InputError, match=r"out has shape \(2, 6\), expected \(3, 6\)"):
            kernels.linear(a, x, out=np.empty((2, 6), dtype=np.float32))
        with pytest.raises(InputError, match="out must be float32"):
            kernels.linear(a, x, out=np.empty((3, 6)))
        with pytest.raises(InputError, match="out must be C-contiguous"):
            kernels.linear(a, x, out=np.empty((6, 3), dtype=np.float32).T)
        out = np.empty((3, 6), dtype=np.float32)
        out.flags.writeable = False
        with pytest.raises(InputError, match="read-only"):
            kernels.linear(a, x, out=out)
        with pytest.raises(InputError, match="numpy array"):
            kernels.linear(a, x, out=[0.0] * 18)

    def test_linear_out_aliasing(self):
        a = CSR.from_dense(np.eye(4, dtype=np.float32))
        buf = np.ones((4, 4), dtype=np.float32)
        with pytest.raises(InputError, match="share memory with x"):
            kernels.linear(a, buf, out=buf)
        mem = np.ones(4 * 4 + 2, dtype=np.float32)
        with pytest.raises(InputError, match="share memory with bias"):
            kernels.linear(a, buf, out=mem[:16].reshape(4, 4), bias=mem[14:])

    def test_linear_bad_bias_clamp_kernel(self, a):
        x = np.ones((3, 4), dtype=np.float32)
        with pytest.raises(InputError, match="bias must be a contiguous float32 vector of length 6"):
            kernels.linear(a, x, bias=np.ones(4, dtype=np.float32))
        with pytest.raises(InputError, match="clamp range is empty"):
            kernels.linear(a, x, clamp=(1.0, 0.0))
        with pytest.raises(KernelError, match="unknown kernel 'nope'"):
            kernels.linear(a, x, kernel="nope")
        with pytest.raises(KernelError, match="bsr weights, not csr"):
            kernels.linear(a, x, kernel="spmm_bsr_f32_1x1_scalar")
        with pytest.raises(InputError, match="CSR, BSR or NM"):
            kernels.linear(np.eye(4, dtype=np.float32), x)

    def _conv(self, a, x, ks=(3, 3), strides=(1, 1), pads=(1, 1, 1, 1), dil=(1, 1), **kw):
        return kernels.conv2d(a, x, ks, strides, pads, dil, **kw)

    def test_conv_x(self, conv_w):
        with pytest.raises(InputError, match=r"x must be float32.*astype"):
            self._conv(conv_w, np.ones((1, 2, 4, 4)))
        with pytest.raises(InputError, match=r"x must be 4-D \(B, C, H, W\), got shape \(2, 4, 4\)"):
            self._conv(conv_w, np.ones((2, 4, 4), dtype=np.float32))
        with pytest.raises(InputError, match="x must be C-contiguous"):
            self._conv(conv_w, np.ones((1, 2, 4, 8), dtype=np.float32)[..., ::2])

    def test_conv_k_mismatch(self, conv_w):
        with pytest.raises(InputError, match=r"weight has 18 columns, expected C\*KH\*KW = 3\*3\*3 = 27"):
            self._conv(conv_w, np.ones((1, 3, 4, 4), dtype=np.float32))
        with pytest.raises(InputError, match=r"expected C\*KH\*KW = 2\*1\*1 = 2"):
            self._conv(conv_w, np.ones((1, 2, 4, 4), dtype=np.float32), ks=(1, 1))

    def test_conv_bad_params(self, conv_w):
        x = np.ones((1, 2, 4, 4), dtype=np.float32)
        with pytest.raises(InputError, match=r"strides must be >= 1, got \(1, 0\)"):
            self._conv(conv_w, x, strides=(1, 0))
        with pytest.raises(InputError, match=r"dilations must be >= 1, got \(0, 1\)"):
            self._conv(conv_w, x, dil=(0, 1))
        with pytest.raises(InputError, match=r"pads must be >= 0, got \(1, -1, 1, 1\)"):
            self._conv(conv_w, x, pads=(1, -1, 1, 1))
        with pytest.raises(InputError, match=r"kernel_shape must be >= 1"):
            self._conv(conv_w, x, ks=(0, 3))
        with pytest.raises(InputError, match=r"pads must have 4 values \(top, left, bottom, right\), got 2"):
            self._conv(conv_w, x, pads=(1, 1))
        with pytest.raises(InputError, match="strides must have 2 values"):
            self._conv(conv_w, x, strides=(1, 1, 1))
        with pytest.raises(InputError, match="does not fit the padded input"):
            self._conv(conv_w, np.ones((1, 2, 1, 4), dtype=np.float32), pads=(0, 0, 0, 0))
        with pytest.raises(InputError, match="does not fit the padded input"):
            self._conv(conv_w, x, pads=(0, 0, 0, 0), dil=(2, 2))

    def test_conv_binding_refuses_values_that_would_wrap(self):
        # Called directly (zeroskip.kernels checks first): 2**62 + 3 would wrap C*KH*KW back to 36.
        from zeroskip import _C

        a = CSR.from_dense(np.ones((1, 36), np.float32))
        x = np.ones((1, 4, 7, 12), np.float32)
        y = np.empty((1, 1, 1, 3), np.float32)
        with pytest.raises(ValueError, match=r"must be < 2\*\*31"):
            _C.spmm_conv(
                kernels.pack(a),
                x,
                y,
                None,
                -np.inf,
                np.inf,
                None,
                [2**62 + 3, 3],
                [1, 3],
                [0, 0, 2, 1],
                [4, 2],
            )

    def test_conv_bad_out(self, conv_w):
        x = np.ones((2, 2, 4, 4), dtype=np.float32)
        with pytest.raises(InputError, match=r"out has shape \(2, 5, 3, 4\), expected \(2, 5, 4, 4\)"):
            self._conv(conv_w, x, out=np.empty((2, 5, 3, 4), dtype=np.float32))
        with pytest.raises(InputError, match=r"out has shape \(1, 5, 4, 4\), expected \(2, 5, 4, 4\)"):
            self._conv(conv_w, x, out=np.empty((1, 5, 4, 4), dtype=np.float32))
        with pytest.raises(InputError, match="out must be float32"):
            self._conv(conv_w, x, out=np.empty((2, 5, 4, 4)))
        with pytest.raises(InputError, match="out must be C-contiguous"):
            self._conv(conv_w, x, out=np.empty((2, 5, 4, 8), dtype=np.float32)[..., ::2])
        out = np.empty((2, 5, 4, 4), dtype=np.float32)
        out.flags.writeable = False
        with pytest.raises(InputError, match="read-only"):
            self._conv(conv_w, x, out=out)

    def test_conv_aliasing_bias_clamp_kernel(self):
        a = CSR.from_dense(np.ones((2, 2), dtype=np.float32))  # 1x1 conv, 2 -> 2 channels
        buf = np.ones((1, 2, 3, 3), dtype=np.float32)
        with pytest.raises(InputError, match="share memory with x"):
            self._conv(a, buf, ks=(1, 1), pads=(0, 0, 0, 0), out=buf)
        x = np.ones((1, 2, 3, 3), dtype=np.float32)
        with pytest.raises(InputError, match="bias must be a contiguous float32 vector of length 2"):
            self._conv(a, x, ks=(1, 1), pads=(0, 0, 0, 0), bias=np.ones(3, dtype=np.float32))
        with pytest.raises(InputError, match="clamp range is empty"):
            self._conv(a, x, ks=(1, 1), pads=(0, 0, 0, 0), clamp=(1.0, 0.0))
        with pytest.raises(KernelError, match="unknown kernel 'nope'"):
            self._conv(a, x, ks=(1, 1), pads=(0, 0, 0, 0), kernel="nope")


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


@pytest.mark.parametrize("k", [p for f in ("csr", "bsr", "nm") for p in _param(f)])
def test_linear_transposed_layouts(k, rng):
    """x given as (K, M) and/or y written as (N, M) give the bits of the plain layout, transposed, for
    row-by-row, whole-transpose and per-thread-block batch sizes."""
    a, _ = _sparse(k.format, rng.standard_normal((70, 132)).astype(np.float32), rng)
    bias = rng.standard_normal(70).astype(np.float32)
    for m in (1, 2, 3, 17, 64, 128, 256):
        x = rng.standard_normal((m, 132)).astype(np.float32)
        want = kernels.linear(a, x, bias=bias, kernel=k.name, clamp=(-1.0, 2.0))
        xt = np.ascontiguousarray(x.T)
        for x_t in (False, True):
            for y_t in (False, True):
                got = kernels.linear(
                    a,
                    xt if x_t else x,
                    bias=bias,
                    kernel=k.name,
                    clamp=(-1.0, 2.0),
                    x_transposed=x_t,
                    out_transposed=y_t,
                )
                np.testing.assert_array_equal(
                    got.T if y_t else got, want, err_msg=f"M={m} x_t={x_t} y_t={y_t}"
                )
    with pytest.raises(InputError, match="x has shape"):
        kernels.linear(a, np.ones((5, 132), np.float32), x_transposed=True)
    with pytest.raises(InputError, match="out has shape"):
        kernels.linear(
            a, np.ones((5, 132), np.float32), out=np.empty((5, 70), np.float32), out_transposed=True
        )


@pytest.mark.parametrize("k", [p for f in ("csr", "bsr", "nm") for p in _param(f)])
def test_linear_gelu(k, rng):
    """gelu="none" / "tanh" applies GELU after bias and clamp, in every driver path and layout: the
    numbers of the plain Linear passed through dense.gelu."""
    from zeroskip import dense

    a, _ = _sparse(k.format, rng.standard_normal((40, 68)).astype(np.float32), rng)
    bias = rng.standard_normal(40).astype(np.float32)
    for m in (1, 2, 17, 128):
        x = rng.standard_normal((m, 68)).astype(np.float32)
        plain = kernels.linear(a, x, bias=bias, kernel=k.name)
        for form in ("none", "tanh"):
            want = dense.gelu(plain, approximate=form)
            got = kernels.linear(a, x, bias=bias, kernel=k.name, gelu=form)
            np.testing.assert_array_equal(got, want, err_msg=f"M={m} {form}")
            got_t = kernels.linear(a, x, bias=bias, kernel=k.name, gelu=form, out_transposed=True)
            np.testing.assert_array_equal(got_t.T, want, err_msg=f"M={m} {form} out_transposed")
    with pytest.raises(InputError, match="gelu must be"):
        kernels.linear(a, x, gelu="erf")
