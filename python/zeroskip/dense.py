"""Dense float32 kernels for the ops torch runs slowly on small CPUs (numpy only, no torch).

    y = dense.gelu(x)                        # erf form; approximate="tanh" for the tanh form
    y = dense.softmax(x)                     # along the last dim
    y = dense.gemv(w, x, bias, clamp=(0, inf))   # Linear at batch 1..few: x (K,) or (M, K), w (N, K)
    p = dense.pack_linear(w, bias)           # Linear at any batch: w (N, K) packed once for the GEMM kernel
    y = dense.linear(p, x, activation="gelu")    # x (..., K) -> (..., N); clamp=(lo, hi) for Relu / Clip
    c = dense.pack_conv(w4, bias)            # Conv2d weight (Cout, C, KH, KW) packed once (groups 1)
    y = dense.conv2d(c, x, (3, 3), pads=(1, 1, 1, 1), clamp=(0, 6))   # NCHW, through the same GEMM
    y = dense.conv2d(dense.pack_linear(w4.reshape(cout, c), bias), x, (1, 1))  # 1x1, small maps
    y = dense.dwconv2d(x, w, bias, strides=(2, 2), pads=(1, 1, 1, 1), clamp=(0, 6))  # depthwise, NCHW
    y = dense.pool2d(x, "max", (3, 3), strides=(2, 2), pads=(1, 1, 1, 1))  # max / avg pooling, NCHW
    o = dense.attention(q, kt, v, mask, scale=0.125)  # softmax(scale q @ kt + mask) @ v per head
    y = dense.layernorm(x, w, b, residual=r)  # layer_norm(x + r) over the last dim, * w + b

Arrays must be float32 and C-contiguous (attention: any strides; nothing is copied or converted).
`out`, if given, must have the result's shape; gelu, softmax and layernorm may run in place (out=x).
`isa` forces one compiled ISA (see `isas()`); default: the fastest this CPU runs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from zeroskip import _C, _args
from zeroskip.errors import InputError, KernelError

__all__ = [
    "attention",
    "conv2d",
    "dwconv2d",
    "gelu",
    "gemv",
    "isas",
    "layernorm",
    "linear",
    "pack_conv",
    "pack_linear",
    "pool2d",
    "softmax",
]


def isas() -> list[dict[str, Any]]:
    """ISAs the dense kernels are compiled for: {"isa", "runnable", "default"} each."""
    return _C.dense_isas()


def _array(a: Any, what: str) -> np.ndarray:
    if isinstance(a, np.ndarray):
        return a
    try:
        return np.asarray(a)
    except Exception as e:
        raise InputError(f"{what} is not an array: {e}") from None


def _call(name: str, fn: Any, *args: Any) -> None:
    try:
        fn(*args)
    except _C.KernelError as e:
        raise KernelError(f"{name}: {_args.one_line(e)}") from None
    except (ValueError, TypeError) as e:
        raise InputError(f"{name}: {_args.one_line(e)}") from None


def gelu(
    x: Any, out: np.ndarray | None = None, approximate: str = "none", *, isa: str | None = None
) -> np.ndarray:
    """GELU elementwise: 0.5 x (1 + erf(x / sqrt 2)), or the tanh form (approximate="tanh")."""
    xa = _array(x, "x")
    y = np.empty_like(xa, dtype=np.float32) if out is None else _args.given_out(out, "gelu")
    _call("gelu", _C.gelu, xa, y, approximate, isa)
    return y


def softmax(x: Any, out: np.ndarray | None = None, *, isa: str | None = None) -> np.ndarray:
    """Softmax along the last dim (NaN rows for rows holding NaN, +inf, or only -inf, like torch)."""
    xa = _array(x, "x")
    y = np.empty_like(xa, dtype=np.float32) if out is None else _args.given_out(out, "softmax")
    _call("softmax", _C.softmax, xa, y, isa)
    return y


def gemv(
    w: Any,
    x: Any,
    bias: Any = None,
    out: np.ndarray | None = None,
    clamp: tuple[float, float] | None = None,
    *,
    isa: str | None = None,
) -> np.ndarray:
    """Dense Linear y = clamp(x @ w.T + bias): w (N, K) row-major, x (K,) -> (N,) or (M, K) -> (M, N)."""
    wa, xa = _array(w, "w"), _array(x, "x")
    if bias is not None:
        bias = _array(bias, "bias")
    if out is None:
        n = wa.shape[0] if wa.ndim == 2 else 0
        y = _args.output((n,) if xa.ndim == 1 else (xa.shape[0] if xa.ndim else 0, n), "gemv")
    else:
        y = _args.given_out(out, "gemv")
    lo, hi = _args.clamp_pair(clamp)
    _call("gemv", _C.gemv, wa, xa, bias, y, lo, hi, isa)
    return y


def pack_linear(w: Any, bias: Any = None, *, isa: str | None = None) -> Any:
    """w (N, K) float32 and bias (N,) or None, copied once into the GEMM kernel's panel layout for one
    ISA (default: the fastest this CPU runs). The result has .shape (N, K), .isa and .nbytes."""
    return _pack("pack_linear", _C.DenseWeight, _array(w, "w"), bias, isa)


def _pack(name: str, cls: Any, w2: np.ndarray, bias: Any, isa: str | None) -> Any:
    try:
        return cls(w2, None if bias is None else _array(bias, "bias"), isa)
    except _C.KernelError as e:
        raise KernelError(f"{name}: {_args.one_line(e)}") from None
    except (ValueError, TypeError) as e:
        raise InputError(f"{name}: {_args.one_line(e)}") from None


_ACTIVATIONS = {"": "", "none": "", "gelu": "gelu", "gelu_tanh": "gelu_tanh"}


def linear(
    packed: Any,
    x: Any,
    out: np.ndarray | None = None,
    clamp: tuple[float, float] | None = None,
    activation: str = "",
) -> np.ndarray:
    """Dense Linear on a packed weight (`pack_linear`): y = clamp(act(x @ w.T + bias)) for x (..., K),
    returning (..., N). activation: "" (none), "gelu" (erf form) or "gelu_tanh"; clamp=(lo, hi)
    fuses Relu / Clip after it."""
    if not isinstance(packed, _C.DenseWeight):
        raise InputError(f"linear: packed must come from dense.pack_linear, got {type(packed).__name__}")
    if activation not in _ACTIVATIONS:
        raise InputError(f"linear: activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
    xa = _array(x, "x")
    n = packed.shape[0]
    if out is None:
        y = _args.output((*xa.shape[:-1], n) if xa.ndim else (0,), "linear")
    else:
        y = _args.given_out(out, "linear")
    lo, hi = _args.clamp_pair(clamp)
    _call("linear", _C.gemm, packed, xa, y, lo, hi, _ACTIVATIONS[activation])
    return y


def pack_conv(w: Any, bias: Any = None, *, isa: str | None = None) -> Any:
    """A group-1 Conv2d weight (Cout, C, KH, KW) float32 and bias (Cout,) or None, packed once for the
    weight-left GEMM of one ISA. The result has .shape (Cout, C*KH*KW), .isa and .nbytes."""
    wa = _array(w, "w")
    if wa.ndim != 4:
        raise InputError(f"pack_conv: w must be 4-D (Cout, C, KH, KW), got shape {wa.shape}")
    return _pack(
        "pack_conv", _C.DenseConvWeight, np.ascontiguousarray(wa).reshape(wa.shape[0], -1), bias, isa
    )


def conv2d(
    packed: Any,
    x: Any,
    kernel: tuple[int, int],
    strides: tuple[int, int] = (1, 1),
    pads: tuple[int, int, int, int] = (0, 0, 0, 0),
    dilations: tuple[int, int] = (1, 1),
    out: np.ndarray | None = None,
    clamp: tuple[float, float] | None = None,
    residual: Any = None,
) -> np.ndarray:
    """Conv2d, NCHW, groups 1, zero padding, with a weight from `pack_conv`: y = clamp(conv(x, w) + bias
    [+ residual]) for x (N, C, H, W); kernel (KH, KW) as packed. Output (N, Cout, OH, OW) as for
    dwconv2d; residual (a residual connection) has the output's shape and is not `out` itself.
    A 1x1 conv of stride 1 without padding may also take `pack_linear(w.reshape(Cout, C), bias)`:
    the output channels then fill the vectors, faster on maps of few positions (7x7, 14x14)."""
    if not isinstance(packed, (_C.DenseConvWeight, _C.DenseWeight)):
        raise InputError(
            f"conv2d: packed must come from dense.pack_conv (or pack_linear for a 1x1 conv), "
            f"got {type(packed).__name__}"
        )
    xa = _array(x, "x")
    win, shape = _window("conv2d", xa, kernel, strides, pads, dilations, packed.shape[0])
    y = _args.output(shape, "conv2d") if out is None else _args.given_out(out, "conv2d")
    lo, hi = _args.clamp_pair(clamp)
    ra = None if residual is None else _array(residual, "residual")
    _call("conv2d", _C.conv2d_dense, packed, xa, y, lo, hi, *win, ra)
    return y


def _window(
    name: str, xa: np.ndarray, kernel: Any, strides: Any, pads: Any, dilations: Any, channels: int | None
) -> tuple[tuple[tuple[int, ...], ...], tuple[int, ...]]:
    """The checked window ((KH, KW), strides, pads (top, left, bottom, right), dilations) of a 2-D NCHW
    op on x, and its output shape (N, channels or x's C, OH, OW); (0,) for an x that is not 4-D (the
    binding then names the problem)."""
    kh, kw = _args.ints(kernel, 2, f"{name}: kernel", 1)
    sh, sw = _args.ints(strides, 2, f"{name}: strides", 1)
    pt, pl, pb, pr = _args.ints(pads, 4, f"{name}: pads", 0, "(top, left, bottom, right)")
    dh, dw = _args.ints(dilations, 2, f"{name}: dilations", 1)
    shape: tuple[int, ...] = (0,)
    if xa.ndim == 4:
        n, c, h, wd = xa.shape
        oh, ow = _out_size(h, kh, sh, pt, pb, dh), _out_size(wd, kw, sw, pl, pr, dw)
        shape = (n, c if channels is None else channels, oh, ow)
    return ((kh, kw), (sh, sw), (pt, pl, pb, pr), (dh, dw)), shape


def _out_size(n: int, k: int, stride: int, pad0: int, pad1: int, dil: int) -> int:
    span = dil * (k - 1) + 1
    return 0 if n + pad0 + pad1 < span else (n + pad0 + pad1 - span) // stride + 1


def dwconv2d(
    x: Any,
    w: Any,
    bias: Any = None,
    out: np.ndarray | None = None,
    strides: tuple[int, int] = (1, 1),
    pads: tuple[int, int, int, int] = (0, 0, 0, 0),
    dilations: tuple[int, int] = (1, 1),
    clamp: tuple[float, float] | None = None,
    *,
    isa: str | None = None,
) -> np.ndarray:
    """Depthwise 2-D convolution (groups = C), NCHW: y = clamp(conv(x, w) + bias).

    x (N, C, H, W), w (C, 1, KH, KW), bias (C,) or None; zero padding pads = (top, left, bottom,
    right). Output (N, C, OH, OW), OH = (H + top + bottom - dh (KH - 1) - 1) // sh + 1 (likewise OW;
    0 when the window does not fit). clamp=(lo, hi) fuses Relu / ReLU6.
    """
    xa, wa = _array(x, "x"), _array(w, "w")
    if bias is not None:
        bias = _array(bias, "bias")
    sh, sw = _args.ints(strides, 2, "dwconv2d: strides", 1)
    pt, pl, pb, pr = _args.ints(pads, 4, "dwconv2d: pads", 0, "(top, left, bottom, right)")
    dh, dw = _args.ints(dilations, 2, "dwconv2d: dilations", 1)
    if out is None:
        if xa.ndim != 4 or wa.ndim != 4:
            shape: tuple[int, ...] = (0,)  # let the binding name the problem
        else:
            n, c, h, wd = xa.shape
            kh, kw = wa.shape[2], wa.shape[3]
            shape = (n, c, _out_size(h, kh, sh, pt, pb, dh), _out_size(wd, kw, sw, pl, pr, dw))
        y = _args.output(shape, "dwconv2d")
    else:
        y = _args.given_out(out, "dwconv2d")
    lo, hi = _args.clamp_pair(clamp)
    _call("dwconv2d", _C.dwconv, xa, wa, bias, y, (sh, sw), (pt, pl, pb, pr), (dh, dw), lo, hi, isa)
    return y


def pool2d(
    x: Any,
    kind: str,
    kernel: tuple[int, int],
    strides: tuple[int, int] = (1, 1),
    pads: tuple[int, int, int, int] = (0, 0, 0, 0),
    dilations: tuple[int, int] = (1, 1),
    out: np.ndarray | None = None,
) -> np.ndarray:
    """2-D pooling, NCHW float32: kind "max" (NaN propagates), "avg" (divides by the taps inside the
    image) or "avg_include_pad" (by KH * KW). Padding (top, left, bottom, right) is never read and
    must be smaller than the dilated window; output (N, C, OH, OW) as for dwconv2d."""
    xa = _array(x, "x")
    win, shape = _window("pool2d", xa, kernel, strides, pads, dilations, None)
    y = _args.output(shape, "pool2d") if out is None else _args.given_out(out, "pool2d")
    _call("pool2d", _C.pool2d, xa, y, kind, *win)
    return y


def attention(
    q: Any,
    kt: Any,
    v: Any,
    mask: Any = None,
    out: np.ndarray | None = None,
    *,
    scale: float = 1.0,
    isa: str | None = None,
) -> np.ndarray:
    """softmax(scale * q @ kt + mask) @ v for each (batch, head): q (B, H, Sq, D), kt (B, H, D, Sk),
    v (B, H, Sk, Dv), mask None or broadcastable to (B, H, Sq, Sk); returns (B, H, Sq, Dv). Operands
    may be any strided views (a transposed K, a broadcast mask): they are read in place. `out`, if
    given, must be (B, H, Sq, Dv) float32 with a contiguous last dim and share no memory with the rest."""
    qa, ka, va = _array(q, "q"), _array(kt, "kt"), _array(v, "v")
    m = None
    if mask is not None:
        m = _array(mask, "mask")
        if qa.ndim == 4 and ka.ndim == 4:
            want = (*qa.shape[:3], ka.shape[3])
            try:
                m = np.broadcast_to(m, want)
            except ValueError:
                raise InputError(f"attention: mask of shape {m.shape} does not broadcast to {want}") from None
    if out is None:
        if qa.ndim != 4 or va.ndim != 4:
            raise InputError(f"attention: q and v must be 4-D, got shapes {qa.shape} and {va.shape}")
        y = np.empty((*qa.shape[:3], va.shape[3]), dtype=np.float32)
    else:
        y = _args.given_out(out, "attention")
    _call("attention", _C.attention, qa, ka, va, m, y, float(scale), isa)
    return y


def layernorm(
    x: Any,
    scale: Any,
    bias: Any = None,
    *,
    residual: Any = None,
    eps: float = 1e-5,
    out: np.ndarray | None = None,
    isa: str | None = None,
) -> np.ndarray:
    """Layer normalisation over the last dim of x (+ residual, same shape): (z - mean) / sqrt(var + eps)
    * scale + bias, with scale and bias of the last dim's length."""
    xa, sa = _array(x, "x"), _array(scale, "scale")
    ra = None if residual is None else _array(residual, "residual")
    ba = None if bias is None else _array(bias, "bias")
    y = np.empty_like(xa, dtype=np.float32) if out is None else _args.given_out(out, "layernorm")
    _call("layernorm", _C.layernorm, xa, ra, sa, ba, y, float(eps), isa)
    return y
