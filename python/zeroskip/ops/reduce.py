"""Reduction ONNX ops: ReduceSum/Mean/Max/Min/Prod/L1/L2/SumSquare/LogSum/LogSumExp, ArgMax/ArgMin.

`axes` is an attribute up to opset 12 (ReduceSum) / 17 (the others) and an optional input after,
read as a Python list (`static`). No axes reduce over every dimension, unless
`noop_with_empty_axes=1` (input form only), which returns the input unchanged. Negative axes count
from the end. Results keep the input's element type, as ONNX's do.

Reducing over an empty set gives the reduction's identity: 0 for sums and norms, 1 for products,
-inf for LogSum/LogSumExp, and for Max/Min the type's lowest/highest value (-inf/+inf for floats,
False/True for bool).
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from zeroskip.errors import UnsupportedOpError
from zeroskip.ops._registry import register

Tensor = torch.Tensor

# Element types torch stores but barely computes on (CPU): reductions run on them in int64.
_SHELL = frozenset({torch.uint16, torch.uint32, torch.uint64})
_SIGN = -(2**63)


def _dims(data: Tensor, axes: Any, noop: int) -> list[int] | None:
    """The dims to reduce; None for "return the input" (empty axes with noop_with_empty_axes=1)."""
    if axes is None or (not isinstance(axes, int) and len(axes) == 0):
        if noop:
            return None
        # torch takes dim 0 of a 0-d tensor as the tensor itself.
        return list(range(data.dim())) or [0]
    return [axes] if isinstance(axes, int) else axes


def _out_shape(data: Tensor, dims: list[int], keepdims: int) -> list[int]:
    r = max(data.dim(), 1)
    red = {d % r for d in dims}
    shape = list(data.shape)
    if keepdims:
        return [1 if i in red else n for i, n in enumerate(shape)]
    return [n for i, n in enumerate(shape) if i not in red]


def _to_int64(data: Tensor, ordered: bool) -> Tensor:
    """uint16/32/64 as int64: widened, or for uint64 the same bits (modular sums and products are
    bit-identical), with the sign bit flipped where order matters so that comparisons agree."""
    if data.dtype != torch.uint64:
        return data.to(torch.int64)
    x = data.view(torch.int64)
    return x ^ _SIGN if ordered else x


def _wide(fn: Callable[..., Tensor], data: Tensor, *args: Any, ordered: bool = False) -> Tensor:
    """`fn` computed in int64 for the uint types torch cannot reduce, cast back."""
    r = fn(_to_int64(data, ordered), *args)
    if data.dtype != torch.uint64:
        return r.to(data.dtype)
    return (r ^ _SIGN if ordered else r).view(torch.uint64)


def _sum(data: Tensor, dims: list[int], keepdims: int) -> Tensor:
    try:
        return torch.sum(data, dims, bool(keepdims), dtype=data.dtype)
    except RuntimeError:
        if data.dtype not in _SHELL:
            raise
        return _wide(_sum, data, dims, keepdims)


def _mean(data: Tensor, dims: list[int], keepdims: int) -> Tensor:
    if data.is_floating_point():
        return torch.mean(data, dims, bool(keepdims))
    # Integer mean truncates (numpy's mean cast back to the input type).
    return torch.mean(data.to(torch.float64), dims, bool(keepdims)).to(data.dtype)


def _extreme(data: Tensor, dims: list[int], keepdims: int, largest: bool) -> Tensor:
    if data.numel() == 0:
        dt = data.dtype
        if dt == torch.bool:
            fill: Any = not largest
        elif dt.is_floating_point:
            fill = -float("inf") if largest else float("inf")
        else:
            info = torch.iinfo(dt)
            fill = info.min if largest else info.max
        return torch.full(_out_shape(data, dims, keepdims), fill, dtype=dt, device=data.device)
    try:
        if largest:
            return torch.amax(data, dims, bool(keepdims))
        return torch.amin(data, dims, bool(keepdims))
    except RuntimeError:
        if data.dtype not in _SHELL:
            raise
        return _wide(_extreme, data, dims, keepdims, largest, ordered=True)


def _prod(data: Tensor, dims: list[int], keepdims: int) -> Tensor:
    # torch.prod reduces one dim at a time.
    r = max(data.dim(), 1)
    out = data
    try:
        for d in sorted({d % r for d in dims}, reverse=True):
            out = torch.prod(out, d, bool(keepdims), dtype=data.dtype)
    except RuntimeError:
        if data.dtype not in _SHELL:
            raise
        return _wide(_prod, data, dims, keepdims)
    return out.clone() if out is data else out


def _noop(data: Tensor) -> Tensor:
    return data.clone()


# --- the ops (input-axes form); the attribute-axes forms are registered below -----------------------


def _reduce_sum_out(
    out: Tensor, data: Tensor, axes: Any = None, keepdims: int = 1, noop_with_empty_axes: int = 0
) -> Tensor:
    dims = _dims(data, axes, noop_with_empty_axes)
    if dims is None or data.dtype in _SHELL:
        return out.copy_(ReduceSum(data, axes, keepdims, noop_with_empty_axes))
    return torch.sum(data, dims, bool(keepdims), dtype=data.dtype, out=out)


@register("ReduceSum", since=13, static=(1,), out=_reduce_sum_out, fresh=True)
def ReduceSum(data: Tensor, axes: Any = None, keepdims: int = 1, noop_with_empty_axes: int = 0) -> Tensor:
    dims = _dims(data, axes, noop_with_empty_axes)
    if dims is None:
        return _noop(data)
    return _sum(data, dims, keepdims)


def _reduce_mean_out(
    out: Tensor, data: Tensor, axes: Any = None, keepdims: int = 1, noop_with_empty_axes: int = 0
) -> Tensor:
    dims = _dims(data, axes, noop_with_empty_axes)
    if dims is None or not data.is_floating_point():
        return out.copy_(ReduceMean(data, axes, keepdims, noop_with_empty_axes))
    return torch.mean(data, dims, bool(keepdims), out=out)


@register("ReduceMean", since=18, static=(1,), out=_reduce_mean_out, fresh=True)
def ReduceMean(data: Tensor, axes: Any = None, keepdims: int = 1, noop_with_empty_axes: int = 0) -> Tensor:
    dims = _dims(data, axes, noop_with_empty_axes)
    if dims is None:
        return _noop(data)
    return _mean(data, dims, keepdims)


@register("ReduceMax", since=18, static=(1,), fresh=True)
def ReduceMax(data: Tensor, axes: Any = None, keepdims: int = 1, noop_with_empty_axes: int = 0) -> Tensor:
    dims = _dims(data, axes, noop_with_empty_axes)
    if dims is None:
        return _noop(data)
    return _extreme(data, dims, keepdims, True)


@register("ReduceMin", since=18, static=(1,), fresh=True)
def ReduceMin(data: Tensor, axes: Any = None, keepdims: int = 1, noop_with_empty_axes: int = 0) -> Tensor:
    dims = _dims(data, axes, noop_with_empty_axes)
    if dims is None:
        return _noop(data)
    return _extreme(data, dims, keepdims, False)


@register("ReduceProd", since=18, static=(1,), fresh=True)
def ReduceProd(data: Tensor, axes: Any = None, keepdims: int = 1, noop_with_empty_axes: int = 0) -> Tensor:
    dims = _dims(data, axes, noop_with_empty_axes)
    if dims is None:
        return _noop(data)
    return _prod(data, dims, keepdims)


@register("ReduceL1", since=18, static=(1,), fresh=True)
def ReduceL1(data: Tensor, axes: Any = None, keepdims: int = 1, noop_with_empty_axes: int = 0) -> Tensor:
    dims = _dims(data, axes, noop_with_empty_axes)
    if dims is None:
        return _noop(data)
    return _sum(data if data.dtype in _SHELL else data.abs(), dims, keepdims)  # uints: abs is a no-op


@register("ReduceL2", since=18, static=(1,), fresh=True)
def ReduceL2(data: Tensor, axes: Any = None, keepdims: int = 1, noop_with_empty_axes: int = 0) -> Tensor:
    dims = _dims(data, axes, noop_with_empty_axes)
    if dims is None:
        return _noop(data)
    s = _sum(data * data, dims, keepdims)
    if s.is_floating_point():
        return s.sqrt_()
    return s.to(torch.float64).sqrt_().to(data.dtype)


@register("ReduceSumSquare", since=18, static=(1,), fresh=True)
def ReduceSumSquare(
    data: Tensor, axes: Any = None, keepdims: int = 1, noop_with_empty_axes: int = 0
) -> Tensor:
    dims = _dims(data, axes, noop_with_empty_axes)
    if dims is None:
        return _noop(data)
    return _sum(data * data, dims, keepdims)


@register("ReduceLogSum", since=18, static=(1,), fresh=True)
def ReduceLogSum(data: Tensor, axes: Any = None, keepdims: int = 1, noop_with_empty_axes: int = 0) -> Tensor:
    dims = _dims(data, axes, noop_with_empty_axes)
    if dims is None:
        return _noop(data)
    s = _sum(data, dims, keepdims)
    if s.is_floating_point():
        return s.log_()
    return s.to(torch.float64).log_().to(data.dtype)


@register("ReduceLogSumExp", since=18, static=(1,), fresh=True)
def ReduceLogSumExp(
    data: Tensor, axes: Any = None, keepdims: int = 1, noop_with_empty_axes: int = 0
) -> Tensor:
    dims = _dims(data, axes, noop_with_empty_axes)
    if dims is None:
        return _noop(data)
    if data.numel() == 0:
        fill = -float("inf") if data.is_floating_point() else torch.iinfo(data.dtype).min
        return torch.full(_out_shape(data, dims, keepdims), fill, dtype=data.dtype, device=data.device)
    if data.is_floating_point():
        return torch.logsumexp(data, dims, bool(keepdims))
    return torch.logsumexp(data.to(torch.float64), dims, bool(keepdims)).to(data.dtype)


# Before opset 13 (ReduceSum) / 18 (the others) `axes` is an attribute and there is no
# noop_with_empty_axes: the same computation with the axes passed by keyword.


def _with_axes_attribute(fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
    def op(data: Tensor, axes: Any = None, keepdims: int = 1) -> Tensor:
        return fn(data, axes, keepdims, 0)

    op.__name__ = op.__qualname__ = f"{fn.__name__}_1"
    op.__doc__ = f"{fn.__name__} with `axes` as an attribute."
    return op


def _out_with_axes_attribute(out_fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
    def op_out(out: Tensor, data: Tensor, axes: Any = None, keepdims: int = 1) -> Tensor:
        return out_fn(out, data, axes, keepdims, 0)

    return op_out


for _fn, _out in (
    (ReduceSum, _reduce_sum_out),
    (ReduceMean, _reduce_mean_out),
    (ReduceMax, None),
    (ReduceMin, None),
    (ReduceProd, None),
    (ReduceL1, None),
    (ReduceL2, None),
    (ReduceSumSquare, None),
    (ReduceLogSum, None),
    (ReduceLogSumExp, None),
):
    register(
        _fn.__name__,
        since=1,
        out=None if _out is None else _out_with_axes_attribute(_out),
        fresh=True,
    )(_with_axes_attribute(_fn))
del _fn, _out


# --- ArgMax / ArgMin (select_last_index from opset 12; its default 0 is opset 1's behaviour) -------


def _arg(data: Tensor, axis: int, keepdims: int, select_last_index: int, largest: bool) -> Tensor:
    fn = torch.argmax if largest else torch.argmin
    if data.dtype == torch.bool:
        data = data.to(torch.uint8)
    elif data.dtype in _SHELL:
        data = _to_int64(data, True)
    if not select_last_index:
        return fn(data, axis, bool(keepdims))
    # torch returns the first extreme index: find it in the reversed axis and map it back.
    n = data.shape[axis] if data.dim() else 1
    return torch.sub(n - 1, fn(data.flip(axis), axis, bool(keepdims)))


def _check_select(select_last_index: int, op: str) -> None:
    if select_last_index not in (0, 1):
        raise UnsupportedOpError(f"{op}: select_last_index={select_last_index} is not supported (0 or 1)")


@register("ArgMax", since=1, fresh=True)
def ArgMax(data: Tensor, axis: int = 0, keepdims: int = 1, select_last_index: int = 0) -> Tensor:
    if select_last_index:
        _check_select(select_last_index, "ArgMax")
    return _arg(data, axis, keepdims, select_last_index, True)


@register("ArgMin", since=1, fresh=True)
def ArgMin(data: Tensor, axis: int = 0, keepdims: int = 1, select_last_index: int = 0) -> Tensor:
    if select_last_index:
        _check_select(select_last_index, "ArgMin")
    return _arg(data, axis, keepdims, select_last_index, False)
