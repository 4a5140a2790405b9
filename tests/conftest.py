"""Shared test helpers. numpy + pytest only: these tests also run on an arm64 Python under qemu."""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import pytest

# Tolerances per dtype, in one place. A float32 dot product of length K accumulates rounding of about
# K * eps * sum(|a||x|); the kernels sum in a different order than numpy, so bound the error by that.
TOLERANCE = {
    np.float32: {"rel_to_abs_sum": 4 * np.finfo(np.float32).eps, "abs": 1e-30},
    # Dense elementwise kernels (tests/test_dense_kernels.py), float32, against float64 references.
    # gelu (erf form) = h + h erf(x / sqrt 2), h = x / 2, with a float32 rational erf: |error| within
    # rel |gelu| + erf_abs |h|. erf_abs covers float32 evaluation without FMA (the scalar build on x86).
    "gelu_erf": {"rel": 16 * np.finfo(np.float32).eps, "erf_abs": 5e-7},
    # gelu (tanh form): (8 + 2 |2u|) eps relative, 2u = 2 sqrt(2/pi) (x + 0.044715 x^3) (the argument of
    # exp, whose float32 rounding the reference does not have); absolute 1e-37 near underflow.
    "gelu_tanh": {
        "rel": 8 * np.finfo(np.float32).eps,
        "rel_per_arg": 2 * np.finfo(np.float32).eps,
        "abs": 1e-37,
    },
    # softmax: (8 + |x - max| + cols / 64) eps relative per output (exp's argument rounding, the row
    # sum's rounding), 1e-37 absolute.
    "softmax": {
        "rel": 8 * np.finfo(np.float32).eps,
        "rel_per_arg": np.finfo(np.float32).eps,
        "rel_per_col": np.finfo(np.float32).eps / 64,
        "abs": 1e-37,
    },
    # CUDA kernels (tests/test_cuda.py): float32 accumulation (bounded like float32 above, by
    # rel_to_abs_sum * (K + 1) * sum |w||x|), then one rounding of y to its dtype: half an ulp relative
    # (out_rel) and the dtype's smallest subnormal absolute.
    "cuda": {
        "float32": {"out_rel": 2.0**-24, "abs": 1e-30},
        "float16": {"out_rel": 2.0**-11, "abs": 2.0**-24},
        "bfloat16": {"out_rel": 2.0**-8, "abs": 2.0**-133},
    },
}

# Whole models against onnxruntime (outputs of unit scale; the two runtimes sum in different orders
# and zeroskip folds BatchNormalization into Conv weights).
MODEL_TOLERANCE = {np.float32: {"rtol": 1e-3, "atol": 1e-4}}


def reference_spmm(
    w: np.ndarray, x: np.ndarray, bias: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """float64 numpy result of w @ x (+ bias) and the error bound a float32 kernel must meet."""
    w64, x64 = w.astype(np.float64), x.astype(np.float64)
    y = w64 @ x64
    scale = np.abs(w64) @ np.abs(x64)
    if bias is not None:
        y = y + bias.astype(np.float64)[:, None]
        scale = scale + np.abs(bias.astype(np.float64))[:, None]
    k = max(w.shape[1], 1)
    tol = TOLERANCE[np.float32]
    return y, tol["rel_to_abs_sum"] * (k + 1) * scale + tol["abs"]


def assert_spmm_close(
    y: np.ndarray, w: np.ndarray, x: np.ndarray, bias: np.ndarray | None = None, what: str = ""
) -> None:
    ref, bound = reference_spmm(w, x, bias)
    assert y.shape == ref.shape, f"{what}: shape {y.shape} != {ref.shape}"
    assert y.dtype == np.float32, f"{what}: dtype {y.dtype}"
    err = np.abs(y.astype(np.float64) - ref)
    bad = np.argwhere(~(err <= bound))
    if bad.size:
        i, j = bad[0]
        raise AssertionError(
            f"{what}: {len(bad)} wrong outputs; first at [{i}, {j}]: got {y[i, j]!r}, expected {ref[i, j]!r} "
            f"(bound {bound[i, j]:.3g})"
        )


def sparse_weight(rng: np.random.Generator, m: int, k: int, sparsity: float) -> np.ndarray:
    """Random float32 weight with exactly round(sparsity * m * k) zeros at random places."""
    w = rng.standard_normal((m, k)).astype(np.float32)
    zeros = round(sparsity * m * k)
    if zeros:
        w.ravel()[rng.permutation(m * k)[:zeros]] = 0.0
    return w


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(scope="session", autouse=True)
def _private_tuning_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Sessions the tests load keep their tuning choices in a folder of this test run, not the user's
    cache (tests that check the cache pass their own folder)."""
    old = os.environ.get("ZEROSKIP_CACHE_DIR")
    os.environ["ZEROSKIP_CACHE_DIR"] = str(tmp_path_factory.mktemp("zeroskip-cache"))
    yield
    if old is None:
        os.environ.pop("ZEROSKIP_CACHE_DIR", None)
    else:
        os.environ["ZEROSKIP_CACHE_DIR"] = old


def conv_ref(x, w, bias, strides, pads, dilations):
    """float64 direct convolution (zero padding, groups 1) and its error bound (conftest's scheme).

    w is (Cout, C, KH, KW). Each window tap (i, j) adds w[:, :, i, j] times a strided slice of the
    padded input.
    """
    b, c, h, wd = x.shape
    cout, _, kh, kw = w.shape
    (sh, sw), (pt, pl, pb, pr), (dh, dw) = strides, pads, dilations
    oh = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1
    ow = (wd + pl + pr - dw * (kw - 1) - 1) // sw + 1
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    ref = np.zeros((b, cout, oh, ow))
    scale = np.zeros((b, cout, oh, ow))
    for i in range(kh):
        for j in range(kw):
            win = xp[:, :, i * dh : i * dh + (oh - 1) * sh + 1 : sh, j * dw : j * dw + (ow - 1) * sw + 1 : sw]
            wij = w[:, :, i, j].astype(np.float64)
            ref += np.einsum("oc,bchw->bohw", wij, win)
            scale += np.einsum("oc,bchw->bohw", np.abs(wij), np.abs(win))
    if bias is not None:
        ref += bias.astype(np.float64)[None, :, None, None]
        scale += np.abs(bias.astype(np.float64))[None, :, None, None]
    tol = TOLERANCE[np.float32]
    return ref, tol["rel_to_abs_sum"] * (c * kh * kw + 1) * scale + tol["abs"]
