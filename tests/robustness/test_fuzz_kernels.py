"""Hypothesis fuzzing of the kernel entry points a Python caller reaches directly.

(a) `kernels.conv2d` with a CSR / BSR / N:M weight (a pruned Cout x (C*KH*KW) matrix): random valid
    geometry (batch 0-2, C 1-8, H/W 1-12, kernel 1-3, stride 1-3, pads 0-2, dilation 1-2) mixed with
    corruptions (kernel_shape not matching the weight or overflowing int64, zero/negative strides and
    dilations, negative or huge pads, an empty output, x of the wrong rank/dtype/layout/channels, out of
    the wrong shape/dtype/layout, bias of the wrong length/dtype, clamp reversed, NaN or short, unknown
    kernel names).
(b) `dense.gelu`, `softmax`, `gemv`, `dwconv2d`, `pool2d`: random valid inputs (with NaN / inf / huge
    values mixed in) and corruptions of the same kinds, bad window geometry and bad isa names.

Every call must work and match a torch.nn.functional reference computed in float64 (within 1e-4 of the
reference's largest magnitude; NaN where the reference is NaN), or raise a ZeroskipError. Corruptions
the docs rule out must raise; "lenient" ones (a float64 / int / list / non-contiguous x) may also work if
the result is right. Anything else (crash, hang, MemoryError, raw ValueError / TypeError / IndexError,
a wrong or silently accepted result) is a failure.

As in test_fuzz.py, each fuzz loop runs in ONE subprocess (this file run as a script) that announces every
example on stderr before trying it and prints a JSON summary as its last stdout line. Importing torch
takes ~3 s, so all the workers are started together, once per pytest session, and each test waits for
its own.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

pytest.importorskip("hypothesis")
pytest.importorskip("torch")

# The worker protocol and hypothesis settings of the model and format fuzzing (this folder is on
# sys.path both under pytest and when a worker runs this file as a script).
from test_fuzz import AS_CAP, EXAMPLE, SUMMARY, Failures, _announce, _settings, _short
from test_fuzz import _report as _report_failures

TIMEOUT = 150.0  # per worker, from its start (all start together on a machine with few cores)
EXAMPLES = {
    "conv2d-csr": 260,
    "conv2d-bsr": 200,
    "conv2d-nm": 200,
    "gelu": 250,
    "softmax": 250,
    "gemv": 300,
    "dwconv2d": 300,
    "pool2d": 300,
}
CONV_FORMATS = ["csr", "bsr", "nm"]
DENSE_OPS = ["gelu", "softmax", "gemv", "dwconv2d", "pool2d"]


# --- helpers run in the worker -----------------------------------------------------------------------


# Expectations: MUST_WORK (valid call: result must match), MUST_FAIL (must raise a ZeroskipError),
# LENIENT (may raise, or work and match the reference of the repaired input), EMPTY_OK (may raise, or
# return an empty array of the reference's shape).
MUST_WORK, MUST_FAIL, LENIENT, EMPTY_OK = "must work", "must fail", "lenient", "empty or error"


def _compare(y: Any, ref: np.ndarray) -> str | None:
    """y against the float64 reference: float32, same shape, NaN where ref is NaN, equal infinities,
    finite values within 1e-4 of max |ref| (finite entries)."""
    if not isinstance(y, np.ndarray) or y.dtype != np.float32 or y.shape != ref.shape:
        got = f"{y.dtype} {y.shape}" if isinstance(y, np.ndarray) else type(y).__name__
        return f"result {got}, expected float32 {ref.shape}"
    if ref.size == 0:
        return None
    yd = y.astype(np.float64)
    nan_r, nan_y = np.isnan(ref), np.isnan(yd)
    if (nan_r != nan_y).any():
        i = tuple(int(t) for t in np.argwhere(nan_r != nan_y)[0])
        return f"NaN mismatch at {i}: got {y[i]!r}, expected {ref[i]!r}"
    inf_r = np.isinf(ref)
    if (inf_r != np.isinf(yd)).any() or (yd[inf_r] != ref[inf_r]).any():
        i = tuple(int(t) for t in np.argwhere((inf_r != np.isinf(yd)) | (inf_r & (yd != ref)))[0])
        return f"inf mismatch at {i}: got {y[i]!r}, expected {ref[i]!r}"
    fin = np.isfinite(ref)
    if not fin.any():
        return None
    tol = 1e-4 * float(np.abs(ref[fin]).max()) + 1e-6
    err = np.where(fin, np.abs(yd - np.where(fin, ref, 0.0)), 0.0)
    if (err > tol).any():
        i = tuple(int(t) for t in np.argwhere(err > tol)[0])
        return f"wrong value at {i}: got {y[i]!r}, expected {ref[i]!r} (tol {tol:.3g})"
    return None


def _judge(
    call: Callable[[], Any],
    expect: str,
    ref: Callable[[], np.ndarray] | None,
    corruption: str,
    desc: str,
    outcomes: Counter[str],
    failures: Failures,
    out: Any = None,
) -> None:
    from zeroskip import ZeroskipError

    def fail(what: str, detail: str) -> None:
        outcomes[f"FAIL {what}"] += 1
        failures.add(f"{corruption}: {what}", desc, detail)

    try:
        y = call()
    except ZeroskipError as e:
        msg = str(e).strip()
        if expect == MUST_WORK:
            fail(f"valid call refused ({type(e).__name__})", msg[:300])
        elif "\n" in msg or not msg:
            fail("multi-line or empty message", msg[:300])
        else:
            outcomes[f"{type(e).__name__}: {corruption}"] += 1
        return
    except BaseException as e:
        if isinstance(e, KeyboardInterrupt):
            raise
        fail(type(e).__name__, _short(e))
        return
    if expect == MUST_FAIL:
        got = f"{y.dtype} {y.shape}" if isinstance(y, np.ndarray) else type(y).__name__
        fail("accepted", f"returned {got}")
        return
    want = ref() if ref is not None else None
    if want is None:
        fail("no reference", "harness error")
        return
    if expect == EMPTY_OK:  # shape from huge pads may be right yet unlike the reference's: size only
        if not (isinstance(y, np.ndarray) and y.size == 0 and y.dtype == np.float32):
            fail("non-empty result", f"got {getattr(y, 'shape', type(y).__name__)}")
        else:
            outcomes[f"works (empty): {corruption}"] += 1
        return
    problem = _compare(y, want)
    if problem is None and out is not None and y is not out:
        problem = "did not return the out array it was given"
    if problem:
        fail("wrong result", problem)
        return
    outcomes[f"works: {corruption}"] += 1


def _torch() -> Any:
    import torch

    torch.set_num_threads(1)
    return torch


def _t(a: np.ndarray) -> Any:
    return _torch().from_numpy(np.array(a, dtype=np.float64))


def _clamp_ref(y: np.ndarray, clamp: Any) -> np.ndarray:
    if clamp is None:
        return y
    return np.clip(y, clamp[0], clamp[1])


def _noncontig(a: np.ndarray) -> np.ndarray:
    """A non-contiguous view holding a's values (a itself when it cannot be made non-contiguous)."""
    if a.ndim == 0 or a.size < 2:
        return a
    wide = np.repeat(a, 2, axis=-1)[..., ::2]
    return wide if not wide.flags.c_contiguous else a


def _array_corruption(
    corruption: str, expect: str, *arrays: tuple[str, np.ndarray]
) -> tuple[list[Any], str, str] | None:
    """The corruptions every array argument takes alike: NAME_float64, NAME_noncontig and NAME_list, for
    the (name, array) pairs given. Returns the arguments to pass (the named one replaced), the
    corruption and the expectation (a view that cannot be made non-contiguous is the valid call), or
    None for any other corruption."""
    name, _, kind = corruption.partition("_")
    names = [n for n, _ in arrays]
    if name not in names or kind not in ("float64", "noncontig", "list"):
        return None
    args: list[Any] = [a for _, a in arrays]
    a = args[names.index(name)]
    if kind == "float64":
        bad = a.astype(np.float64)
    elif kind == "list":
        bad = a.tolist()
    else:
        bad = _noncontig(a)
        if bad.flags.c_contiguous:
            return args, "none", MUST_WORK
    args[names.index(name)] = bad
    return args, corruption, expect


def _values(rng: np.random.Generator, shape: tuple[int, ...], special: bool) -> np.ndarray:
    x = np.array(rng.standard_normal(shape) * 2, dtype=np.float32)
    if special and x.size:
        pool = np.array([np.nan, np.inf, -np.inf, 1e30, -1e30, 80.0, -80.0, 0.0, -0.0], np.float32)
        mask = rng.random(shape) < 0.2
        x[mask] = rng.choice(pool, size=int(mask.sum()))
    return x


def _loop(corruptions: list[str], count: int, strategies: dict[str, Any], body: Callable[..., None]) -> None:
    """One derandomized hypothesis loop per corruption (so each gets its share of `count`: a corruption
    listed k times gets k shares), the corruption passed in p["corruption"]."""
    from hypothesis import given
    from hypothesis import strategies as st

    share = max(1, count // len(corruptions))
    for corruption in dict.fromkeys(corruptions):
        n = share * corruptions.count(corruption)
        run = given(st.fixed_dictionaries({**strategies, "corruption": st.just(corruption)}))(body)
        _settings(n)(run)()


# --- (a) sparse conv2d -------------------------------------------------------------------------------

CONV_CORRUPTIONS = [
    *(["none"] * 8),
    "output_empty",
    "kshape_mismatch",
    "kshape_zero",
    "kshape_negative",
    "kshape_wrap_2**62",
    "kshape_2**63",
    "stride_zero",
    "stride_negative",
    "dilation_zero",
    "dilation_negative",
    "pads_negative",
    "pads_2**31",
    "pads_2**62",
    "pads_2**62_both",
    "pads_int64_max",
    "pads_short",
    "x_rank3",
    "x_rank5",
    "x_float64",
    "x_int32",
    "x_noncontig",
    "x_list",
    "x_channels",
    "out_shape",
    "out_float64",
    "out_noncontig",
    "out_readonly",
    "out_list",
    "bias_length",
    "bias_float64",
    "bias_2d",
    "clamp_reversed",
    "clamp_nan",
    "clamp_short",
    "kernel_unknown",
    "kernel_other_format",
]
LENIENT_CONV = {"x_float64", "x_int32", "x_noncontig", "x_list", "bias_float64"}


def _conv_out(h: int, k: int, s: int, p0: int, p1: int, d: int) -> int:
    return (h + p0 + p1 - d * (k - 1) - 1) // s + 1


def _conv_ref(
    x: np.ndarray, w4: np.ndarray, bias: Any, ks: Any, st: Any, pads: Any, dil: Any, clamp: Any
) -> Any:
    torch = _torch()
    f = torch.nn.functional
    pt, pl, pb, pr = pads
    b, cout = x.shape[0], w4.shape[0]
    oh = _conv_out(x.shape[2], ks[0], st[0], pt, pb, dil[0])
    ow = _conv_out(x.shape[3], ks[1], st[1], pl, pr, dil[1])
    if b == 0 or oh <= 0 or ow <= 0:
        return np.zeros((b, cout, max(oh, 0), max(ow, 0)))
    xp = f.pad(_t(x), (pl, pr, pt, pb))
    y = f.conv2d(xp, _t(w4), None if bias is None else _t(bias), stride=tuple(st), dilation=tuple(dil))
    return _clamp_ref(y.numpy(), clamp)


def fuzz_conv2d(fmt: str, max_examples: int) -> dict[str, Any]:
    from hypothesis import strategies as st
    from zeroskip import kernels, prune
    from zeroskip.formats import BSR, CSR, NM

    outcomes: Counter[str] = Counter()
    failures = Failures()
    other_kernel = {
        "csr": "spmm_bsr_f32_1x1_scalar",
        "bsr": "spmm_nm_f32_1x1_scalar",
        "nm": "spmm_csr_f32_1x1_scalar",
    }

    strategies = {
        "seed": st.integers(0, 2**32 - 1),
        "b": st.integers(0, 2),
        "c": st.integers(1, 8),
        "h": st.integers(1, 12),
        "w": st.integers(1, 12),
        "k": st.tuples(st.integers(1, 3), st.integers(1, 3)),
        "s": st.tuples(st.integers(1, 3), st.integers(1, 3)),
        "p": st.tuples(*[st.integers(0, 2)] * 4),
        "d": st.tuples(st.integers(1, 2), st.integers(1, 2)),
        "cout": st.integers(1, 6),
        "sparsity": st.sampled_from([0.0, 0.5, 0.9, 1.0]),
        "bias": st.booleans(),
        "clamp": st.sampled_from([None, None, (0.0, math.inf), (-0.5, 0.5)]),
        "out": st.booleans(),
        "kernel": st.sampled_from([None, None, None, "scalar"]),
        "block": st.sampled_from([(1, 1), (2, 2), (4, 1), (1, 4), (3, 2)]),
    }

    def one(p: dict[str, Any]) -> None:
        rng = np.random.default_rng(p["seed"])
        corruption = p["corruption"]
        b, c, h, wd, cout = p["b"], p["c"], p["h"], p["w"], p["cout"]
        (kh, kw), strides, pads, dil = p["k"], p["s"], p["p"], p["d"]
        if fmt == "nm":
            k = c * kh * kw
            fits = [nm for nm in [(2, 4), (1, 4), (2, 3), (1, 3), (1, 2)] if k % nm[1] == 0]
            if not fits:
                c *= 2
                fits = [(1, 2)]
            n, m = fits[p["seed"] % len(fits)]
        wmat = rng.standard_normal((cout, c * kh * kw)).astype(np.float32)
        wmat[rng.random(wmat.shape) < p["sparsity"]] = 0.0
        if fmt == "csr":
            a: Any = CSR.from_dense(wmat)
        elif fmt == "bsr":
            a = BSR.from_dense(wmat, p["block"])
        else:
            wmat = prune.nm_mask(wmat, n, m)
            a = NM.from_dense(wmat, n, m)
        w4 = a.to_dense().reshape(cout, c, kh, kw)
        x = rng.standard_normal((b, c, h, wd)).astype(np.float32)
        bias: Any = rng.standard_normal(cout).astype(np.float32) if p["bias"] else None
        clamp: Any = p["clamp"]
        kernel = None
        if p["kernel"] == "scalar":
            kernel = {"csr": "spmm_csr_f32_1x1_scalar", "bsr": "spmm_bsr_f32_1x1_scalar"}.get(fmt)
            if fmt == "nm":
                kernel = "spmm_nm_f32_1x1_scalar"
        ks: Any = (kh, kw)
        strides_arg: Any = strides
        pads_arg: Any = pads
        dil_arg: Any = dil
        x_arg: Any = x
        expect = MUST_FAIL
        use_out = p["out"]
        out_shape: tuple[int, ...] | None = None  # shape of the out array given (None: the right one)
        out_fix: Callable[[np.ndarray], Any] | None = None
        applied = True

        if corruption == "none":
            expect = MUST_WORK
        elif corruption == "output_empty":
            if kh >= 2:
                dil = dil_arg = (h + sum(pads) + 50, dil[1])
            elif kw >= 2:
                dil = dil_arg = (dil[0], wd + sum(pads) + 50)
            else:
                applied = False
        elif corruption == "kshape_mismatch":
            ks = (kh + 1, kw)
        elif corruption == "kshape_zero":
            ks = (0, kw)
        elif corruption == "kshape_negative":
            ks = (-kh, -kw)
        elif corruption == "kshape_wrap_2**62":
            # C * KH * KW and dh * (KH - 1) both wrap to the true values in int64 when 4 | C * KW and
            # dh = 4: a kernel that trusted them would read 2**62 rows past x. out is given the shape
            # the wrapped arithmetic yields, so nothing before the kernel call notices.
            ks = (kh + 2**62, kw)
            dil = dil_arg = (4, dil[1])
            use_out = True
        elif corruption == "kshape_2**63":
            ks = (2**63, kw)
        elif corruption == "stride_zero":
            strides_arg = (0, strides[1])
        elif corruption == "stride_negative":
            strides_arg = (strides[0], -1)
        elif corruption == "dilation_zero":
            dil_arg = (0, dil[1])
        elif corruption == "dilation_negative":
            dil_arg = (-2, dil[1])
        elif corruption == "pads_negative":
            pads_arg = (pads[0], -1, pads[2], pads[3])
        elif corruption in ("pads_2**31", "pads_2**62", "pads_int64_max"):
            big = {"pads_2**31": 2**31, "pads_2**62": 2**62, "pads_int64_max": 2**63 - 1}[corruption]
            pads_arg = (big, pads[1], pads[2], pads[3])
            expect = EMPTY_OK if b == 0 else MUST_FAIL
        elif corruption == "pads_2**62_both":
            pads_arg = (2**62, pads[1], 2**62, pads[3])
            expect = EMPTY_OK if b == 0 else MUST_FAIL
        elif corruption == "pads_short":
            pads_arg = pads[:3]
        elif corruption == "x_rank3":
            x_arg = x[0] if b else np.zeros((c, h, wd), np.float32)
        elif corruption == "x_rank5":
            x_arg = x[None]
        elif corruption == "x_float64":
            x_arg = x.astype(np.float64)
        elif corruption == "x_int32":
            x = np.round(x).astype(np.float32)
            x_arg = x.astype(np.int32)
        elif corruption == "x_noncontig":
            x_arg = _noncontig(x)
            applied = not x_arg.flags.c_contiguous
        elif corruption == "x_list":
            x_arg = x.tolist()
        elif corruption == "x_channels":
            x_arg = rng.standard_normal((b, c + 1, h, wd)).astype(np.float32)
        elif corruption == "out_shape":
            use_out = True
            out_fix = lambda s: np.empty((s[0], s[1], s[2] + 1, s[3]), np.float32)  # noqa: E731
        elif corruption == "out_float64":
            use_out = True
            out_fix = lambda s: np.empty(s, np.float64)  # noqa: E731
        elif corruption == "out_noncontig":
            use_out = True
            out_fix = lambda s: np.empty((*s[:3], 2 * s[3]), np.float32)[..., ::2]  # noqa: E731
            applied = b * cout * h * wd > 0
        elif corruption == "out_readonly":
            use_out = True

            def out_fix(s: tuple[int, ...]) -> np.ndarray:
                o = np.empty(s, np.float32)
                o.flags.writeable = False
                return o

        elif corruption == "out_list":
            use_out = True
            out_fix = lambda s: np.zeros(s, np.float32).tolist()  # noqa: E731
        elif corruption == "bias_length":
            bias = rng.standard_normal(cout + 1).astype(np.float32)
        elif corruption == "bias_float64":
            bias = rng.standard_normal(cout)
        elif corruption == "bias_2d":
            bias = rng.standard_normal((cout, 1)).astype(np.float32)
        elif corruption == "clamp_reversed":
            clamp = (1.0, -1.0)
        elif corruption == "clamp_nan":
            clamp = (math.nan, 1.0)
        elif corruption == "clamp_short":
            clamp = (0.0,)
        elif corruption == "kernel_unknown":
            kernel = "spmm_csr_f32_7x7_nope"
        elif corruption == "kernel_other_format":
            kernel = other_kernel[fmt]
        else:
            raise AssertionError(corruption)
        if not applied:
            corruption, expect = "none", MUST_WORK
        if corruption in LENIENT_CONV:
            expect = LENIENT
        oh = _conv_out(h, kh, strides[0], pads[0], pads[2], dil[0])
        ow = _conv_out(wd, kw, strides[1], pads[1], pads[3], dil[1])
        if expect in (MUST_WORK, LENIENT) and (oh <= 0 or ow <= 0):
            expect = EMPTY_OK  # the window does not fit: refusing is fine, so is an empty result
        if corruption == "output_empty":
            expect = EMPTY_OK
        out: Any = None
        if use_out:
            shape = (b, cout, max(oh, 0), max(ow, 0)) if out_shape is None else out_shape
            out = out_fix(shape) if out_fix is not None else np.full(shape, np.nan, np.float32)
        desc = (
            f"conv2d {fmt} corruption={corruption} b={b} c={c} h={h} w={wd} kernel_shape={ks} "
            f"strides={strides_arg} pads={pads_arg} dilations={dil_arg} cout={cout} "
            f"sparsity={p['sparsity']} block={getattr(a, 'block', None)} nm={getattr(a, 'n', None)}:"
            f"{getattr(a, 'm', None)} bias={None if bias is None else (bias.dtype, bias.shape)} "
            f"clamp={clamp} out={None if out is None else getattr(out, 'shape', type(out).__name__)} "
            f"kernel={kernel} seed={p['seed']}"
        )
        _announce(desc)

        def call() -> Any:
            return kernels.conv2d(
                a, x_arg, ks, strides_arg, pads_arg, dil_arg, out, bias=bias, clamp=clamp, kernel=kernel
            )

        def ref() -> np.ndarray:
            return _conv_ref(x, w4, bias, (kh, kw), strides, pads, dil, clamp)

        _judge(call, expect, ref, corruption, desc, outcomes, failures, out)

    t0 = time.perf_counter()
    _loop(CONV_CORRUPTIONS, max_examples, strategies, one)
    return _summary(outcomes, failures, t0)


def _summary(outcomes: Any, failures: Failures, t0: float) -> dict[str, Any]:
    return {
        "examples": sum(outcomes.values()),
        "outcomes": dict(sorted(outcomes.items())),
        "failures": failures.items,
        "seconds": round(time.perf_counter() - t0, 2),
    }


# --- (b) dense kernels -------------------------------------------------------------------------------

ISA_CORRUPTIONS = ["isa_unknown", "isa_empty", "isa_upper", "isa_not_runnable"]
ELEMENTWISE_CORRUPTIONS = [
    *(["none"] * 8),
    "inplace",
    "isa_scalar",
    "x_float64",
    "x_float16",
    "x_int32",
    "x_noncontig",
    "x_list",
    "x_ragged",
    "out_shape",
    "out_float64",
    "out_noncontig",
    "out_readonly",
    "out_overlap",
    "out_list",
    *ISA_CORRUPTIONS,
]
GEMV_CORRUPTIONS = [
    *(["none"] * 8),
    "isa_scalar",
    "w_1d",
    "w_3d",
    "w_float64",
    "w_noncontig",
    "x_wrong_k",
    "x_rank3",
    "x_0d",
    "x_float64",
    "x_noncontig",
    "x_list",
    "bias_length",
    "bias_float64",
    "bias_2d",
    "out_shape",
    "out_float64",
    "out_noncontig",
    "out_is_x",
    "clamp_reversed",
    "clamp_nan",
    "clamp_short",
    *ISA_CORRUPTIONS,
]
WINDOW_CORRUPTIONS = [
    "stride_zero",
    "stride_negative",
    "stride_float",
    "strides_three",
    "dilation_zero",
    "dilation_negative",
    "pads_negative",
    "pads_2**31",
    "pads_2**62",
    "pads_2**62_both",
    "pads_int64_max",
    "pads_2**64",
    "pads_short",
    "window_too_big",
    "x_rank3",
    "x_float64",
    "x_noncontig",
    "x_empty",
    "out_shape",
    "out_float64",
    "out_noncontig",
]
DWCONV_CORRUPTIONS = [
    *(["none"] * 8),
    "isa_scalar",
    *WINDOW_CORRUPTIONS,
    "w_channels",
    "w_dim1",
    "w_kh_zero",
    "w_rank3",
    "w_float64",
    "bias_length",
    "bias_float64",
    "clamp_reversed",
    "clamp_nan",
    "clamp_short",
    *ISA_CORRUPTIONS,
]
POOL_CORRUPTIONS = [
    *(["none"] * 8),
    *WINDOW_CORRUPTIONS,
    "kind_unknown",
    "kernel_zero",
    "kernel_negative",
    "kernel_float",
    "pads_ge_window",
]
LENIENT_DENSE = {"x_float64", "x_float16", "x_int32", "x_noncontig", "x_list", "w_float64", "w_noncontig"}
LENIENT_DENSE |= {"bias_float64", "x_0d"}
HUGE_PADS = {"pads_2**31": 2**31, "pads_2**62": 2**62, "pads_int64_max": 2**63 - 1, "pads_2**64": 2**64}


def _isa_for(corruption: str) -> tuple[str | None, bool]:
    """(isa argument, whether it is a valid choice)."""
    from zeroskip import dense

    runnable = {d["isa"]: d["runnable"] for d in dense.isas()}
    if corruption == "isa_scalar":
        return "scalar", True
    if corruption == "isa_unknown":
        return "sse9", False
    if corruption == "isa_empty":
        return "", False
    if corruption == "isa_upper":
        return "AVX2", False
    if corruption == "isa_not_runnable":
        missing = [k for k, ok in runnable.items() if not ok]
        return (missing[0], False) if missing else ("avx9000", False)
    return None, True


def _dense_case(
    op: str, p: dict[str, Any]
) -> tuple[Callable[[], Any], str, Callable[[], Any], str, str, Any]:
    """(call, expectation, reference, corruption, description, out given) for one example."""
    from zeroskip import dense

    torch = _torch()
    f = torch.nn.functional
    rng = np.random.default_rng(p["seed"])
    corruption = p["corruption"]
    special = p["special"]
    isa, isa_ok = _isa_for(corruption)
    expect = MUST_WORK if corruption in ("none", "inplace", "isa_scalar") else MUST_FAIL
    if corruption in LENIENT_DENSE:
        expect = LENIENT
    out: Any = None
    info: dict[str, Any] = {}

    if op in ("gelu", "softmax"):
        rank = p["rank"]
        shape = tuple(int(v) for v in rng.integers(0 if p["empty"] else 1, 6, size=rank))
        if p["big"] and rank >= 1:
            shape = (*shape[:-1], int(rng.integers(100, 5000)))
        x = _values(rng, shape, special)
        approximate = p["approximate"]
        xarg: Any = x
        outarg: Any = None
        hit = _array_corruption(corruption, expect, ("x", x))
        if hit is not None:
            (xarg,), corruption, expect = hit
        elif corruption == "inplace":
            x = x.copy()
            xarg = outarg = x.copy()
        elif corruption == "x_float16":
            x = x.astype(np.float16).astype(np.float32)
            xarg = x.astype(np.float16)
        elif corruption == "x_int32":
            x = np.nan_to_num(np.round(x), nan=0, posinf=1000, neginf=-1000).clip(-1000, 1000)
            xarg = x.astype(np.int32)
        elif corruption == "x_ragged":
            xarg = [[1.0, 2.0], [3.0]]
        elif corruption == "out_shape":
            outarg = np.empty((*shape, 2), np.float32)
        elif corruption == "out_float64":
            outarg = np.empty(shape, np.float64)
        elif corruption == "out_noncontig":
            outarg = _noncontig(np.empty(shape, np.float32))
            if outarg.flags.c_contiguous:
                corruption, expect = "none", MUST_WORK
        elif corruption == "out_readonly":
            outarg = np.empty(shape, np.float32)
            outarg.flags.writeable = False
        elif corruption == "out_overlap":
            if x.size < 2 or rank != 1:
                base = np.zeros(4, np.float32)
                x = base[:3].copy()
                xarg, outarg = base[:3], base[1:]
            else:
                base = np.concatenate([x, np.zeros(1, np.float32)])
                xarg, outarg = base[:-1], base[1:]
        elif corruption == "out_list":
            outarg = np.zeros(shape, np.float32).tolist()
        elif corruption.startswith("isa_"):
            pass
        elif corruption != "none":
            raise AssertionError(corruption)
        if op == "softmax" and x.ndim == 0 and expect == MUST_WORK:
            expect = LENIENT  # softmax of a scalar: refusing it is fine, so is 1.0
        out = outarg
        info = {"shape": shape, "approximate": approximate, "special": special}

        if op == "gelu":

            def call() -> Any:
                return dense.gelu(xarg, outarg, approximate, isa=isa)

            def ref() -> Any:
                y = f.gelu(_t(x), approximate=approximate).numpy()
                return np.where(np.isneginf(x), 0.0, y)  # torch says NaN; the limit is 0

        else:

            def call() -> Any:
                return dense.softmax(xarg, outarg, isa=isa)

            def ref() -> Any:
                if x.ndim == 0:
                    return np.array(1.0) if not np.isnan(x) else np.array(np.nan)
                return torch.softmax(_t(x), dim=-1).numpy()

        if corruption == "inplace":
            pass  # out is x itself: the result must be written into it
    elif op == "gemv":
        n, k, mrows = p["n"], p["k"], p["m"]
        if p["big"]:
            n, k = int(rng.integers(64, 300)), int(rng.integers(64, 300))
        w = _values(rng, (n, k), False)
        x = _values(rng, (k,) if mrows == 0 else (mrows - 1, k), special)
        bias: Any = _values(rng, (n,), False) if p["bias"] else None
        clamp: Any = p["clamp"]
        warg: Any = w
        xarg = x
        barg: Any = bias
        outarg = None
        hit = _array_corruption(corruption, expect, ("w", w), ("x", x))
        if hit is not None:
            (warg, xarg), corruption, expect = hit
        elif corruption == "w_1d":
            warg = w.reshape(-1)
        elif corruption == "w_3d":
            warg = w[None]
        elif corruption == "x_wrong_k":
            xarg = _values(rng, (*x.shape[:-1], k + 1), False)
        elif corruption == "x_rank3":
            xarg = x.reshape(1, *x.shape) if x.ndim == 2 else x.reshape(1, 1, k)
        elif corruption == "x_0d":
            xarg = np.float32(1.0)
            expect = MUST_FAIL
        elif corruption == "bias_length":
            barg = _values(rng, (n + 1,), False)
        elif corruption == "bias_float64":
            bias = _values(rng, (n,), False)
            barg = bias.astype(np.float64)
        elif corruption == "bias_2d":
            barg = _values(rng, (n, 1), False)
        elif corruption == "out_shape":
            outarg = np.empty((n + 1,) if x.ndim == 1 else (x.shape[0], n + 1), np.float32)
        elif corruption == "out_float64":
            outarg = np.empty((n,) if x.ndim == 1 else (x.shape[0], n), np.float64)
        elif corruption == "out_noncontig":
            outarg = _noncontig(np.empty((n,) if x.ndim == 1 else (x.shape[0], n), np.float32))
            if outarg.flags.c_contiguous:
                corruption, expect = "none", MUST_WORK
                outarg = None
        elif corruption == "out_is_x":
            if x.ndim == 1 and k == n and n > 0:
                outarg = xarg
            else:
                xarg = x = _values(rng, (n, n) if x.ndim == 2 and n else (max(n, 1),), special)
                if n == 0:
                    corruption, expect = "x_wrong_k", MUST_FAIL
                else:
                    w = _values(rng, (n, n), False)
                    warg = w
                    outarg = xarg
        elif corruption == "clamp_reversed":
            clamp = (1.0, -1.0)
        elif corruption == "clamp_nan":
            clamp = (0.0, math.nan)
        elif corruption == "clamp_short":
            clamp = (0.0,)
        elif corruption.startswith("isa_") or corruption == "none":
            pass
        else:
            raise AssertionError(corruption)
        out = outarg
        if p["give_out"] and outarg is None and expect == MUST_WORK:
            out = outarg = np.full((n,) if x.ndim == 1 else (x.shape[0], n), np.nan, np.float32)
        info = {"w": w.shape, "x": np.shape(x), "bias": p["bias"], "clamp": clamp, "special": special}

        def call() -> Any:
            return dense.gemv(warg, xarg, barg, outarg, clamp, isa=isa)

        def ref() -> Any:
            y = f.linear(_t(x), _t(w), None if bias is None else _t(bias)).numpy()
            return _clamp_ref(y, clamp)

    else:  # dwconv2d, pool2d
        nb, c, h, wd = p["n"], p["c"], p["h"], p["w"]
        kh, kw = p["kh"], p["kw"]
        strides, dil = p["s"], p["d"]
        pads = p["pads"]
        if op == "pool2d":  # pads must be smaller than the dilated window
            pads = tuple(v % (dil[i % 2] * ((kh, kw)[i % 2] - 1) + 1) for i, v in enumerate(pads))
        x = _values(rng, (nb, c, h, wd), special)
        w = _values(rng, (c, 1, kh, kw), False)
        bias = _values(rng, (c,), False) if p["bias"] else None
        clamp = p["clamp"]
        kind = p["kind"]
        xarg, warg, barg = x, w, bias
        sarg: Any = strides
        parg: Any = pads
        darg: Any = dil
        karg: Any = (kh, kw)
        kindarg = kind
        outarg = None
        oshape: Any = None
        hit = _array_corruption(corruption, expect, ("w", w), ("x", x))
        if hit is not None:
            (warg, xarg), corruption, expect = hit
        elif corruption == "stride_zero":
            sarg = (0, strides[1])
        elif corruption == "stride_negative":
            sarg = (strides[0], -2)
        elif corruption == "stride_float":
            sarg = (strides[0] + 0.5, strides[1])
        elif corruption == "strides_three":
            sarg = (*strides, 1)
        elif corruption == "dilation_zero":
            darg = (dil[0], 0)
        elif corruption == "dilation_negative":
            darg = (-1, dil[1])
        elif corruption == "pads_negative":
            parg = (pads[0], pads[1], -1, pads[3])
        elif corruption in HUGE_PADS:
            parg = (pads[0], HUGE_PADS[corruption], pads[2], pads[3])
        elif corruption == "pads_2**62_both":
            parg = (2**62, pads[1], 2**62, pads[3])
        elif corruption == "pads_short":
            parg = pads[:3]
        elif corruption == "window_too_big":
            if op == "pool2d":
                karg = (h + 5, kw)
                kh = h + 5
            else:
                w = _values(rng, (c, 1, h + sum(pads) + 1, kw), False)
                warg = w
                kh = h + sum(pads) + 1
            expect = EMPTY_OK
        elif corruption == "x_rank3":
            xarg = x.reshape(nb * c, h, wd)
        elif corruption == "x_empty":
            x = xarg = np.zeros((nb, c, 0, wd), np.float32)
            # only padding: dwconv2d gives bias (clamped); a pooling window with no tap in the image
            # may be refused, or give -inf (max) / NaN (avg) like the reference
            expect = MUST_WORK if op == "dwconv2d" else LENIENT
        elif corruption in ("out_shape", "out_float64", "out_noncontig"):
            oshape = "bad"
        elif corruption == "w_channels":
            warg = _values(rng, (c + 1, 1, kh, kw), False)
        elif corruption == "w_dim1":
            warg = _values(rng, (c, 2, kh, kw), False)
        elif corruption == "w_kh_zero":
            warg = np.zeros((c, 1, 0, kw), np.float32)
        elif corruption == "w_rank3":
            warg = w.reshape(c, kh, kw)
        elif corruption == "bias_length":
            barg = _values(rng, (c + 1,), False)
        elif corruption == "bias_float64":
            barg = bias = _values(rng, (c,), False).astype(np.float64)
        elif corruption == "clamp_reversed":
            clamp = (2.0, 1.0)
        elif corruption == "clamp_nan":
            clamp = (math.nan, math.nan)
        elif corruption == "clamp_short":
            clamp = (0.0,)
        elif corruption == "kind_unknown":
            kindarg = "min"
        elif corruption == "kernel_zero":
            karg = (0, kw)
        elif corruption == "kernel_negative":
            karg = (kh, -1)
        elif corruption == "kernel_float":
            karg = (kh + 0.5, kw)
        elif corruption == "pads_ge_window":
            parg = (dil[0] * (kh - 1) + 1, pads[1], pads[2], pads[3])
        elif corruption.startswith("isa_") or corruption in ("none", "isa_scalar"):
            pass
        else:
            raise AssertionError(corruption)
        oh = _conv_out(x.shape[2], kh, strides[0], pads[0], pads[2], dil[0])
        ow = _conv_out(wd, kw, strides[1], pads[1], pads[3], dil[1])
        oh, ow = max(oh, 0), max(ow, 0)
        if corruption in HUGE_PADS or corruption == "pads_2**62_both":
            expect = EMPTY_OK if nb * c == 0 else MUST_FAIL
        if expect in (MUST_WORK, LENIENT) and (oh == 0 or ow == 0 or nb * c == 0):
            expect = EMPTY_OK if op == "pool2d" or oh == 0 or ow == 0 else expect
        if oshape == "bad":
            if corruption == "out_shape":
                outarg = np.empty((nb, c, oh + 1, ow), np.float32)
            elif corruption == "out_float64":
                outarg = np.empty((nb, c, oh, ow), np.float64)
            else:
                outarg = np.empty((nb, c, oh, 2 * ow), np.float32)[..., ::2]
                if outarg.flags.c_contiguous:  # an empty out: the valid call's expectation
                    outarg, corruption = None, "none"
                    expect = EMPTY_OK if oh == 0 or ow == 0 or (op == "pool2d" and nb == 0) else MUST_WORK
        elif p["give_out"] and expect == MUST_WORK:
            outarg = np.full((nb, c, oh, ow), np.nan, np.float32)
        out = outarg
        info = {
            "x": x.shape,
            "w": getattr(warg, "shape", None),
            "kernel": karg,
            "strides": sarg,
            "pads": parg,
            "dilations": darg,
            "bias": bias is not None,
            "clamp": clamp,
            "kind": kindarg,
            "special": special,
        }
        kh_ref, kw_ref = kh, kw

        def unfold(xp: Any, fill: float) -> Any:
            """(N*C, taps, OH*OW) windows of x padded with `fill`."""
            t = f.pad(xp, (pads[1], pads[3], pads[0], pads[2]), value=fill)
            nc = t.shape[0] * t.shape[1]
            t = t.reshape(nc, 1, t.shape[2], t.shape[3])
            return f.unfold(t, (kh_ref, kw_ref), dilation=tuple(dil), stride=tuple(strides))

        if op == "dwconv2d":

            def call() -> Any:
                return dense.dwconv2d(xarg, warg, barg, outarg, sarg, parg, darg, clamp, isa=isa)

            def ref() -> Any:
                if nb * c == 0 or oh == 0 or ow == 0:
                    return np.zeros((nb, c, oh, ow))
                xp = f.pad(_t(x), (pads[1], pads[3], pads[0], pads[2]))
                y = f.conv2d(
                    xp,
                    _t(w),
                    None if bias is None else _t(bias),
                    stride=tuple(strides),
                    dilation=tuple(dil),
                    groups=c,
                ).numpy()
                return _clamp_ref(y, clamp)

        else:

            def call() -> Any:
                return dense.pool2d(xarg, kindarg, karg, sarg, parg, darg, outarg)

            def ref() -> Any:
                if nb * c == 0 or oh == 0 or ow == 0:
                    return np.zeros((nb, c, oh, ow))
                if kind == "max":
                    y = unfold(_t(x), -math.inf).max(dim=1).values
                else:
                    s = unfold(_t(x), 0.0).sum(dim=1)
                    if kind == "avg":
                        cnt = unfold(torch.ones((1, 1, x.shape[2], wd), dtype=torch.float64), 0.0).sum(dim=1)
                    else:
                        cnt = float(kh_ref * kw_ref)
                    y = s / cnt
                return y.reshape(nb, c, oh, ow).numpy()

    if corruption in ISA_CORRUPTIONS and not isa_ok:
        expect = MUST_FAIL
    if corruption in ("x_list", "x_float64") and op in ("gelu", "softmax") and x.ndim == 0:
        expect = LENIENT
    desc = (
        f"{op} corruption={corruption} isa={isa!r} {info} out={getattr(out, 'shape', None)} seed={p['seed']}"
    )
    return call, expect, ref, corruption, desc, out


def fuzz_dense(op: str, max_examples: int) -> dict[str, Any]:
    from hypothesis import strategies as st

    outcomes: Counter[str] = Counter()
    failures = Failures()
    corruptions = {
        "gelu": ELEMENTWISE_CORRUPTIONS,
        "softmax": ELEMENTWISE_CORRUPTIONS,
        "gemv": GEMV_CORRUPTIONS,
        "dwconv2d": DWCONV_CORRUPTIONS,
        "pool2d": POOL_CORRUPTIONS,
    }[op]

    strategies = {
        "seed": st.integers(0, 2**32 - 1),
        "special": st.sampled_from([False, False, True]),
        "big": st.sampled_from([False] * 7 + [True]),
        "rank": st.integers(0, 3),
        "empty": st.sampled_from([False] * 5 + [True]),
        "approximate": st.sampled_from(["none", "tanh"]),
        "n": st.integers(0, 2) if op in ("dwconv2d", "pool2d") else st.integers(0, 9),
        "k": st.integers(0, 40),
        "m": st.integers(0, 4),
        "c": st.integers(1, 8),
        "h": st.integers(1, 12),
        "w": st.integers(1, 12),
        "kh": st.integers(1, 4),
        "kw": st.integers(1, 4),
        "s": st.tuples(st.integers(1, 3), st.integers(1, 3)),
        "d": st.tuples(st.integers(1, 2), st.integers(1, 2)),
        "pads": st.tuples(*[st.integers(0, 2)] * 4),
        "bias": st.booleans(),
        "clamp": st.sampled_from([None, None, (0.0, math.inf), (0.0, 6.0), (-0.5, 0.5)]),
        "kind": st.sampled_from(["max", "avg", "avg_include_pad"]),
        "give_out": st.booleans(),
    }

    def one(p: dict[str, Any]) -> None:
        call, expect, ref, corruption, desc, out = _dense_case(op, p)
        _announce(desc)
        _judge(call, expect, ref, corruption, desc, outcomes, failures, out)

    t0 = time.perf_counter()
    _loop(corruptions, max_examples, strategies, one)
    return _summary(outcomes, failures, t0)


# --- the tests (each loop one subprocess; all started together) --------------------------------------


class _Worker:
    def __init__(self, name: str, tmp: str) -> None:
        self.name = name
        self.dir = os.path.join(tmp, name)
        os.makedirs(self.dir)
        env = dict(
            os.environ,
            PYTHONFAULTHANDLER="1",
            ZEROSKIP_CACHE_DIR=os.path.join(self.dir, "cache"),
            HYPOTHESIS_STORAGE_DIRECTORY=os.path.join(self.dir, "hypothesis"),
            OMP_NUM_THREADS="1",
        )
        self.stdout = open(os.path.join(self.dir, "stdout"), "w+")  # noqa: SIM115
        self.stderr = open(os.path.join(self.dir, "stderr"), "w+")  # noqa: SIM115
        self.start = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), name, str(EXAMPLES[name])],
            stdout=self.stdout,
            stderr=self.stderr,
            text=True,
            env=env,
            cwd=self.dir,
        )

    def result(self) -> dict[str, Any]:
        try:
            self.proc.wait(timeout=max(1.0, TIMEOUT - (time.monotonic() - self.start)))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            last = [ln for ln in self._read(self.stderr).splitlines() if ln.startswith(EXAMPLE)]
            pytest.fail(
                f"HANG: no summary within {TIMEOUT} s; last example: {last[-1:] or 'none'}", pytrace=False
            )
        out, err = self._read(self.stdout), self._read(self.stderr)
        summaries = [ln for ln in out.splitlines() if ln.startswith(SUMMARY)]
        rc = self.proc.returncode
        if rc != 0 or not summaries:
            last = [ln[len(EXAMPLE) :] for ln in err.splitlines() if ln.startswith(EXAMPLE)]
            how = f"signal {-rc}" if rc < 0 else f"exit code {rc}"
            pytest.fail(
                f"CRASH ({how}) in the fuzz worker; example in flight: {last[-1] if last else 'none'}\n"
                f"{err[-3000:]}",
                pytrace=False,
            )
        return json.loads(summaries[-1][len(SUMMARY) :])

    @staticmethod
    def _read(f: Any) -> str:
        f.flush()
        f.seek(0)
        return f.read()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.stdout.close()
        self.stderr.close()


@pytest.fixture(scope="module")
def workers() -> Any:
    with tempfile.TemporaryDirectory(prefix="zs-fuzz-kernels-") as tmp:
        started = {name: _Worker(name, tmp) for name in EXAMPLES}
        try:
            yield started
        finally:
            for w in started.values():
                w.close()


def _report(summary: dict[str, Any], expected: int) -> None:
    assert summary["examples"] >= expected // 2, summary
    _report_failures(summary)


@pytest.mark.parametrize("fmt", CONV_FORMATS)
def test_fuzz_sparse_conv2d(fmt: str, workers: dict[str, _Worker]) -> None:
    name = f"conv2d-{fmt}"
    _report(workers[name].result(), EXAMPLES[name])


@pytest.mark.parametrize("op", DENSE_OPS)
def test_fuzz_dense_kernels(op: str, workers: dict[str, _Worker]) -> None:
    _report(workers[op].result(), EXAMPLES[op])


def _worker(argv: list[str]) -> None:
    import resource
    import warnings

    warnings.simplefilter("ignore")
    resource.setrlimit(resource.RLIMIT_AS, (AS_CAP, AS_CAP))
    name, count = argv[0], int(argv[1])
    _torch()
    import zeroskip.dense
    import zeroskip.kernels  # noqa: F401

    if name.startswith("conv2d-"):
        summary = fuzz_conv2d(name.split("-", 1)[1], count)
    else:
        summary = fuzz_dense(name, count)
    summary["what"] = name
    sys.stdout.write(SUMMARY + json.dumps(summary) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    _worker(sys.argv[1:])
