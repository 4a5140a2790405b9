"""zeroskip's own fused ops (domain "zeroskip"), produced by `ir.fusion` at load."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from zeroskip.ops import cpu_kernels, nn
from zeroskip.ops._registry import register
from zeroskip.ops._select import Offer

DOMAIN = "zeroskip"


def _linear_out(
    out: torch.Tensor, x: torch.Tensor, wt: torch.Tensor, bias=None, activation: str = ""
) -> None:
    o2 = out.view(-1, wt.shape[0])
    x2 = x.reshape(-1, wt.shape[1])
    if bias is None:
        torch.mm(x2, wt.t(), out=o2)
    else:
        torch.addmm(bias, x2, wt.t(), out=o2)
    if activation == "relu":
        o2.clamp_(min=0)
    elif activation:
        cpu_kernels.gelu_out(o2, o2, _GELU_FORM[activation])


# Linear activations that are GELU, and the form each takes (ONNX Gelu's `approximate`).
_GELU_FORM = {"gelu": "none", "gelu_tanh": "tanh"}


def _linear_prepare(shapes: list[Any], consts: list[Any], activation: str = "") -> Any:
    """What a Linear can run on for this input shape: torch's linear, the GEMV kernel for few rows,
    and the SpMM kernels on its weight (the scheduler times them and keeps the fastest)."""
    xs, wt = shapes[0], consts[1]
    bias = consts[2] if len(consts) > 2 else None
    if xs is None or wt is None or (len(shapes) > 2 and shapes[2] is not None and bias is None):
        return None
    relu = activation == "relu"

    def plain(x: torch.Tensor, *_: Any) -> torch.Tensor:
        return Linear(x, wt, bias, activation)

    dense = [("dense/torch", plain)]
    small = None if activation in _GELU_FORM else cpu_kernels.linear_small(wt, bias, tuple(xs), relu)
    if small is not None:
        dense.append(("dense/gemv", small))
    if math.prod(xs[:-1]) > 1:
        packed = cpu_kernels.linear_packed(wt, bias, tuple(xs), activation)
        if packed is not None:
            dense.append(("dense/gemm", packed))
    gelu = _GELU_FORM.get(activation, "")
    sparse_ok = (
        wt.dtype == torch.float32
        and (bias is None or bias.dtype == torch.float32)
        and len(xs) >= 1
        and xs[-1] == wt.shape[1]
    )
    clamp = (0.0, float("inf")) if relu else None
    return Offer(
        probe_shape=tuple(xs),
        dense=dense,
        config=("linear", activation, bias is not None),
        weight=wt.numpy() if sparse_ok else None,
        bind_sparse=(
            lambda packed, kernel: cpu_kernels.sparse_linear(packed, kernel, bias, clamp, tuple(xs), gelu)
        )
        if sparse_ok
        else None,
    )


@register("Linear", since=1, domain=DOMAIN, out=_linear_out, fresh=True, prepare=_linear_prepare)
def Linear(x: torch.Tensor, wt: torch.Tensor, bias=None, activation: str = "") -> torch.Tensor:
    """y = act(x @ wt.T + bias): MatMul/Gemm (+Add) (+Relu or GELU) with the weight stored N x K."""
    y = F.linear(x, wt, bias)
    if activation == "relu":
        y.relu_()
    elif activation:
        cpu_kernels.gelu_out(y, y, _GELU_FORM[activation])
    return y


@register("Conv", since=1, domain=DOMAIN, fresh=True, prepare=nn._conv_prepare)
def Conv(
    X: torch.Tensor,
    W: torch.Tensor,
    B: torch.Tensor | None = None,
    R: torch.Tensor | None = None,
    activation: str = "",
    clip_min: float = float("-inf"),
    clip_max: float = float("inf"),
    residual: int = 0,
    **conv_attrs: Any,
) -> torch.Tensor:
    """ONNX Conv, then with residual=1 Add(R) (R of the output's shape), then Relu (`activation="relu"`)
    or Clip(min, max) (`"clip"`) or neither."""
    y = nn.Conv(X, W, B, **conv_attrs)
    if residual:
        y.add_(R)
    if activation == "clip":
        return y.clamp_(clip_min, clip_max)
    return y.relu_() if activation == "relu" else y


@register("Gelu", since=1, domain=DOMAIN, out=cpu_kernels.gelu_out, fresh=True)
def Gelu(x: torch.Tensor, approximate: str = "none") -> torch.Tensor:
    return cpu_kernels.gelu(x, approximate)


def _attention_prepare(shapes: list[Any], consts: list[Any], scale: float = 1.0, scale_op: str = "") -> Any:
    """The kernel bound to this signature's shapes once (see cpu_kernels.attention_runner); operands
    that are not float32 run the op's own steps."""
    if any(sh is None for sh in shapes[:3]) or (
        len(shapes) > 3 and shapes[3] is None and consts[3] is not None
    ):
        return None
    mask_shape = shapes[3] if len(shapes) > 3 else None
    factor = 1.0 / scale if scale_op == "div" else (scale if scale_op == "mul" else 1.0)
    run = cpu_kernels.attention_runner(
        *(tuple(sh) for sh in shapes[:3]), None if mask_shape is None else tuple(mask_shape), factor
    )
    if run is None:
        return None
    t32 = torch.float32

    def step(
        q: torch.Tensor, kt: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        # A mask this signature did not see the shape of goes the general way too.
        ok_mask = mask is None or (mask_shape is not None and mask.dtype is t32)
        if q.dtype is t32 and kt.dtype is t32 and v.dtype is t32 and ok_mask:
            return run(q, kt, v, mask)
        return Attention(q, kt, v, mask, scale, scale_op)

    run_out = getattr(run, "run_out", None)
    if run_out is None:
        return step

    def step_out(
        out: torch.Tensor,
        q: torch.Tensor,
        kt: torch.Tensor,
        v: torch.Tensor,
        mask: torch.Tensor | None = None,
    ) -> None:
        ok_mask = mask is None or (mask_shape is not None and mask.dtype is t32)
        if q.dtype is t32 and kt.dtype is t32 and v.dtype is t32 and ok_mask:
            run_out(out, q, kt, v, mask)
        else:
            out.copy_(Attention(q, kt, v, mask, scale, scale_op))

    step.run_out, step.out_shape, step.out_view = step_out, run.out_shape, run.out_view
    return step


@register("Attention", since=1, domain=DOMAIN, fresh=True, prepare=_attention_prepare)
def Attention(
    q: torch.Tensor,
    kt: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    scale: float = 1.0,
    scale_op: str = "",
) -> torch.Tensor:
    """MatMul(Softmax(MatMul(q, kt) [* or / scale] [+ mask], axis=-1), v) as those steps on torch; the
    C++ kernel is bound per signature by _attention_prepare where the operands fit it."""
    s = torch.matmul(q, kt)
    if scale_op == "div":
        s = s / scale
    elif scale_op == "mul":
        s = s * scale
    if mask is not None:
        s = s + mask
    return torch.matmul(torch.softmax(s, -1), v)


def _add_layernorm_prepare(shapes: list[Any], consts: list[Any], epsilon: float = 1e-5) -> Any:
    """The kernel with the constant scale and bias bound once, for a residual of the input's shape."""
    if shapes[0] is None or tuple(shapes[0]) != tuple(shapes[1] or ()) or consts[2] is None:
        return None
    bias = consts[3] if len(consts) > 3 else None
    if len(shapes) > 3 and shapes[3] is not None and bias is None:
        return None  # a bias computed at run time
    scale = consts[2]
    return cpu_kernels.layernorm_runner(
        tuple(shapes[0]), True, scale, bias, epsilon, lambda a, b: AddLayerNorm(a, b, scale, bias, epsilon)
    )


@register("AddLayerNorm", since=1, domain=DOMAIN, fresh=True, prepare=_add_layernorm_prepare)
def AddLayerNorm(
    a: torch.Tensor,
    b: torch.Tensor,
    scale: torch.Tensor,
    bias: torch.Tensor | None = None,
    epsilon: float = 1e-5,
) -> torch.Tensor:
    """LayerNormalization(a + b, scale, bias) over the last axis as the two ops; the C++ kernel (one pass
    over the sum) is bound per signature by _add_layernorm_prepare where the operands fit it."""
    return nn.LayerNormalization(a + b, scale, bias, -1, epsilon)
