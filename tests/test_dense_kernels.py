"""Dense kernels (gelu, softmax, gemv, packed GEMM, dwconv2d, pool2d) on every ISA this CPU runs, vs numpy.

numpy + pytest only (runs under qemu on arm64 too). ISAs compiled in but not runnable here are
reported as skipped. Error bounds: conftest.TOLERANCE.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import TOLERANCE, conv_ref, reference_spmm
from zeroskip import InputError, KernelError, dense

F32 = np.float32
ISAS = [
    pytest.param(
        d["isa"], id=d["isa"], marks=pytest.mark.skipif(not d["runnable"], reason=f"CPU lacks {d['isa']}")
    )
    for d in dense.isas()
]
SIZES = (0, 1, 7, 8, 9, 15, 16, 17, 31, 33, 1023)
_SPECIAL = [
    0.0,
    -0.0,
    np.inf,
    -np.inf,
    np.nan,
    1e-45,
    -1e-45,
    1e-40,
    -1e-40,
    1e-30,
    -1e-30,
    1e-7,
    -1e-7,
    3e38,
]
_SPECIAL += [-3e38, 88.0, -88.0, 100.0, -100.0, 1e4, -1e4, 5.0, -5.0, 6.36, -6.36, 6.37, -6.37, 12.0, -12.0]
SPECIAL = np.array(_SPECIAL, dtype=F32)
_erfc = np.vectorize(math.erfc, otypes=[np.float64])


def _on_threads(fn, *counts: int) -> list:
    """fn() run with each kernel thread count in turn (the count is restored after)."""
    from zeroskip import kernels

    before = kernels.num_threads()
    out = []
    try:
        for n in counts:
            kernels.set_num_threads(n)
            out.append(fn())
    finally:
        kernels.set_num_threads(before)
    return out


def _inputs(rng: np.random.Generator, n: int) -> np.ndarray:
    """n values: normal, wide, specials and denormals mixed in."""
    x = (rng.standard_normal(n) * rng.choice([0.1, 1.0, 4.0, 20.0], n)).astype(F32)
    if n:
        k = min(n, len(SPECIAL))
        x[rng.choice(n, k, replace=False)] = SPECIAL[rng.choice(len(SPECIAL), k, replace=False)]
    return x


def _same_specials(y: np.ndarray, ref: np.ndarray, what: str) -> np.ndarray:
    """NaN / inf where the reference has them; returns the mask of finite reference values."""
    nan = np.isnan(ref)
    assert np.array_equal(np.isnan(y), nan), f"{what}: NaN at {np.argwhere(np.isnan(y) != nan)[:5].ravel()}"
    inf = np.isinf(ref)
    assert np.array_equal(y[inf], ref[inf].astype(F32)), f"{what}: inf mismatch"
    return ~(nan | inf)


def _check(y: np.ndarray, ref: np.ndarray, bound: np.ndarray, x: np.ndarray, what: str) -> None:
    assert y.dtype == F32, what
    assert y.shape == ref.shape, what
    fin = _same_specials(y, ref, what)
    with np.errstate(invalid="ignore"):
        err = np.abs(y.astype(np.float64) - ref)
    bad = np.argwhere(fin & ~(err <= bound))
    if bad.size:
        i = tuple(bad[0])
        raise AssertionError(
            f"{what}: {len(bad)} wrong; first at {i}: x={x[i]!r} got {y[i]!r}, expected {ref[i]!r} "
            f"(bound {bound[i]:.3g})"
        )


def gelu_erf_ref(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x64 = x.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        ref = 0.5 * x64 * _erfc(-x64 / math.sqrt(2.0))
        ref[np.isneginf(x64)] = 0.0
    tol = TOLERANCE["gelu_erf"]
    with np.errstate(invalid="ignore", over="ignore"):
        bound = tol["rel"] * np.abs(ref) + tol["erf_abs"] * 0.5 * np.abs(x64)
    # results within float32's subnormal range carry its absolute rounding
    return ref, bound + np.finfo(F32).smallest_subnormal


def gelu_tanh_ref(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x64 = x.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        arg = 2.0 * math.sqrt(2.0 / math.pi) * (x64 + 0.044715 * x64**3)
        ref = x64 / (1.0 + np.exp(-arg))  # = 0.5 x (1 + tanh(arg / 2)), without cancellation
        ref[np.isneginf(x64)] = 0.0
        ref[np.isposinf(x64)] = np.inf
    tol = TOLERANCE["gelu_tanh"]
    with np.errstate(invalid="ignore", over="ignore"):
        bound = (tol["rel"] + tol["rel_per_arg"] * np.abs(arg)) * np.abs(ref) + tol["abs"]
    return ref, np.where(np.isnan(bound), tol["abs"], bound)  # inf * 0 where the result is 0


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu(isa, approximate, rng):
    ref_fn = gelu_erf_ref if approximate == "none" else gelu_tanh_ref
    cases = [_inputs(rng, n) for n in SIZES]
    cases += [SPECIAL, np.linspace(-15, 15, 30001, dtype=F32), _inputs(rng, 5000).reshape(50, 100)]
    cases.append(
        np.geomspace(1e-45, 3e38, 3000).astype(F32) * np.where(np.arange(3000) % 2, 1, -1).astype(F32)
    )
    for x in cases:
        y = dense.gelu(x, approximate=approximate, isa=isa)
        ref, bound = ref_fn(x)
        _check(y, ref, bound, x, f"gelu[{approximate}] {isa} n={x.size}")
    # exact specials
    y = dense.gelu(np.array([np.inf, -np.inf, np.nan, 0.0], F32), approximate=approximate, isa=isa)
    np.testing.assert_array_equal(y, np.array([np.inf, 0.0, np.nan, 0.0], F32))


@pytest.mark.parametrize("isa", ISAS)
def test_gelu_in_place_and_out(isa, rng):
    x = _inputs(rng, 1001)
    want = dense.gelu(x, isa=isa)
    out = np.empty_like(x)
    assert dense.gelu(x, out, isa=isa) is out
    np.testing.assert_array_equal(out, want)
    x2 = x.copy()
    dense.gelu(x2, x2, isa=isa)
    np.testing.assert_array_equal(x2, want)


def softmax_ref(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x64 = x.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        mx = x64.max(axis=-1, keepdims=True)
        arg = x64 - mx
        e = np.exp(arg)
        ref = e / e.sum(axis=-1, keepdims=True)
    tol = TOLERANCE["softmax"]
    with np.errstate(invalid="ignore"):
        rel = tol["rel"] + tol["rel_per_col"] * x.shape[-1] + tol["rel_per_arg"] * np.abs(arg)
        bound = rel * ref + tol["abs"]
    return ref, bound


@pytest.mark.parametrize("isa", ISAS)
def test_softmax(isa, rng):
    cases = []
    for cols in [*range(1, 34), 127, 128, 1000, 4099]:
        cases.append((rng.standard_normal((3, cols)) * 5).astype(F32))
    cases.append((rng.standard_normal((2, 4, 16, 16)) * 30).astype(F32))
    cases.append(np.full((2, 7), -1e30, F32))  # equal large negatives
    cases.append(np.array([[-100.0, 0.0, -200.0, 3.0, -1e4, 88.0, -88.0, 1e-40, 0.5]], F32))
    for x in cases:
        y = dense.softmax(x, isa=isa)
        ref, bound = softmax_ref(x)
        _check(y, ref, bound, x, f"softmax {isa} {x.shape}")
        sums = y.astype(np.float64).sum(axis=-1)
        assert np.all(np.abs(sums - 1) <= 1e-5), f"softmax {isa} {x.shape}: row sums {sums}"


@pytest.mark.parametrize("isa", ISAS)
def test_softmax_specials(isa):
    """Like torch.softmax: a row with NaN, +inf, or only -inf is NaN everywhere; -inf entries give 0."""
    inf, nan = np.inf, np.nan
    x = np.array(
        [
            [-inf, -inf, -inf],
            [inf, 1.0, 2.0],
            [nan, 1.0, 2.0],
            [-inf, 0.0, -inf],
            [1.0, -inf, 1.0],
        ],
        F32,
    )
    for cols in (3, 17):  # vector and tail paths
        xx = np.full((5, cols), -inf, F32)
        xx[:, :3] = x
        xx[1:3, 3:] = 0.0
        xx[4, 3:] = 1.0
        y = dense.softmax(xx, isa=isa)
        assert np.isnan(y[:3]).all()
        assert y[3, 1] == 1.0
        assert (y[3, [0, 2]] == 0).all()
        assert (y[3, 3:] == 0).all()
        k = (xx[4] == 1.0).sum()
        np.testing.assert_allclose(y[4][xx[4] == 1.0], 1.0 / k, rtol=1e-6)
        assert (y[4][xx[4] == -inf] == 0).all()
    assert dense.softmax(np.zeros((0, 5), F32), isa=isa).shape == (0, 5)
    assert dense.softmax(np.zeros((4, 0), F32), isa=isa).shape == (4, 0)
    np.testing.assert_array_equal(dense.softmax(np.array([[3.0], [-inf]], F32), isa=isa)[0], [1.0])
    x = np.random.default_rng(5).standard_normal((3, 40)).astype(F32)
    want = dense.softmax(x, isa=isa)
    dense.softmax(x, x, isa=isa)
    np.testing.assert_array_equal(x, want)


def _gemv_check(y, w, x, bias, clamp, what):
    xm = x.reshape(1, -1) if x.ndim == 1 else x
    ref, bound = reference_spmm(w, xm.T, bias)  # (N, M)
    if clamp is not None:
        ref = np.clip(ref, clamp[0], clamp[1])
    got = y.reshape(xm.shape[0], w.shape[0]).T.astype(np.float64)
    err = np.abs(got - ref)
    bad = np.argwhere(~(err <= bound))
    assert not bad.size, (
        f"{what}: {len(bad)} wrong; first {tuple(bad[0])}: {got[tuple(bad[0])]} vs {ref[tuple(bad[0])]}"
    )


@pytest.mark.parametrize("isa", ISAS)
def test_gemv(isa, rng):
    shapes = [
        (1, 1),
        (1, 7),
        (3, 8),
        (4, 9),
        (5, 15),
        (7, 16),
        (9, 17),
        (13, 33),
        (64, 64),
        (37, 100),
        (130, 257),
    ]
    shapes += [(512, 256), (8, 0), (0, 8)]
    for n, k in shapes:
        w = rng.standard_normal((n, k)).astype(F32)
        bias = rng.standard_normal(n).astype(F32)
        for m in (None, 1, 2, 3, 4, 5, 9):
            x = rng.standard_normal(k if m is None else (m, k)).astype(F32)
            for b, clamp in ((None, None), (bias, None), (bias, (0.0, np.inf)), (None, (-0.5, 0.5))):
                y = dense.gemv(w, x, b, clamp=clamp, isa=isa)
                assert y.shape == ((n,) if m is None else (m, n))
                assert y.dtype == F32
                _gemv_check(y, w, x, b, clamp, f"gemv {isa} {n}x{k} m={m} bias={b is not None} clamp={clamp}")


@pytest.mark.parametrize("isa", ISAS)
def test_gemv_threads_and_specials(isa, rng):

    w = rng.standard_normal((1000, 300)).astype(F32)
    x = rng.standard_normal(300).astype(F32)
    one, three = _on_threads(lambda: dense.gemv(w, x, isa=isa), 1, 3)
    np.testing.assert_array_equal(three, one)
    _gemv_check(one, w, x, None, None, f"gemv {isa} threads")
    x[5] = np.nan
    assert np.isnan(dense.gemv(w, x, clamp=(0.0, 1.0), isa=isa)).all()  # clamp keeps NaN


def _gemm_ref(w, x, bias, clamp, activation):
    """float64 reference of the packed GEMM and its error bound (the Linear's, carried through GELU,
    whose slope is at most 1.13, plus GELU's own)."""
    xm = x.reshape(-1, w.shape[1])
    ref, bound = reference_spmm(w, xm.T, bias)  # (N, M)
    ref, bound = ref.T, bound.T
    if activation:
        # GELU's own bound taken twice: it is evaluated at the exact input, the kernel's is a little off.
        ref, gb = (gelu_erf_ref if activation == "gelu" else gelu_tanh_ref)(ref)
        bound = 1.13 * bound + 2 * gb
    if clamp is not None:
        ref = np.clip(ref, clamp[0], clamp[1])
    return ref.reshape(*x.shape[:-1], w.shape[0]), bound.reshape(*x.shape[:-1], w.shape[0])


def _gemm_check(y, ref, bound, what):
    err = np.abs(y.astype(np.float64) - ref)
    bad = np.argwhere(~(err <= bound))
    assert not bad.size, (
        f"{what}: {len(bad)} wrong; first {tuple(bad[0])}: {y[tuple(bad[0])]} vs {ref[tuple(bad[0])]}"
    )


# Sizes around every ISA's panel width (2, 8, 16, 32 columns), register tile (6 or 8 rows) and k
# chunk (4096 / panel width floats: 128 to 2048), so tails and multi-chunk sums are all exercised.
GEMM_NK = [(1, 1), (2, 3), (7, 5), (8, 8), (15, 17), (16, 16), (17, 31), (33, 64), (31, 129), (64, 255)]
GEMM_NK += [(40, 256), (24, 257), (3, 513), (70, 600), (9, 2049)]


@pytest.mark.parametrize("isa", ISAS)
def test_gemm(isa, rng):
    for n, k in GEMM_NK:
        w = rng.standard_normal((n, k)).astype(F32)
        bias = rng.standard_normal(n).astype(F32)
        p, pb = dense.pack_linear(w, isa=isa), dense.pack_linear(w, bias, isa=isa)
        assert p.shape == (n, k)
        assert p.isa == isa
        assert p.nbytes >= 4 * n * k
        # Rows: one; a 6-row tile + 1 (AVX2) and 7 (the 8-row ISAs); 8 + 1; 8 + 5; past a 48-row block.
        for m in (1, 7, 9, 13, 50):
            x = rng.standard_normal((m, k)).astype(F32)
            for b, packed, clamp, act in (
                (None, p, None, ""),
                (bias, pb, None, ""),
                (bias, pb, (0.0, np.inf), ""),
                (None, p, (-0.5, 0.5), ""),
                (bias, pb, None, "gelu"),
                (bias, pb, None, "gelu_tanh"),
                (None, p, (0.0, 6.0), "gelu"),
            ):
                if act and m not in (
                    1,
                    9,
                ):  # the GELU reference is slow (erfc per element): a full and a tail tile
                    continue
                y = dense.linear(packed, x, clamp=clamp, activation=act)
                assert y.shape == (m, n)
                assert y.dtype == F32
                ref, bound = _gemm_ref(w, x, b, clamp, act)
                _gemm_check(y, ref, bound, f"gemm {isa} {n}x{k} m={m} bias={b is not None} {clamp} {act!r}")


@pytest.mark.parametrize("isa", ISAS)
def test_gemm_shapes_threads_specials(isa, rng):
    # Leading dims are kept; k = 0 gives act(bias); out= is written in place.
    w = rng.standard_normal((50, 70)).astype(F32)
    bias = rng.standard_normal(50).astype(F32)
    p = dense.pack_linear(w, bias, isa=isa)
    x = rng.standard_normal((2, 3, 70)).astype(F32)
    out = np.full((2, 3, 50), np.nan, F32)
    assert dense.linear(p, x, out=out) is out
    ref, bound = _gemm_ref(w, x, bias, None, "")
    _gemm_check(out, ref, bound, f"gemm {isa} 3-D")
    assert dense.linear(p, np.zeros((0, 70), F32)).shape == (0, 50)
    empty = dense.pack_linear(np.zeros((5, 0), F32), bias[:5], isa=isa)
    np.testing.assert_array_equal(
        dense.linear(empty, np.zeros((3, 0), F32), clamp=(0, np.inf)),
        np.tile(np.maximum(bias[:5], 0), (3, 1)),
    )
    assert dense.linear(dense.pack_linear(np.zeros((0, 4), F32), isa=isa), np.ones((3, 4), F32)).shape == (
        3,
        0,
    )
    # Threads split panels or rows; every output is summed in the same order either way.
    for n, m in ((300, 40), (20, 200)):
        wt = rng.standard_normal((n, 150)).astype(F32)
        pt = dense.pack_linear(wt, isa=isa)
        xt = rng.standard_normal((m, 150)).astype(F32)
        one, three = _on_threads(lambda pt=pt, xt=xt: dense.linear(pt, xt), 1, 3)
        np.testing.assert_array_equal(three, one)
    # NaN in a row of x makes that row NaN (also through clamp and GELU); inf gives inf or NaN like numpy.
    x = rng.standard_normal((9, 70)).astype(F32)
    x[4, 3] = np.nan
    for clamp, act in ((None, ""), ((0.0, 1.0), ""), (None, "gelu"), (None, "gelu_tanh")):
        y = dense.linear(p, x, clamp=clamp, activation=act)
        assert np.isnan(y[4]).all(), (clamp, act)
        assert not np.isnan(np.delete(y, 4, axis=0)).any(), (clamp, act)
    w1 = np.ones((3, 2), F32)
    y = dense.linear(dense.pack_linear(w1, isa=isa), np.array([[np.inf, 1.0], [np.inf, -np.inf]], F32))
    assert np.isposinf(y[0]).all()
    assert np.isnan(y[1]).all()


def test_gemm_errors():
    w = np.ones((4, 8), F32)
    p = dense.pack_linear(w)
    with pytest.raises(InputError, match="x has shape"):
        dense.linear(p, np.ones((2, 7), F32))
    with pytest.raises(InputError, match="out has shape"):
        dense.linear(p, np.ones((2, 8), F32), out=np.empty((2, 5), F32))
    with pytest.raises(InputError, match="out has shape"):
        dense.linear(p, np.ones((2, 8), F32), out=np.empty((3, 4), F32))
    with pytest.raises(InputError, match="float32"):
        dense.linear(p, np.ones((2, 8)))
    with pytest.raises(InputError, match="contiguous"):
        dense.linear(p, np.ones((2, 16), F32)[:, ::2])
    buf = np.ones(16, F32)
    p8 = dense.pack_linear(np.ones((8, 8), F32))
    with pytest.raises(InputError, match="share memory"):
        dense.linear(p8, buf[:8].reshape(1, 8), out=buf[4:12].reshape(1, 8))
    with pytest.raises(InputError, match="clamp"):
        dense.linear(p, np.ones((2, 8), F32), clamp=(1.0, 0.0))
    with pytest.raises(InputError, match="activation"):
        dense.linear(p, np.ones((2, 8), F32), activation="relu6")
    with pytest.raises(InputError, match="pack_linear"):
        dense.linear(w, np.ones((2, 8), F32))
    with pytest.raises(InputError, match="2-D"):
        dense.pack_linear(np.ones(8, F32))
    with pytest.raises(InputError, match="bias"):
        dense.pack_linear(w, np.ones(3, F32))
    with pytest.raises(InputError, match="float32"):
        dense.pack_linear(w.astype(np.float64))
    with pytest.raises(KernelError):
        dense.pack_linear(w, isa="nope")


# (kernel, strides, pads (top, left, bottom, right), dilations): direct 1x1, im2col, uneven pads.
DCONV_CASES = [
    ((1, 1), (1, 1), (0, 0, 0, 0), (1, 1)),
    ((1, 1), (2, 2), (0, 0, 0, 0), (1, 1)),
    ((3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),
    ((3, 3), (2, 2), (1, 0, 2, 1), (1, 1)),
    ((3, 3), (1, 2), (2, 2, 2, 2), (2, 2)),
    ((5, 3), (1, 1), (2, 1, 2, 1), (1, 1)),
    # row stride 1 with column dilation; pads as wide as or wider than the window
    ((3, 3), (2, 1), (0, 4, 3, 2), (1, 2)),
    ((2, 3), (1, 1), (3, 5, 0, 1), (1, 1)),
]


@pytest.mark.parametrize("isa", ISAS)
def test_conv2d_gemm(isa, rng):
    for ks, strides, pads, dil in DCONV_CASES:
        for c, cout in ((3, 16), (5, 7), (16, 33)):
            w = rng.standard_normal((cout, c, *ks)).astype(F32)
            bias = rng.standard_normal(cout).astype(F32)
            p, pb = dense.pack_conv(w, isa=isa), dense.pack_conv(w, bias, isa=isa)
            assert p.shape == (cout, c * ks[0] * ks[1])
            # batch 3 of 12x11: the threads' ranges of positions cross image boundaries
            for b, hw in ((1, (1, 1)), (2, (5, 7)), (1, (17, 16)), (3, (12, 11))):
                x = rng.standard_normal((b, c, *hw)).astype(F32)
                ref, bound = conv_ref(x, w, bias, strides, pads, dil)
                if ref.shape[2] < 1 or ref.shape[3] < 1:
                    continue
                what = f"conv2d {isa} x={x.shape} w={w.shape} s={strides} p={pads} d={dil}"
                y = dense.conv2d(pb, x, ks, strides, pads, dil)
                _gemm_check(y, ref, bound, what)
                y = dense.conv2d(pb, x, ks, strides, pads, dil, clamp=(0.0, 6.0))
                _gemm_check(y, np.clip(ref, 0.0, 6.0), bound, what + " relu6")
                ref0, bound0 = conv_ref(x, w, None, strides, pads, dil)
                _gemm_check(dense.conv2d(p, x, ks, strides, pads, dil), ref0, bound0, what + " no bias")


@pytest.mark.parametrize("isa", ISAS)
def test_conv2d_gemm_residual(isa, rng):
    """clamp(conv + bias + residual): 1x1 (x read in place) and 3x3 (im2col), C*KH*KW past one k chunk
    (partial sums kept in out), column tails, batch 1 and 3; the residual must not overlap out."""
    for c, k, hw, b in ((5, 3, (5, 7), 3), (300, 1, (7, 7), 1), (40, 3, (9, 4), 1), (8, 1, (16, 16), 3)):
        w = rng.standard_normal((13, c, k, k)).astype(F32)
        bias = rng.standard_normal(13).astype(F32)
        p = dense.pack_conv(w, bias, isa=isa)
        x = rng.standard_normal((b, c, *hw)).astype(F32)
        pads = (k // 2,) * 4
        ref, bound = conv_ref(x, w, bias, (1, 1), pads, (1, 1))
        r = rng.standard_normal(ref.shape).astype(F32)
        what = f"conv2d residual {isa} x={x.shape} k={k}"
        _gemm_check(dense.conv2d(p, x, (k, k), pads=pads, residual=r), ref + r, bound, what)
        got = dense.conv2d(p, x, (k, k), pads=pads, residual=r, clamp=(0.0, 1.0))
        _gemm_check(got, np.clip(ref + r, 0.0, 1.0), bound, what + " clamp")
    y = np.zeros((1, 13, 7, 7), F32)
    with pytest.raises(InputError, match="overlap"):
        dense.conv2d(p, np.ones((1, c, 7, 7), F32), (1, 1), out=y, residual=y)
    with pytest.raises(InputError, match="shape"):
        dense.conv2d(p, np.ones((1, c, 7, 7), F32), (1, 1), residual=np.ones((1, 13, 7, 6), F32))


@pytest.mark.parametrize("isa", ISAS)
def test_conv2d_gemm_threads_and_specials(isa, rng):
    # Split by columns (many positions) or by row panels (many channels): the same bits either way.
    for c, cout, hw in ((8, 12, (40, 40)), (64, 200, (3, 3))):
        w = rng.standard_normal((cout, c, 3, 3)).astype(F32)
        p = dense.pack_conv(w, isa=isa)
        x = rng.standard_normal((2, c, *hw)).astype(F32)
        one, three = _on_threads(lambda p=p, x=x: dense.conv2d(p, x, (3, 3), pads=(1, 1, 1, 1)), 1, 3)
        np.testing.assert_array_equal(three, one)
        ref, bound = conv_ref(x, w, None, (1, 1), (1, 1, 1, 1), (1, 1))
        _gemm_check(one, ref, bound, f"conv2d {isa} threads {x.shape}")
    # A NaN input poisons the outputs whose windows read it, and only those; clamp keeps NaN.
    w = np.ones((4, 2, 3, 3), F32)
    x = np.zeros((1, 2, 6, 6), F32)
    x[0, 1, 0, 0] = np.nan
    y = dense.conv2d(dense.pack_conv(w, isa=isa), x, (3, 3), pads=(1, 1, 1, 1), clamp=(0.0, 1.0))
    nan = np.isnan(y[0, 0])
    assert nan[:2, :2].all()
    assert nan.sum() == 4
    # No input channels: the bias alone.
    empty = dense.pack_conv(np.zeros((3, 0, 1, 1), F32), np.array([1, -2, 3], F32), isa=isa)
    y = dense.conv2d(empty, np.zeros((1, 0, 2, 2), F32), (1, 1), clamp=(0.0, np.inf))
    np.testing.assert_array_equal(y[0, :, 0, 0], [1, 0, 3])


@pytest.mark.parametrize("isa", ISAS)
def test_conv1x1_with_channels_in_vectors(isa, rng):
    """A 1x1 conv through the Linear packing (output channels in the vectors, positions broadcast):
    against numpy and bit for bit against the weight-left GEMM (both sum over C in order), over
    partial channel panels, position tiles that cross images or fall short, bias, clamp, residual,
    threads, NaN and no input channels."""
    for c, cout in ((1, 1), (5, 7), (33, 17), (130, 70), (300, 40)):
        w = rng.standard_normal((cout, c, 1, 1)).astype(F32)
        bias = rng.standard_normal(cout).astype(F32)
        pl, pc = dense.pack_linear(w.reshape(cout, c), bias, isa=isa), dense.pack_conv(w, bias, isa=isa)
        for b, hw in ((1, (1, 1)), (1, (7, 7)), (3, (7, 7)), (2, (5, 3)), (1, (14, 14)), (8, (2, 2))):
            x = rng.standard_normal((b, c, *hw)).astype(F32)
            r = rng.standard_normal((b, cout, *hw)).astype(F32)
            ref, bound = conv_ref(x, w, bias, (1, 1), (0, 0, 0, 0), (1, 1))
            what = f"conv1x1 channel vectors {isa} x={x.shape} w={w.shape}"
            for clamp, res, want in (
                (None, None, ref),
                ((0.0, 6.0), None, np.clip(ref, 0, 6)),
                ((-1.0, 1.0), r, np.clip(ref + r, -1, 1)),
                (None, r, ref + r),
            ):
                got = dense.conv2d(pl, x, (1, 1), clamp=clamp, residual=res)
                _gemm_check(got, want, bound, f"{what} clamp={clamp} residual={res is not None}")
                np.testing.assert_array_equal(got, dense.conv2d(pc, x, (1, 1), clamp=clamp, residual=res))
    w = rng.standard_normal((200, 64, 1, 1)).astype(F32)
    pl = dense.pack_linear(w.reshape(200, 64), isa=isa)
    for shape in ((2, 64, 7, 7), (1, 64, 30, 30)):  # split by channel panels, then by positions
        x = rng.standard_normal(shape).astype(F32)
        one, three = _on_threads(lambda x=x: dense.conv2d(pl, x, (1, 1)), 1, 3)
        np.testing.assert_array_equal(three, one)
        ref, bound = conv_ref(x, w, None, (1, 1), (0, 0, 0, 0), (1, 1))
        _gemm_check(one, ref, bound, f"conv1x1 channel vectors {isa} threads {shape}")
    # A NaN input poisons its position in every channel, and only there; clamp keeps NaN.
    x = np.zeros((1, 64, 7, 7), F32)
    x[0, 5, 3, 4] = np.nan
    y = dense.conv2d(pl, x, (1, 1), clamp=(0.0, 1.0))
    assert np.isnan(y[0, :, 3, 4]).all()
    assert np.isnan(y).sum() == 200
    empty = dense.pack_linear(np.zeros((3, 0), F32), np.array([1, -2, 3], F32), isa=isa)
    y = dense.conv2d(empty, np.zeros((2, 0, 2, 2), F32), (1, 1), clamp=(0.0, np.inf))
    np.testing.assert_array_equal(y[1, :, 1, 1], [1, 0, 3])
    with pytest.raises(InputError, match="1x1 convs of stride 1"):
        dense.conv2d(pl, np.ones((1, 64, 7, 7), F32), (1, 1), strides=(2, 2))
    with pytest.raises(InputError, match="1x1 convs of stride 1"):
        dense.conv2d(pl, np.ones((1, 64, 7, 7), F32), (1, 1), pads=(1, 1, 1, 1))
    with pytest.raises(InputError, match="columns"):
        dense.conv2d(pl, np.ones((1, 8, 7, 7), F32), (3, 3))


def test_conv2d_gemm_errors():
    p = dense.pack_conv(np.ones((4, 2, 3, 3), F32))
    x = np.ones((1, 2, 5, 5), F32)
    with pytest.raises(InputError, match="columns"):
        dense.conv2d(p, np.ones((1, 3, 5, 5), F32), (3, 3))
    with pytest.raises(InputError, match="columns"):
        dense.conv2d(p, x, (1, 1))
    with pytest.raises(InputError, match="4-D"):
        dense.conv2d(p, np.ones((2, 5, 5), F32), (3, 3))
    with pytest.raises(InputError, match="does not fit"):
        dense.conv2d(p, np.ones((1, 2, 2, 2), F32), (3, 3))
    with pytest.raises(InputError, match="out has shape"):
        dense.conv2d(p, x, (3, 3), out=np.empty((1, 4, 5, 5), F32))
    with pytest.raises(InputError, match="float32"):
        dense.conv2d(p, x.astype(np.float64), (3, 3))
    with pytest.raises(InputError, match="clamp"):
        dense.conv2d(p, x, (3, 3), clamp=(1.0, 0.0))
    with pytest.raises(InputError, match="pack_conv"):
        dense.conv2d(np.ones((4, 18), F32), x, (3, 3))
    with pytest.raises(InputError, match="4-D"):
        dense.pack_conv(np.ones((4, 18), F32))
    with pytest.raises(InputError, match="bias"):
        dense.pack_conv(np.ones((4, 2, 3, 3), F32), np.ones(3, F32))


def test_errors():
    x = np.ones(8, F32)
    with pytest.raises(InputError, match="float32"):
        dense.gelu(np.ones(8))
    with pytest.raises(InputError, match="contiguous"):
        dense.gelu(np.ones(16, F32)[::2])
    with pytest.raises(InputError, match="approximate"):
        dense.gelu(x, approximate="fast")
    with pytest.raises(InputError, match="shape"):
        dense.gelu(x, np.empty(9, F32))
    ro = np.empty(8, F32)
    ro.flags.writeable = False
    with pytest.raises(InputError, match="read-only"):
        dense.softmax(x, ro)
    buf = np.ones(16, F32)
    with pytest.raises(InputError, match="overlaps"):
        dense.softmax(buf[:8], buf[4:12])
    with pytest.raises(KernelError):
        dense.gelu(x, isa="nope")
    w = np.ones((4, 8), F32)
    with pytest.raises(InputError, match="x has shape"):
        dense.gemv(w, np.ones(7, F32))
    with pytest.raises(InputError, match="out has shape"):
        dense.gemv(w, x, out=np.empty(5, F32))
    with pytest.raises(InputError, match="bias"):
        dense.gemv(w, x, np.ones(3, F32))
    big = np.ones(40, F32)
    with pytest.raises(InputError, match="share memory"):
        dense.gemv(big[:32].reshape(4, 8), x, out=big[28:32])
    with pytest.raises(InputError, match="clamp"):
        dense.gemv(w, x, clamp=(1.0, 0.0))
    with pytest.raises(InputError, match="2-D"):
        dense.gemv(np.ones(8, F32), x)


def _out_size(n, k, stride, pad0, pad1, dil):
    span = dil * (k - 1) + 1
    return max(0, (n + pad0 + pad1 - span) // stride + 1) if n + pad0 + pad1 >= span else 0


def dwconv_ref(x, w, bias, strides, pads, dilations):
    """float64 depthwise conv (zero padding) and its error bound (conftest's float32 dot-product scheme)."""
    n, c, h, wd = x.shape
    kh, kw = w.shape[2:]
    (sh, sw), (pt, pl, pb, pr), (dh, dw) = strides, pads, dilations
    oh, ow = _out_size(h, kh, sh, pt, pb, dh), _out_size(wd, kw, sw, pl, pr, dw)
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    ref = np.zeros((n, c, oh, ow))
    scale = np.zeros((n, c, oh, ow))
    if oh and ow:
        for i in range(kh):
            for j in range(kw):
                rows = slice(i * dh, i * dh + (oh - 1) * sh + 1, sh)
                win = xp[:, :, rows, j * dw : j * dw + (ow - 1) * sw + 1 : sw]
                wij = w[:, 0, i, j].astype(np.float64)[None, :, None, None]
                ref += wij * win
                scale += np.abs(wij * win)
    if bias is not None:
        ref += bias.astype(np.float64)[None, :, None, None]
        scale += np.abs(bias.astype(np.float64))[None, :, None, None]
    tol = TOLERANCE[np.float32]
    return ref, tol["rel_to_abs_sum"] * (kh * kw + 1) * scale + tol["abs"]


def _dw_check(isa, x, w, bias, strides, pads, dilations, clamp, what=""):
    y = dense.dwconv2d(x, w, bias, strides=strides, pads=pads, dilations=dilations, clamp=clamp, isa=isa)
    ref, bound = dwconv_ref(x, w, bias, strides, pads, dilations)
    if clamp is not None:
        ref = np.clip(ref, clamp[0], clamp[1])
    label = f"dwconv {isa} x={x.shape} w={w.shape} s={strides} p={pads} d={dilations} clamp={clamp} {what}"
    assert y.shape == ref.shape, label
    assert y.dtype == F32, label
    err = np.abs(y.astype(np.float64) - ref)
    bad = np.argwhere(~(err <= bound))
    if bad.size:
        i = tuple(bad[0])
        raise AssertionError(f"{label}: {len(bad)} wrong; first at {i}: got {y[i]!r}, expected {ref[i]!r}")
    return y


DW_SIZES = (1, 2, 3, 7, 8, 9, 16, 17, 33)
DW_KERNELS = ((1, 1), (3, 3), (5, 5), (7, 7), (3, 1))


@pytest.mark.parametrize("isa", ISAS)
def test_dwconv_kernels_strides_dilations(isa, rng):
    """Every filter size x stride x dilation, with symmetric, asymmetric, zero and oversized pads."""
    pads_list = ((0, 0, 0, 0), (1, 1, 1, 1), (2, 0, 1, 3), (0, 5, 4, 0), (9, 9, 9, 9))
    for kh, kw in DW_KERNELS:
        for sh, sw in ((1, 1), (2, 2), (3, 3), (1, 2), (2, 1)):
            for d in ((1, 1), (2, 2), (1, 2)):
                pads = pads_list[rng.integers(len(pads_list))]
                n, c = (1, 16) if rng.random() < 0.5 else (3, 5)
                h, wd = (17, 33) if rng.random() < 0.5 else (9, 16)
                x = rng.standard_normal((n, c, h, wd)).astype(F32)
                w = rng.standard_normal((c, 1, kh, kw)).astype(F32)
                bias = rng.standard_normal(c).astype(F32) if rng.random() < 0.5 else None
                clamp = (0.0, 6.0) if rng.random() < 0.3 else None
                _dw_check(isa, x, w, bias, (sh, sw), pads, d, clamp)


@pytest.mark.parametrize("isa", ISAS)
def test_dwconv_sizes(isa, rng):
    """Every H x W in DW_SIZES (edge columns, partial vectors), the MobileNet 3x3 paths and others."""
    for h in DW_SIZES:
        for wd in DW_SIZES:
            kh, kw = DW_KERNELS[rng.integers(len(DW_KERNELS))]
            for strides in ((1, 1), (2, 2)):
                x = rng.standard_normal((1, 5, h, wd)).astype(F32)
                for kk in ((3, 3), (kh, kw)):
                    w = rng.standard_normal((5, 1, *kk)).astype(F32)
                    pads = (kk[0] // 2, kk[1] // 2, kk[0] // 2, kk[1] // 2)
                    bias = rng.standard_normal(5).astype(F32) if rng.random() < 0.5 else None
                    clamp = (0.0, 6.0) if rng.random() < 0.5 else None
                    d = (2, 2) if rng.random() < 0.25 else (1, 1)
                    _dw_check(isa, x, w, bias, strides, pads, d, clamp)
                    pads = tuple(int(v) for v in rng.integers(0, 4, 4))
                    _dw_check(isa, x, w, bias, strides, pads, d, clamp)


@pytest.mark.parametrize("isa", ISAS)
def test_dwconv_mobilenet_shapes_and_threads(isa, rng):
    from zeroskip import kernels

    before = kernels.num_threads()
    try:
        for c, hw, s in ((32, 56, 1), (24, 56, 2), (3, 40, 1), (1, 64, 2), (96, 7, 1), (64, 15, 2)):
            x = rng.standard_normal((1, c, hw, hw)).astype(F32)
            w = rng.standard_normal((c, 1, 3, 3)).astype(F32)
            bias = rng.standard_normal(c).astype(F32)
            kernels.set_num_threads(1)
            one = _dw_check(isa, x, w, bias, (s, s), (1, 1, 1, 1), (1, 1), (0.0, 6.0))
            for nt in (2, 3):
                kernels.set_num_threads(nt)
                y = dense.dwconv2d(x, w, bias, strides=(s, s), pads=(1, 1, 1, 1), clamp=(0.0, 6.0), isa=isa)
                np.testing.assert_array_equal(y, one)
    finally:
        kernels.set_num_threads(before)


@pytest.mark.parametrize("isa", ISAS)
def test_dwconv_empty_and_specials(isa):
    w = np.ones((4, 1, 5, 5), F32)
    # window larger than the padded input: zero-sized output
    y = dense.dwconv2d(np.ones((2, 4, 3, 9), F32), w, isa=isa)
    assert y.shape == (2, 4, 0, 5)
    assert dense.dwconv2d(np.ones((0, 4, 9, 9), F32), w, isa=isa).shape == (0, 4, 5, 5)
    no_channels = dense.dwconv2d(np.ones((1, 0, 9, 9), F32), np.ones((0, 1, 3, 3), F32), isa=isa)
    assert no_channels.shape == (1, 0, 7, 7)
    # NaN and inf propagate to the outputs whose window holds them, clamp keeps NaN
    x = np.zeros((1, 4, 9, 20), F32)
    x[0, 1, 4, 10] = np.nan
    x[0, 2, 4, 10] = np.inf
    y = dense.dwconv2d(x, np.ones((4, 1, 3, 3), F32), pads=(1, 1, 1, 1), clamp=(0.0, 6.0), isa=isa)
    assert np.isnan(y[0, 1, 3:6, 9:12]).all()
    assert np.isnan(y[0, 1]).sum() == 9
    assert (y[0, 2, 3:6, 9:12] == 6.0).all()
    assert (y[0, 0] == 0).all()
    assert (y[0, 3] == 0).all()


def test_dwconv_errors():
    x = np.ones((1, 4, 8, 8), F32)
    w = np.ones((4, 1, 3, 3), F32)
    with pytest.raises(InputError, match="float32"):
        dense.dwconv2d(x.astype(np.float64), w)
    with pytest.raises(InputError, match="4-D"):
        dense.dwconv2d(np.ones((4, 8, 8), F32), w)
    with pytest.raises(InputError, match="w has shape"):
        dense.dwconv2d(x, np.ones((3, 1, 3, 3), F32))
    with pytest.raises(InputError, match="w has shape"):
        dense.dwconv2d(x, np.ones((4, 2, 3, 3), F32))
    with pytest.raises(InputError, match="bias"):
        dense.dwconv2d(x, w, np.ones(3, F32))
    with pytest.raises(InputError, match="out has shape"):
        dense.dwconv2d(x, w, out=np.empty((1, 4, 8, 8), F32))
    with pytest.raises(InputError, match="strides"):
        dense.dwconv2d(x, w, strides=(0, 1))
    with pytest.raises(InputError, match="dilations"):
        dense.dwconv2d(x, w, dilations=(1, 0))
    with pytest.raises(InputError, match="pads"):
        dense.dwconv2d(x, w, pads=(0, -1, 0, 0))
    with pytest.raises(InputError, match="clamp"):
        dense.dwconv2d(x, w, clamp=(1.0, 0.0))
    with pytest.raises(InputError, match="contiguous"):
        dense.dwconv2d(np.ones((1, 4, 8, 16), F32)[..., ::2], w)
    ro = np.empty((1, 4, 6, 6), F32)
    ro.flags.writeable = False
    with pytest.raises(InputError, match="read-only"):
        dense.dwconv2d(x, w, out=ro)
    buf = np.ones(4 * 64 * 2, F32)
    with pytest.raises(InputError, match="share memory"):
        dense.dwconv2d(buf[:256].reshape(1, 4, 8, 8), w, out=buf[100:244].reshape(1, 4, 6, 6))
    with pytest.raises(InputError, match="share memory"):
        dense.dwconv2d(x, w, out=w.reshape(-1)[:36].reshape(1, 4, 3, 3), pads=(0, 0, 0, 0), strides=(2, 2))
    with pytest.raises(KernelError):
        dense.dwconv2d(x, w, isa="nope")


def test_default_isa_is_fastest_runnable():
    isas = dense.isas()
    default = [d["isa"] for d in isas if d["default"]]
    assert len(default) == 1
    rank = {"scalar": 0, "neon": 1, "avx2": 1, "avx512": 2}
    best = max((d for d in isas if d["runnable"]), key=lambda d: rank[d["isa"]])
    assert default[0] == best["isa"]


# ------------------------------------------------------------------------------------------------
# pool2d (plain C++, no ISA variants)


def pool_ref(x, kind, kernel, strides, pads, dilations):
    """float64 loops over the window taps inside the image."""
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (pt, pl, pb, pr), (dh, dw) = kernel, strides, pads, dilations
    oh, ow = _out_size(h, kh, sh, pt, pb, dh), _out_size(w, kw, sw, pl, pr, dw)
    y = np.empty((n, c, oh, ow))
    for oy in range(oh):
        for ox in range(ow):
            rows = [oy * sh - pt + i * dh for i in range(kh)]
            cols = [ox * sw - pl + j * dw for j in range(kw)]
            rows = [r for r in rows if 0 <= r < h]
            cols = [q for q in cols if 0 <= q < w]
            win = x[:, :, rows][:, :, :, cols].astype(np.float64)
            if kind == "max":
                y[:, :, oy, ox] = np.max(win, axis=(2, 3))
            else:
                total = win.sum(axis=(2, 3))
                y[:, :, oy, ox] = total / (kh * kw if kind == "avg_include_pad" else len(rows) * len(cols))
    return y


POOL_CASES = [
    # kernel, strides, pads, dilations, input H x W
    ((1, 1), (1, 1), (0, 0, 0, 0), (1, 1), (5, 4)),
    ((2, 2), (2, 2), (0, 0, 0, 0), (1, 1), (32, 32)),
    ((2, 2), (2, 2), (0, 0, 0, 0), (1, 1), (7, 5)),
    ((2, 2), (2, 2), (0, 0, 0, 0), (1, 1), (9, 19)),  # vector steps, a tail, an odd width
    ((3, 3), (2, 2), (1, 1, 1, 1), (1, 1), (112, 112)),
    ((3, 2), (1, 2), (2, 0, 1, 1), (1, 1), (6, 9)),
    ((3, 3), (1, 1), (1, 1, 1, 1), (2, 2), (9, 8)),
    ((7, 7), (1, 1), (0, 0, 0, 0), (1, 1), (7, 7)),  # global
    ((5, 1), (3, 1), (4, 0, 0, 0), (1, 1), (2, 3)),
]


@pytest.mark.parametrize("kind", ["max", "avg", "avg_include_pad"])
@pytest.mark.parametrize("case", POOL_CASES, ids=str)
def test_pool2d(kind, case, rng):
    kernel, strides, pads, dilations, (h, w) = case
    for n, c in ((1, 3), (2, 16)):
        x = rng.standard_normal((n, c, h, w)).astype(F32)
        y = dense.pool2d(x, kind, kernel, strides, pads, dilations)
        ref = pool_ref(x, kind, kernel, strides, pads, dilations)
        assert y.shape == ref.shape
        if kind == "max":
            np.testing.assert_array_equal(y, ref.astype(F32))
        else:
            np.testing.assert_allclose(y, ref, rtol=4 * kernel[0] * kernel[1] * np.finfo(F32).eps, atol=1e-7)


def test_pool2d_specials_and_threads(rng):
    x = rng.standard_normal((2, 64, 16, 16)).astype(F32)  # large enough to split across threads
    x[0, 3, 5, 5] = np.nan
    x[0, 5, 4, 4] = np.nan  # the window's first tap: a plain vector max would drop it
    x[1, 7, 0, 0] = -np.inf
    x[1, 8, 2, 2] = np.inf
    y = dense.pool2d(x, "max", (2, 2), (2, 2))
    assert np.isnan(y[0, 3, 2, 2])
    assert np.isnan(y[0, 5, 2, 2])
    assert np.isnan(y[0, 3]).sum() == 1
    assert np.isnan(y[0, 5]).sum() == 1
    assert y[1, 8, 1, 1] == np.inf
    ref = pool_ref(np.where(np.isnan(x), F32(0), x), "max", (2, 2), (2, 2), (0, 0, 0, 0), (1, 1))
    keep = ~np.isnan(y)
    np.testing.assert_array_equal(y[keep], ref.astype(F32)[keep])
    a = dense.pool2d(x, "avg", (2, 2), (2, 2))
    assert np.isnan(a[0, 3, 2, 2])
    out = np.empty((2, 64, 8, 8), F32)
    assert dense.pool2d(x, "avg", (2, 2), (2, 2), out=out) is out
    empty = dense.pool2d(np.ones((0, 3, 4, 4), F32), "max", (2, 2), (2, 2))
    assert empty.shape == (0, 3, 2, 2)


def test_pool2d_errors():
    x = np.ones((1, 4, 8, 8), F32)
    with pytest.raises(InputError, match="kind"):
        dense.pool2d(x, "min", (2, 2))
    with pytest.raises(InputError, match="float32"):
        dense.pool2d(x.astype(np.float64), "max", (2, 2))
    with pytest.raises(InputError, match="4-D"):
        dense.pool2d(np.ones((4, 8, 8), F32), "max", (2, 2))
    with pytest.raises(InputError, match="kernel"):
        dense.pool2d(x, "max", (0, 2))
    with pytest.raises(InputError, match="strides"):
        dense.pool2d(x, "max", (2, 2), (1, 0))
    with pytest.raises(InputError, match="pads"):
        dense.pool2d(x, "max", (2, 2), pads=(2, 0, 0, 0))
    with pytest.raises(InputError, match="pads"):
        dense.pool2d(x, "max", (2, 2), pads=(0, -1, 0, 0))
    with pytest.raises(InputError, match="does not fit"):
        dense.pool2d(x, "max", (9, 2))
    with pytest.raises(InputError, match="out has shape"):
        dense.pool2d(x, "max", (2, 2), (2, 2), out=np.empty((1, 4, 8, 8), F32))
    with pytest.raises(InputError, match="share memory"):
        dense.pool2d(x, "max", (1, 1), out=x)
    with pytest.raises(InputError, match="integers"):
        dense.pool2d(x, "max", (2,))


# ---- attention ----


def _attention_ref(q, kt, v, mask, scale):
    s = np.matmul(q.astype(np.float64), kt.astype(np.float64)) * scale
    if mask is not None:
        s = s + mask
    with np.errstate(invalid="ignore"):
        s = s - s.max(-1, keepdims=True)
        p = np.exp(s)
        p /= p.sum(-1, keepdims=True)
    return p @ v.astype(np.float64)


# (B, H, Sq, Sk, D, Dv): vector-sized and odd sizes, single rows/keys, more rows than a work unit.
ATTN_SHAPES = [
    (1, 12, 128, 128, 32, 32),
    (2, 3, 17, 9, 5, 7),
    (1, 1, 1, 1, 1, 1),
    (1, 2, 33, 40, 64, 64),
    (2, 4, 5, 3, 16, 8),
    (1, 1, 70, 1, 3, 17),
    (3, 2, 4, 17, 24, 40),
]


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("shape", ATTN_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_attention(isa, shape, rng):
    """Against numpy in float64 for permuted q/kt/v views (BERT's layouts), with a broadcast mask and
    without, into a permuted out view; and for contiguous operands with a full mask."""
    b, h, sq, sk, d, dv = shape
    q = rng.standard_normal((b, sq, h, d)).astype(F32).transpose(0, 2, 1, 3)
    kt = rng.standard_normal((b, sk, h, d)).astype(F32).transpose(0, 2, 3, 1)
    v = rng.standard_normal((b, sk, h, dv)).astype(F32).transpose(0, 2, 1, 3)
    pad = np.where(rng.random((b, 1, 1, sk)) < 0.3, -1e4, 0.0).astype(F32)
    for mask, scale in ((pad, 0.3), (None, 1.0), (None, 0.7)):
        out = np.empty((b, sq, h, dv), F32).transpose(0, 2, 1, 3)
        assert dense.attention(q, kt, v, mask, out, scale=scale, isa=isa) is out
        ref = _attention_ref(q, kt, v, None if mask is None else np.broadcast_to(mask, (b, h, sq, sk)), scale)
        np.testing.assert_allclose(out, ref, rtol=0, atol=2e-5 * max(1.0, float(np.abs(ref).max())))
    qc, ktc, vc = (np.ascontiguousarray(a) for a in (q, kt, v))
    full = rng.standard_normal((b, h, sq, sk)).astype(F32)
    y = dense.attention(qc, ktc, vc, full, scale=0.5, isa=isa)
    np.testing.assert_allclose(y, _attention_ref(qc, ktc, vc, full, 0.5), rtol=0, atol=2e-5 * 10)


@pytest.mark.parametrize("isa", ISAS)
def test_attention_specials(isa):
    """A fully masked row (-inf everywhere) is NaN like torch; -inf on some keys gives them weight 0;
    a strided mask whose last dim is not contiguous is read element by element."""
    q = np.ones((1, 1, 2, 4), F32)
    kt = np.arange(12, dtype=F32).reshape(1, 1, 4, 3) / 10
    v = np.arange(6, dtype=F32).reshape(1, 1, 3, 2)
    mask = np.array([[0.0, -np.inf, 0.0], [-np.inf, -np.inf, -np.inf]], F32)[None, None]
    y = dense.attention(q, kt, v, mask, isa=isa)
    assert np.isnan(y[0, 0, 1]).all()
    np.testing.assert_allclose(y[0, 0, 0], _attention_ref(q, kt, v, mask, 1.0)[0, 0, 0], atol=1e-6)
    wide = np.zeros((1, 1, 2, 6), F32)
    wide[..., ::2] = mask
    y2 = dense.attention(q, kt, v, wide[..., ::2], isa=isa)
    np.testing.assert_array_equal(np.isnan(y2), np.isnan(y))
    np.testing.assert_allclose(y2[0, 0, 0], y[0, 0, 0], atol=0)


def test_attention_threads_and_errors(rng):
    """The same bits on 1 and 2 threads (work is split by heads and row blocks); bad operands are
    InputErrors naming what is wrong."""

    q, kt, v = (rng.standard_normal(s).astype(F32) for s in ((2, 4, 50, 16), (2, 4, 16, 50), (2, 4, 50, 16)))
    one, two = _on_threads(lambda: dense.attention(q, kt, v), 1, 2)
    np.testing.assert_array_equal(two, one)
    with pytest.raises(InputError, match="float32"):
        dense.attention(q.astype(np.float64), kt, v)
    with pytest.raises(InputError, match="kt has shape"):
        dense.attention(q, kt[..., :3, :], v)
    with pytest.raises(InputError, match="v has shape"):
        dense.attention(q, kt, v[:, :, :7])
    with pytest.raises(InputError, match="4-D"):
        dense.attention(q[0], kt, v)
    with pytest.raises(InputError, match="does not broadcast"):
        dense.attention(q, kt, v, np.zeros((3, 50), F32))
    with pytest.raises(InputError, match="share memory"):
        dense.attention(q, kt, v, out=q)
    with pytest.raises(InputError, match="last dimension"):
        dense.attention(q, kt, v, out=np.empty((2, 4, 16, 50), F32).transpose(0, 1, 3, 2))
    with pytest.raises(InputError, match="out has shape"):
        dense.attention(q, kt, v, out=np.empty((2, 4, 50, 15), F32))


# ---- layer normalisation ----


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("n", [1, 7, 8, 31, 32, 33, 384, 1000])
def test_layernorm(isa, n, rng):
    """Against numpy in float64, with and without a residual and a bias, in place and out of place;
    rows offset far from 0 (the two-pass variance keeps them accurate)."""
    x = (rng.standard_normal((9, n)) * 3 + 50).astype(F32)
    r = rng.standard_normal((9, n)).astype(F32)
    w, b = rng.standard_normal(n).astype(F32), rng.standard_normal(n).astype(F32)
    for res, bias in ((None, b), (r, b), (r, None), (None, None)):
        z = x.astype(np.float64) + (0 if res is None else res)
        zc = z - z.mean(-1, keepdims=True)
        ref = zc / np.sqrt((zc * zc).mean(-1, keepdims=True) + 1e-5) * w + (0 if bias is None else bias)
        y = dense.layernorm(x, w, bias, residual=res, eps=1e-5, isa=isa)
        np.testing.assert_allclose(y, ref, rtol=0, atol=2e-5 * max(1.0, float(np.abs(ref).max())))
        inplace = x.copy()
        assert dense.layernorm(inplace, w, bias, residual=res, eps=1e-5, out=inplace, isa=isa) is inplace
        np.testing.assert_array_equal(inplace, y)


def test_layernorm_threads_and_errors(rng):

    x = rng.standard_normal((300, 200)).astype(F32)
    w = np.ones(200, F32)
    one, three = _on_threads(lambda: dense.layernorm(x, w, residual=x), 1, 3)
    np.testing.assert_array_equal(three, one)
    with pytest.raises(InputError, match="scale has shape"):
        dense.layernorm(x, np.ones(199, F32))
    with pytest.raises(InputError, match="residual has shape"):
        dense.layernorm(x, w, residual=x[:-1])
    with pytest.raises(InputError, match="bias has shape"):
        dense.layernorm(x, w, np.ones(3, F32))
    with pytest.raises(InputError, match="float32"):
        dense.layernorm(x.astype(np.float64), w)
    with pytest.raises(InputError, match="epsilon"):
        dense.layernorm(x, w, eps=-1.0)
    with pytest.raises(InputError, match="overlaps"):
        dense.layernorm(x, w, out=np.lib.stride_tricks.as_strided(x[:, 1:], (300, 200), x.strides))


def test_bound_calls_and_chains(rng):
    """bind_conv2d_dense / bind_pool2d / bind_dwconv check their operands as the direct calls do and
    return the call bound to them; a Chain runs its calls in order, each on the memory bound."""
    from zeroskip import _C

    x = rng.standard_normal((2, 4, 9, 8)).astype(F32)
    w = rng.standard_normal((6, 4, 3, 3)).astype(F32)
    packed = dense.pack_conv(w, rng.standard_normal(6).astype(F32))
    wd = rng.standard_normal((6, 1, 3, 3)).astype(F32)
    c, d, p = (np.full(s, np.nan, F32) for s in ((2, 6, 9, 8), (2, 6, 9, 8), (2, 6, 4, 4)))
    r = rng.standard_normal((2, 6, 9, 8)).astype(F32)
    calls = [
        _C.bind_conv2d_dense(packed, x, c, 0.0, 6.0, [3, 3], [1, 1], [1] * 4, [1, 1], r),
        _C.bind_dwconv(c, wd, None, d, (1, 1), (1, 1, 1, 1), (1, 1), -1.0, 1.0, None),
        _C.bind_pool2d(d, p, "max", (2, 2), (2, 2), (0, 0, 0, 0), (1, 1)),
    ]
    chain = _C.Chain(calls)
    assert len(chain) == 3
    for _ in range(2):
        x[...] = rng.standard_normal(x.shape)  # the bound memory is read afresh each call
        chain()
        want_c = np.empty_like(c)
        _C.conv2d_dense(packed, x, want_c, 0.0, 6.0, [3, 3], [1, 1], [1] * 4, [1, 1], r)
        want_d = dense.dwconv2d(want_c, wd, None, None, (1, 1), (1, 1, 1, 1), (1, 1), clamp=(-1.0, 1.0))
        np.testing.assert_array_equal(c, want_c)
        np.testing.assert_array_equal(d, want_d)
        np.testing.assert_array_equal(p, pool_ref(want_d, "max", (2, 2), (2, 2), (0, 0, 0, 0), (1, 1)))
    calls[2]()  # a BoundCall alone
    with pytest.raises(ValueError, match="out has shape"):
        _C.bind_pool2d(d, c, "max", (2, 2), (2, 2), (0, 0, 0, 0), (1, 1))
    with pytest.raises(ValueError, match="overlap"):
        _C.bind_conv2d_dense(packed, x, c, 0.0, 6.0, [3, 3], [1, 1], [1] * 4, [1, 1], c)
    with pytest.raises(ValueError, match="None"):
        _C.Chain([calls[0], None])
    # A 1x1 conv through the Linear packing binds too (chained after the pool, on its output).
    w1 = rng.standard_normal((5, 6)).astype(F32)
    lin, q = dense.pack_linear(w1, rng.standard_normal(5).astype(F32)), np.full((2, 5, 4, 4), np.nan, F32)
    chain = _C.Chain([calls[2], _C.bind_conv2d_dense(lin, p, q, 0.0, 6.0, [1, 1], [1, 1], [0] * 4, [1, 1])])
    d[...] = rng.standard_normal(d.shape)
    chain()
    np.testing.assert_array_equal(q, dense.conv2d(lin, p, (1, 1), clamp=(0.0, 6.0)))
    with pytest.raises(ValueError, match="1x1 convs of stride 1"):
        _C.bind_conv2d_dense(lin, p, q[:, :, :2, :2].copy(), 0.0, 6.0, [1, 1], [2, 2], [0] * 4, [1, 1])
    with pytest.raises(TypeError, match="DenseConvWeight or a DenseWeight"):
        _C.bind_conv2d_dense(w1, p, q, 0.0, 6.0, [1, 1], [1, 1], [0] * 4, [1, 1])
