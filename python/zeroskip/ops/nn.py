"""Neural-network ops: MatMul, Gemm, Conv, ConvTranspose, pooling, normalisation, softmax.

MatMul, Gemm and Conv are plain functions of their inputs (no per-node state): the scheduler may
swap in sparse kernels for them node by node. Their common cases are one torch call.
"""

from __future__ import annotations

import contextvars
import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from zeroskip.errors import ModelError, UnsupportedOpError
from zeroskip.ops import cpu_kernels
from zeroskip.ops._registry import register
from zeroskip.ops._select import Offer

Tensor = torch.Tensor

_NOTSET = ("NOTSET", b"NOTSET")
_CONV = (None, None, None, F.conv1d, F.conv2d, F.conv3d)
_CONV_T = (None, None, None, F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)
_MAX_POOL = (None, None, None, F.max_pool1d, F.max_pool2d, F.max_pool3d)
_AVG_POOL = (None, None, None, F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)
# ONNX element type codes a stash_type may name.
_STASH = {1: torch.float32, 10: torch.float16, 11: torch.float64, 16: torch.bfloat16}


def _str(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else v


def _spatial_fn(table: tuple[Any, ...], x: Tensor, op: str) -> Any:
    r = x.dim()
    fn = table[r] if r < len(table) else None
    if fn is None:
        raise UnsupportedOpError(f"{op}: input of rank {r}: only 1-D, 2-D and 3-D spatial inputs (rank 3-5)")
    return fn


def _torch_pad(begin: list[int], end: list[int]) -> list[int]:
    """ONNX [x1_begin.., x1_end..] as F.pad's (last_begin, last_end, ..., first_begin, first_end)."""
    out: list[int] = []
    for b, e in zip(reversed(begin), reversed(end)):
        out += (b, e)
    return out


def _check_window(op: str, spatial: int, pads: Any, strides: Any, dilations: Any) -> None:
    """Attribute lengths against the number of spatial dims (a silent zip would use part of them)."""
    for name, value, want in (
        ("pads", pads, 2 * spatial),
        ("strides", strides, spatial),
        ("dilations", dilations, spatial),
    ):
        if value and len(value) != want:
            raise ValueError(f"{op}: {name} has {len(value)} values; a {spatial}-D {op} needs {want}")


def _auto_pads(
    auto_pad: str, sizes: Any, kernel: Any, strides: Any, dilations: Any, op: str
) -> tuple[list[int], list[int]]:
    """Begin/end pads for auto_pad SAME_UPPER / SAME_LOWER / VALID (output = ceil(in / stride))."""
    n = len(sizes)
    if auto_pad == "VALID":
        return [0] * n, [0] * n
    if auto_pad not in ("SAME_UPPER", "SAME_LOWER"):
        raise UnsupportedOpError(
            f"{op}: auto_pad={auto_pad!r} (expected NOTSET, SAME_UPPER, SAME_LOWER or VALID)"
        )
    lower = auto_pad == "SAME_LOWER"
    begin, end = [], []
    for i in range(n):
        s = strides[i] if strides else 1
        d = dilations[i] if dilations else 1
        out = -(-sizes[i] // s)
        total = max(0, (out - 1) * s + (kernel[i] - 1) * d + 1 - sizes[i])
        b = total - total // 2 if lower else total // 2
        begin.append(b)
        end.append(total - b)
    return begin, end


# --------------------------------------------------------------------------------------------
# MatMul / Gemm


def _matmul_out(out: Tensor, A: Tensor, B: Tensor) -> Tensor:
    return torch.matmul(A, B, out=out)


@register("MatMul", since=1, out=_matmul_out, fresh=True)
def MatMul(A: Tensor, B: Tensor) -> Tensor:
    return torch.matmul(A, B)


def _int_scalar(v: float, name: str) -> int:
    if v != int(v):
        raise UnsupportedOpError(f"Gemm: {name}={v} with integer inputs (only whole-number {name})")
    return int(v)


def _gemm_out(
    out: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor | None = None,
    alpha: float = 1.0,
    beta: float = 1.0,
    transA: int = 0,
    transB: int = 0,
) -> Tensor:
    if transA:
        A = A.t()
    if transB:
        B = B.t()
    if not A.is_floating_point():
        alpha, beta = _int_scalar(alpha, "alpha"), _int_scalar(beta, "beta")
    if C is None or beta == 0:
        torch.mm(A, B, out=out)
        if alpha != 1:
            out.mul_(alpha)
        return out
    return torch.addmm(C, A, B, beta=beta, alpha=alpha, out=out)


@register("Gemm", since=7, out=_gemm_out, fresh=True)
def Gemm(
    A: Tensor,
    B: Tensor,
    C: Tensor | None = None,
    alpha: float = 1.0,
    beta: float = 1.0,
    transA: int = 0,
    transB: int = 0,
) -> Tensor:
    if transB and not transA and alpha == 1 and beta == 1 and (C is None or C.dim() == 1):
        return F.linear(A, B, C)  # the nn.Linear export: one addmm against B's transposed view
    if transA:
        A = A.t()
    if transB:
        B = B.t()
    if not A.is_floating_point():
        alpha, beta = _int_scalar(alpha, "alpha"), _int_scalar(beta, "beta")
    if C is None or beta == 0:
        # beta == 0 drops C, as ONNX Runtime does (a NaN or inf in C does not reach Y).
        y = torch.mm(A, B)
        return y.mul_(alpha) if alpha != 1 else y
    return torch.addmm(C, A, B, beta=beta, alpha=alpha)


def _gemm_out_v1(out: Tensor, A: Tensor, B: Tensor, C: Tensor, broadcast: int = 0, **attrs: Any) -> Tensor:
    return _gemm_out(out, A, B, C, **attrs)


@register("Gemm", since=1, out=_gemm_out_v1, fresh=True)
def Gemm_1(
    A: Tensor,
    B: Tensor,
    C: Tensor,
    alpha: float = 1.0,
    beta: float = 1.0,
    broadcast: int = 0,
    transA: int = 0,
    transB: int = 0,
) -> Tensor:
    # Opsets 1-6: `broadcast` only says whether C may be smaller than (M, N); a valid C gives
    # the same result broadcast or not.
    return Gemm(A, B, C, alpha=alpha, beta=beta, transA=transA, transB=transB)


# --------------------------------------------------------------------------------------------
# Conv / ConvTranspose


def _mkldnn_conv(
    W: Tensor,
    B: Tensor | None,
    shape: tuple[int, ...],
    stride: tuple[int, ...],
    pad: tuple[int, ...],
    dil: tuple[int, ...],
    group: int,
    activation: str,
    bounds: list[float],
) -> Any:
    """oneDNN's convolution with the weight reordered once for this input shape and the activation
    as a post-op, on channels-last activations (which then flow on to the next conv); None when this
    torch build lacks it. (`_conv_prepare` checks it against torch before using it.)"""
    mk = getattr(torch.ops, "mkldnn", None)
    if mk is None or W.dtype != torch.float32 or not hasattr(mk, "_convolution_pointwise"):
        return None
    attr = {"": "none", "relu": "relu", "clip": "hardtanh"}[activation]
    scalars = bounds if activation == "clip" else []
    p, s, d = list(pad), list(stride), list(dil)
    try:
        wp = mk._reorder_convolution_weight(W, p, s, d, group, list(shape))
    except (RuntimeError, AttributeError):
        return None
    conv, cl = mk._convolution_pointwise, torch.channels_last

    def run(X: Tensor, *_: Any) -> Tensor:
        return conv(X.contiguous(memory_format=cl), wp, B, p, s, d, group, attr, scalars, "")

    binary = getattr(conv, "binary", None)

    def with_residual(lo: float, hi: float) -> Any:
        """This conv as a zeroskip::Conv step with residual=1: (x, w, b, r) -> clamp(conv(x) + r, lo,
        hi), r added by oneDNN's binary "add" post-op, then Relu as a post-op too; any other clamp
        (which this torch's binary fusion does not take) in place after it (see add_residual)."""
        relu = lo == 0.0 and hi == math.inf
        clamp = not relu and (lo > -math.inf or hi < math.inf)
        unary, algo = ("relu", "") if relu else (None, None)

        def run_r(X: Tensor, _w: Any = None, _b: Any = None, r: Any = None, *_: Any) -> Tensor:
            x, other = X.contiguous(memory_format=cl), r.contiguous(memory_format=cl)
            y = binary(x, other, wp, B, p, s, d, group, "add", None, unary, [], algo)
            return y.clamp_(lo, hi) if clamp else y

        return run_r

    if binary is not None:
        run.with_residual = with_residual
    return run


# Set while a plan is built with NCHW kernels only (see plan.Program's layout choice): oneDNN's
# channels-last path is not offered, and the NCHW GEMM and depthwise kernels are offered everywhere.
NCHW_ONLY: contextvars.ContextVar[bool] = contextvars.ContextVar("zeroskip_nchw_only", default=False)
# The candidate whose activations flow on channels-last (the layout choice looks for it).
ONEDNN = "dense/onednn"


_ACTIVATION_ATTRS = ("activation", "clip_min", "clip_max")


def _act_bounds(attrs: Mapping[str, Any]) -> tuple[float, float] | None:
    """The clamp a fused activation applies (Relu: 0, inf; Clip: its bounds), None without one."""
    activation = attrs.get("activation", "")
    if not activation:
        return None
    if activation == "clip":
        return attrs.get("clip_min", -math.inf), attrs.get("clip_max", math.inf)
    return 0.0, math.inf


def _conv_prepare(shapes: list[Any], consts: list[Any], **attrs: Any) -> Any:
    """A 2-D Conv with constant weights, bound once per input shape: one torch call per run. With
    residual=1 (zeroskip::Conv's fused Add), the candidates compute the plain conv and the chosen one
    is finished by the addition of the fourth input and the activation, in its output."""
    if attrs.pop("residual", 0):
        act = {k: attrs.pop(k) for k in _ACTIVATION_ATTRS if k in attrs}
        if len(shapes) < 4 or shapes[3] is None:
            return None
        offer = _conv_prepare(shapes[:3], consts[:3], **attrs)
        if offer is None:
            return None
        lo, hi = _act_bounds(act) or (-math.inf, math.inf)
        offer.finish = lambda fn: cpu_kernels.add_residual(fn, lo, hi)
        return offer
    xs, W = shapes[0], consts[1]
    B = consts[2] if len(consts) > 2 else None
    if xs is None or W is None or len(xs) != 4 or (len(shapes) > 2 and shapes[2] is not None and B is None):
        return None
    auto_pad, pads, strides, dilations = (attrs.get(k) for k in ("auto_pad", "pads", "strides", "dilations"))
    group, activation = attrs.get("group", 1), attrs.get("activation", "")
    clip_min, clip_max = attrs.get("clip_min", -math.inf), attrs.get("clip_max", math.inf)
    if auto_pad is not None and auto_pad not in _NOTSET:
        begin, end = _auto_pads(_str(auto_pad), xs[2:], W.shape[2:], strides, dilations, "Conv")
    elif pads:
        begin, end = list(pads[:2]), list(pads[2:])
    else:
        begin = end = [0, 0]
    if begin != end:
        return None
    stride, dil, pad = tuple(strides or (1, 1)), tuple(dilations or (1, 1)), tuple(begin)
    conv = F.conv2d
    bounds = _act_bounds(attrs)
    if bounds is not None:
        lo, hi = bounds

        def plain(X: Tensor, *_: Any) -> Tensor:
            return conv(X, W, B, stride, pad, dil, group).clamp_(lo, hi)

    else:

        def plain(X: Tensor, *_: Any) -> Tensor:
            return conv(X, W, B, stride, pad, dil, group)

    dense = [("dense/torch", plain)]
    onednn = None
    if not NCHW_ONLY.get():
        onednn = _mkldnn_conv(W, B, tuple(xs), stride, pad, dil, group, activation, [clip_min, clip_max])
    if onednn is not None:
        dense.append((ONEDNN, onednn))
    # The depthwise kernel is NCHW while oneDNN's path hands on channels-last tensors: in a network
    # where both run, the layout copies between them cost more than the kernel saves (MobileNet-v2,
    # batch 1: 20 ms with oneDNN alone, 28 ms mixed). So it is offered where oneDNN is absent, or
    # where the conv is so small that torch's fixed cost per call (~100 us) is most of its time.
    # Multiply-adds: N * Cout * (C / group) * KH * KW per output pixel (~ an input pixel / stride).
    macs = math.prod(xs) * W.shape[0] // group * W.shape[2] * W.shape[3] // max(stride[0] * stride[1], 1)
    if onednn is None or macs < _SMALL_CONV_MACS:
        dw = cpu_kernels.depthwise_conv(W, B, tuple(xs), stride, tuple(begin + end), dil, group, bounds)
        if dw is not None:
            dense.append(("dense/dwconv", dw))
    geometry = ((W.shape[2], W.shape[3]), stride, (pad[0], pad[1], pad[0], pad[1]), dil)
    if group == 1:
        small = cpu_kernels.conv_dense_csr(W, B, tuple(xs), *geometry, bounds)
        if small is not None:
            dense.append(("dense/csr-im2col", small))
        # The NCHW GEMM likewise: beside oneDNN's channels-last convs it wins node by node and loses
        # overall (MobileNet-v2 at batch 1: 25.3 ms mixed against 21-22 without it). A plan with
        # NCHW kernels only is built and timed against the mixed one (plan.Program), which keeps
        # the faster: MobileNet-v2 17.2 ms NCHW, ResNet-18 56 ms mixed against 66 ms NCHW. Beside
        # oneDNN it is offered up to _SMALL_GEMM_CONV_MACS: a small CNN's 3x3 convs (0.3-0.45M
        # multiply-adds) run 2-3x faster through it than through oneDNN or torch, while ResNet-18's
        # downsample convs (6.4M), fed channels-last by oneDNN, lost more to copying their inputs
        # (1.3 ms in the network against 0.24 alone) than the GEMM saved.
        if onednn is None or macs < _SMALL_GEMM_CONV_MACS:
            gemm = cpu_kernels.conv_dense_gemm(W, B, tuple(xs), *geometry, bounds)
            if gemm is not None:
                dense.append(("dense/gemm", gemm))
            # 1x1 convs on maps of few positions (MobileNet-v2's 14x14 and 7x7 blocks): the GEMM with
            # the output channels in the vectors. 960->320 on 7x7, 2 threads: 189 -> 154 us at batch 1,
            # 1520 -> 1079 at batch 8; it loses on larger maps (24->144 on 56x56: 134 against 296).
            if xs[2] * xs[3] <= _CHANNEL_VECTOR_MAX_POSITIONS:
                cv = cpu_kernels.conv_dense_gemm(W, B, tuple(xs), *geometry, bounds, channel_vectors=True)
                if cv is not None:
                    dense.append(("dense/gemm-cv", cv))
    # Sparse: group-1 2-D convs, the weight as Cout x (C * KH * KW) (1x1 convs run as SpMM on the
    # input itself, others on its im2col); depthwise and grouped convs stay dense.
    sparse_ok = group == 1 and W.dtype == torch.float32 and (B is None or B.dtype == torch.float32)
    return Offer(
        probe_shape=tuple(xs),
        dense=dense,
        config=("conv", tuple(W.shape), *geometry, group, activation, bounds, B is not None),
        weight=W.reshape(W.shape[0], -1).numpy() if sparse_ok else None,
        bind_sparse=(
            lambda packed, kernel: cpu_kernels.sparse_conv(packed, kernel, B, bounds, tuple(xs), *geometry)
        )
        if sparse_ok
        else None,
    )


_SMALL_CONV_MACS = 1 << 17
_SMALL_GEMM_CONV_MACS = 1 << 20
_CHANNEL_VECTOR_MAX_POSITIONS = 14 * 14


@register("Conv", since=1, fresh=True, prepare=_conv_prepare)
def Conv(
    X: Tensor,
    W: Tensor,
    B: Tensor | None = None,
    auto_pad: str = "NOTSET",
    dilations: list[int] | None = None,
    group: int = 1,
    kernel_shape: list[int] | None = None,
    pads: list[int] | None = None,
    strides: list[int] | None = None,
) -> Tensor:
    # kernel_shape, when present, must equal W's spatial shape: W is what torch uses.
    r = X.dim()
    _check_window("Conv", r - 2, pads, strides, dilations)
    fn = _CONV[r] if r < 6 else None
    if fn is None:
        fn = _spatial_fn(_CONV, X, "Conv")  # raises
    padding: Any = 0
    if auto_pad not in _NOTSET:
        begin, end = _auto_pads(_str(auto_pad), X.shape[2:], W.shape[2:], strides, dilations, "Conv")
    elif pads:
        n = len(pads) // 2
        begin, end = pads[:n], pads[n:]
    else:
        return fn(X, W, B, strides or 1, 0, dilations or 1, group)
    if begin == end:
        padding = begin
    else:  # torch pads symmetrically only: pad the input itself
        X = F.pad(X, _torch_pad(begin, end))
    return fn(X, W, B, strides or 1, padding, dilations or 1, group)


@register("ConvTranspose", since=1, fresh=True)
def ConvTranspose(
    X: Tensor,
    W: Tensor,
    B: Tensor | None = None,
    auto_pad: str = "NOTSET",
    dilations: list[int] | None = None,
    group: int = 1,
    kernel_shape: list[int] | None = None,
    output_padding: list[int] | None = None,
    output_shape: list[int] | None = None,
    pads: list[int] | None = None,
    strides: list[int] | None = None,
) -> Tensor:
    fn = _spatial_fn(_CONV_T, X, "ConvTranspose")
    nd = X.dim() - 2
    sizes = X.shape[2:]
    kernel = W.shape[2:]
    strides = list(strides) if strides else [1] * nd
    dilations = list(dilations) if dilations else [1] * nd
    opad = list(output_padding) if output_padding else [0] * nd
    auto_pad = _str(auto_pad)
    if auto_pad not in ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"):
        raise UnsupportedOpError(f"ConvTranspose: auto_pad={auto_pad!r}")
    # Size of the full (unpadded) result along each axis.
    full = [strides[i] * (sizes[i] - 1) + (kernel[i] - 1) * dilations[i] + 1 for i in range(nd)]
    if output_shape or auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        target = list(output_shape)[-nd:] if output_shape else [n * s for n, s in zip(sizes, strides)]
        total = [full[i] + opad[i] - target[i] for i in range(nd)]
        # SAME_UPPER puts the odd padding at the end; NOTSET and SAME_LOWER at the beginning. An
        # output_shape beyond the full result extends it at the end (as the reference and ORT do).
        begin = [0 if t < 0 else t // 2 if auto_pad == "SAME_UPPER" else t - t // 2 for t in total]
        end = [t - b for t, b in zip(total, begin)]
    elif pads and auto_pad == "NOTSET":
        begin, end = list(pads[:nd]), list(pads[nd:])
    else:
        begin, end = [0] * nd, [0] * nd
    if begin == end and min(begin) >= 0 and all(opad[i] < max(strides[i], dilations[i]) for i in range(nd)):
        return fn(X, W, B, strides, begin, opad, group, dilations)
    # General case: compute the full result, then crop (negative pad) or extend each axis.
    y = fn(X, W, None, strides, 0, 0, group, dilations)
    y = F.pad(y, _torch_pad([-b for b in begin], [opad[i] - end[i] for i in range(nd)]))
    if B is not None:
        y = y + B.reshape((-1,) + (1,) * nd)
    return y


# --------------------------------------------------------------------------------------------
# Pooling


def _pool_geometry(
    x: Tensor,
    kernel: list[int] | None,
    strides: list[int] | None,
    pads: list[int] | None,
    dilations: list[int] | None,
    auto_pad: Any,
    ceil_mode: int,
    op: str,
) -> tuple[list[int], list[int], list[int], list[int], list[int]]:
    """(strides, dilations, pad begin, pad end, output sizes), as ONNX computes them."""
    if not kernel:
        raise ModelError(f"{op}: the kernel_shape attribute is required")
    nd = len(kernel)
    if x.dim() != nd + 2:
        raise ModelError(f"{op}: input of rank {x.dim()} for a {nd}-D kernel_shape")
    sizes = x.shape[2:]
    strides = list(strides) if strides else [1] * nd
    dilations = list(dilations) if dilations else [1] * nd
    if auto_pad not in _NOTSET:
        begin, end = _auto_pads(_str(auto_pad), sizes, kernel, strides, dilations, op)
    elif pads:
        begin, end = list(pads[:nd]), list(pads[nd:])
    else:
        begin, end = [0] * nd, [0] * nd
    out = []
    for i in range(nd):
        span = sizes[i] + begin[i] + end[i] - (kernel[i] - 1) * dilations[i] - 1
        if ceil_mode:
            o = -(-span // strides[i]) + 1
            if (o - 1) * strides[i] >= sizes[i] + begin[i]:  # the last window must start inside
                o -= 1
        else:
            o = span // strides[i] + 1
        out.append(o)
    return strides, dilations, begin, end, out


def _pad_to_windows(
    x: Tensor,
    begin: list[int],
    strides: list[int],
    dilations: list[int],
    kernel: list[int],
    out: list[int],
    value: float,
) -> Tensor:
    """Pad (or crop) x so that exactly `out` windows fit with no further padding."""
    sizes = x.shape[2:]
    end = [
        (o - 1) * s + (k - 1) * d + 1 - n - b
        for o, s, k, d, n, b in zip(out, strides, kernel, dilations, sizes, begin)
    ]
    return F.pad(x, _torch_pad(begin, end), value=value)


def _lowest(dtype: torch.dtype) -> float:
    return float("-inf") if dtype.is_floating_point else torch.iinfo(dtype).min


def _pool_prepare(kind: str, op: Any) -> Any:
    """prepare for MaxPool / AveragePool: the C++ kernel for 2-D windows without dilation or ceil-mode
    overhang, pads smaller than the window, and one output (no indices)."""

    def prepare(shapes: list[Any], consts: list[Any], _noutputs: int = 1, **attrs: Any) -> Any:
        xs, kernel_shape = shapes[0], attrs.get("kernel_shape")
        if xs is None or len(xs) != 4 or _noutputs != 1 or not kernel_shape or len(kernel_shape) != 2:
            return None
        auto_pad, ceil_mode = attrs.get("auto_pad", "NOTSET"), attrs.get("ceil_mode", 0)
        st, dil, begin, end, out = _pool_geometry(
            torch.empty(xs, device="meta"),
            kernel_shape,
            attrs.get("strides"),
            attrs.get("pads"),
            attrs.get("dilations"),
            auto_pad,
            ceil_mode,
            op,
        )
        floor_out = [(xs[2 + i] + begin[i] + end[i] - kernel_shape[i]) // st[i] + 1 for i in range(2)]
        if max(dil) != 1 or out != floor_out or any(p >= k for p, k in zip(begin + end, kernel_shape * 2)):
            return None
        name = "max" if kind == "max" else "avg_include_pad" if attrs.get("count_include_pad") else "avg"
        fn = MaxPool if kind == "max" else AveragePool
        return cpu_kernels.pool2d(
            name,
            tuple(xs),
            tuple(kernel_shape),
            tuple(st),
            (begin[0], begin[1], end[0], end[1]),
            lambda x: fn(x, **attrs),
        )

    return prepare


@register("MaxPool", since=1, fresh=True, prepare=_pool_prepare("max", "MaxPool"))
def MaxPool(
    X: Tensor,
    auto_pad: str = "NOTSET",
    ceil_mode: int = 0,
    dilations: list[int] | None = None,
    kernel_shape: list[int] | None = None,
    pads: list[int] | None = None,
    storage_order: int = 0,
    strides: list[int] | None = None,
    _noutputs: int = 1,
) -> Tensor | tuple[Tensor, Tensor]:
    fn = _spatial_fn(_MAX_POOL, X, "MaxPool")
    strides, dilations, begin, end, out = _pool_geometry(
        X, kernel_shape, strides, pads, dilations, auto_pad, ceil_mode, "MaxPool"
    )
    want_idx = _noutputs > 1
    if begin == end and all(2 * b <= k for b, k in zip(begin, kernel_shape)):
        r = fn(X, kernel_shape, strides, begin, dilations, bool(ceil_mode), want_idx)
        shift = None  # torch's indices already address the unpadded input
    else:  # pad (or crop) X so that exactly `out` windows fit, then pool without padding
        X_p = _pad_to_windows(X, begin, strides, dilations, kernel_shape, out, _lowest(X.dtype))
        r = fn(X_p, kernel_shape, strides, 0, dilations, False, want_idx)
        shift = (list(X_p.shape[2:]), begin)
    if not want_idx:
        return r
    return r[0], _onnx_indices(r[1], X, shift, storage_order)


def _onnx_indices(
    idx: Tensor, x: Tensor, shift: tuple[list[int], list[int]] | None, storage_order: int
) -> Tensor:
    """torch's argmax within each (n, c) plane as ONNX's flat index into all of x.

    `shift`: (padded sizes, pad begin) when torch pooled a pre-padded copy of x.
    """
    sizes = list(x.shape[2:])
    if shift is not None or storage_order:
        psizes, begin = shift if shift is not None else (sizes, [0] * len(sizes))
        coords = []
        for n, b in zip(reversed(psizes), reversed(begin)):
            coords.append(idx % n - b)
            idx = idx // n
        # coords: last spatial axis first. Row-major: the last axis varies fastest.
        order = zip(reversed(coords), sizes) if storage_order else zip(coords, reversed(sizes))
        idx = torch.zeros_like(coords[0])
        step = 1
        for c, n in order:
            idx += c * step
            step *= n
    plane = 1
    for n in sizes:
        plane *= n
    nc = torch.arange(x.shape[0] * x.shape[1], dtype=torch.int64)
    return idx + (nc * plane).reshape((x.shape[0], x.shape[1]) + (1,) * len(sizes))


@register("AveragePool", since=1, fresh=True, prepare=_pool_prepare("avg", "AveragePool"))
def AveragePool(
    X: Tensor,
    auto_pad: str = "NOTSET",
    ceil_mode: int = 0,
    count_include_pad: int = 0,
    dilations: list[int] | None = None,
    kernel_shape: list[int] | None = None,
    pads: list[int] | None = None,
    strides: list[int] | None = None,
) -> Tensor:
    fn = _spatial_fn(_AVG_POOL, X, "AveragePool")
    strides, dilations, begin, end, out = _pool_geometry(
        X, kernel_shape, strides, pads, dilations, auto_pad, ceil_mode, "AveragePool"
    )
    if max(dilations) == 1 and begin == end and all(2 * b <= k for b, k in zip(begin, kernel_shape)):
        return fn(X, kernel_shape, strides, begin, bool(ceil_mode), bool(count_include_pad))
    # General case (dilations, asymmetric or wide pads): window sums and window element counts
    # as depthwise convolutions with a ones kernel.
    conv = _CONV[X.dim()]
    nd = X.dim() - 2
    C = X.shape[1]
    xp = _pad_to_windows(X, begin, strides, dilations, kernel_shape, out, 0.0)
    ones = X.new_ones((C, 1, *kernel_shape))
    sums = conv(xp, ones, None, strides, 0, dilations, C)
    mask = X.new_ones((1, 1, *X.shape[2:]))
    if count_include_pad:  # padding counts, the extra ceil_mode overhang does not
        mask = F.pad(mask, _torch_pad(begin, end), value=1.0)
        mask = _pad_to_windows(mask, [0] * nd, strides, dilations, kernel_shape, out, 0.0)
    else:
        mask = _pad_to_windows(mask, begin, strides, dilations, kernel_shape, out, 0.0)
    counts = conv(mask, ones[:1], None, strides, 0, dilations, 1)
    return sums.div_(counts)


def _gap_prepare(shapes: list[Any], consts: list[Any]) -> Any:
    xs = shapes[0]
    if xs is None or len(xs) != 4 or xs[2] < 1 or xs[3] < 1:
        return None
    return cpu_kernels.pool2d("avg", tuple(xs), (xs[2], xs[3]), (1, 1), (0, 0, 0, 0), GlobalAveragePool)


@register("GlobalAveragePool", since=1, fresh=True, prepare=_gap_prepare)
def GlobalAveragePool(X: Tensor) -> Tensor:
    if X.dim() <= 2:
        return X.clone()
    return X.mean(dim=tuple(range(2, X.dim())), keepdim=True)


@register("GlobalMaxPool", since=1, fresh=True)
def GlobalMaxPool(X: Tensor) -> Tensor:
    if X.dim() <= 2:
        return X.clone()
    return X.amax(dim=tuple(range(2, X.dim())), keepdim=True)


# --------------------------------------------------------------------------------------------
# Normalisation


def _bn_inference(X: Tensor, scale: Tensor, B: Tensor, mean: Tensor, var: Tensor, epsilon: float) -> Tensor:
    dt = X.dtype
    return F.batch_norm(X, mean.to(dt), var.to(dt), scale.to(dt), B.to(dt), False, 0.0, epsilon)


@register("BatchNormalization", since=7, fresh=True)
def BatchNormalization_7(
    X: Tensor,
    scale: Tensor,
    B: Tensor,
    mean: Tensor,
    var: Tensor,
    epsilon: float = 1e-5,
    momentum: float = 0.9,
    spatial: int = 1,
    _noutputs: int = 1,
) -> Tensor:
    if _noutputs > 1:
        raise UnsupportedOpError(
            f"BatchNormalization with {_noutputs} outputs is training mode; only inference (1 output) "
            "is implemented"
        )
    if spatial:
        return _bn_inference(X, scale, B, mean, var, epsilon)
    # spatial=0: one statistic per (C, D1, ..., Dn) element; the parameters have that shape.
    dt = X.dtype
    inv = torch.rsqrt(var.to(dt) + epsilon) * scale.to(dt)
    return (X - mean.to(dt)) * inv + B.to(dt)


@register("BatchNormalization", since=9, fresh=True)
def BatchNormalization_9(
    X: Tensor,
    scale: Tensor,
    B: Tensor,
    mean: Tensor,
    var: Tensor,
    epsilon: float = 1e-5,
    momentum: float = 0.9,
    _noutputs: int = 1,
) -> Tensor:
    # Opset 9 only dropped `spatial` (always per channel now).
    return BatchNormalization_7(X, scale, B, mean, var, epsilon, momentum, spatial=1, _noutputs=_noutputs)


@register("BatchNormalization", since=14, fresh=True)
def BatchNormalization(
    X: Tensor,
    scale: Tensor,
    B: Tensor,
    input_mean: Tensor,
    input_var: Tensor,
    epsilon: float = 1e-5,
    momentum: float = 0.9,
    training_mode: int = 0,
    _noutputs: int = 1,
) -> Tensor | tuple[Tensor, ...]:
    if training_mode:
        raise UnsupportedOpError(
            f"BatchNormalization: training_mode={training_mode} (only inference, training_mode=0)"
        )
    y = _bn_inference(X, scale, B, input_mean, input_var, epsilon)
    if _noutputs == 1:
        return y
    # Outside training the running statistics are the estimated ones given as inputs.
    return (y, input_mean.clone(), input_var.clone())[:_noutputs]


@register("InstanceNormalization", since=6, fresh=True)
def InstanceNormalization(input: Tensor, scale: Tensor, B: Tensor, epsilon: float = 1e-5) -> Tensor:
    if input.dim() < 3:
        raise UnsupportedOpError(f"InstanceNormalization: input of rank {input.dim()} (needs N x C x D1...)")
    dt = input.dtype
    return F.instance_norm(input, weight=scale.to(dt), bias=B.to(dt), eps=epsilon)


def _layernorm_prepare(
    shapes: list[Any],
    consts: list[Any],
    axis: int = -1,
    epsilon: float = 1e-5,
    stash_type: int = 1,
    _noutputs: int = 1,
) -> Any:
    """Over the last axis with constant float32 scale (and bias), one output: the C++ kernel with the
    constants bound once."""
    xs = shapes[0]
    if xs is None or not xs or _noutputs != 1 or stash_type != 1 or axis not in (-1, len(xs) - 1):
        return None
    scale = consts[1]
    bias = consts[2] if len(consts) > 2 else None
    if scale is None or (len(shapes) > 2 and shapes[2] is not None and bias is None):
        return None

    def fallback(x: Tensor, _r: Any) -> Tensor:
        return LayerNormalization(x, scale, bias, axis, epsilon, stash_type, 1)

    return cpu_kernels.layernorm_runner(tuple(xs), False, scale, bias, epsilon, fallback)


@register("LayerNormalization", since=17, fresh=True, prepare=_layernorm_prepare)
def LayerNormalization(
    X: Tensor,
    Scale: Tensor,
    B: Tensor | None = None,
    axis: int = -1,
    epsilon: float = 1e-5,
    stash_type: int = 1,
    _noutputs: int = 1,
) -> Tensor | tuple[Tensor, ...]:
    r = X.dim()
    if axis < 0:
        axis += r
    shape = X.shape[axis:]
    stash = _STASH.get(stash_type)
    if stash is None:
        raise UnsupportedOpError(f"LayerNormalization: stash_type={stash_type}")
    fits = Scale.shape == shape and (B is None or B.shape == shape)
    if _noutputs == 1 and X.dtype == stash and fits:
        return F.layer_norm(X, shape, Scale, B, epsilon)
    # Stage one (mean, inverse std, normalisation) in stash_type; scale and bias in X's type.
    y, mean, rstd = torch.native_layer_norm(X.to(stash), shape, None, None, epsilon)
    y = y.to(X.dtype) * Scale
    if B is not None:
        y = y + B
    return (y, mean, rstd)[:_noutputs] if _noutputs > 1 else y


# --------------------------------------------------------------------------------------------
# Softmax family


def _coerced_2d(fn: Any, x: Tensor, axis: int) -> Tensor:
    """Opset < 13: apply fn over x viewed as 2-D [prod(shape[:axis]), prod(shape[axis:])]."""
    r = x.dim()
    if axis < 0:
        axis += r
    if axis == r - 1:
        return fn(x, -1)
    return fn(x.reshape(x.shape[:axis].numel(), -1), 1).reshape(x.shape)


_HALF = (torch.float16, torch.bfloat16)


def _softmax(x: Tensor, axis: int) -> Tensor:
    if x.dtype == torch.float32 and (axis == -1 or axis == x.dim() - 1) and x.is_contiguous():
        return cpu_kernels.softmax(x)
    if x.dtype in _HALF:
        # ONNX's function body, each step rounded to the 16-bit type (torch.softmax rounds only
        # once, which is 1 ulp away from ONNX's expected outputs in places).
        e = torch.exp(x - x.amax(axis, keepdim=True))
        return e.div_(e.sum(axis, keepdim=True))
    return torch.softmax(x, axis)


@register("Softmax", since=1, fresh=True)
def Softmax_1(input: Tensor, axis: int = 1) -> Tensor:
    return _coerced_2d(_softmax, input, axis)


@register("Softmax", since=13, fresh=True)
def Softmax(input: Tensor, axis: int = -1) -> Tensor:
    if input.dtype in _HALF or input.dtype == torch.float32:
        return _softmax(input, axis)
    return torch.softmax(input, axis)


@register("LogSoftmax", since=1, fresh=True)
def LogSoftmax_1(input: Tensor, axis: int = 1) -> Tensor:
    return _coerced_2d(torch.log_softmax, input, axis)


@register("LogSoftmax", since=13, fresh=True)
def LogSoftmax(input: Tensor, axis: int = -1) -> Tensor:
    return torch.log_softmax(input, axis)


def _hardmax(x: Tensor, axis: int) -> Tensor:
    # The first maximum along `axis` becomes 1, everything else 0.
    return torch.zeros_like(x).scatter_(axis, x.argmax(axis, keepdim=True), 1)


@register("Hardmax", since=1, fresh=True)
def Hardmax_1(input: Tensor, axis: int = 1) -> Tensor:
    return _coerced_2d(_hardmax, input, axis)


@register("Hardmax", since=13, fresh=True)
def Hardmax(input: Tensor, axis: int = -1) -> Tensor:
    return _hardmax(input, axis)
