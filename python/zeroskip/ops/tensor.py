"""Tensor and shape-manipulation ops: Reshape, Transpose, Slice, Gather, Concat, Pad...

Shape-deciding inputs (Reshape's shape, Slice's starts/ends/axes/steps, Split's sizes...) are
declared `static` and arrive as Python lists or scalars. Ops that only rearrange memory return
views where torch allows it (Reshape, Transpose, Slice with positive steps, Split, Expand...);
those are not registered `fresh`.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import torch
import torch.nn.functional as F

from zeroskip.errors import ModelError, UnsupportedOpError
from zeroskip.ops._registry import register

__all__: list[str] = []  # the module registers ops; it exports nothing

_INT64 = torch.int64


def _str(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else v


def _as_list(v: Any) -> list[int]:
    """A static input or attribute as a list of ints (a 0-d tensor arrives as a scalar).

    Static values are shared between runs: callers must not modify the list returned.
    """
    if isinstance(v, list):
        return v
    if isinstance(v, tuple):
        return list(v)
    return [int(v)]


# --- Reshape / Flatten / Transpose / (Un)squeeze / Identity ------------------------------------


@register("Reshape", since=5, static=(1,))
def Reshape(data: torch.Tensor, shape: Any, allowzero: int = 0) -> torch.Tensor:
    shape = _as_list(shape)
    if not allowzero and 0 in shape:
        in_shape = data.shape
        shape = [in_shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return data.reshape(shape)


@register("Flatten", since=1)
def Flatten(input: torch.Tensor, axis: int = 1) -> torch.Tensor:
    shape = input.shape
    if axis < 0:
        axis += len(shape)
    return input.reshape(math.prod(shape[:axis]), math.prod(shape[axis:]))


@register("Transpose", since=1)
def Transpose(data: torch.Tensor, perm: list[int] | None = None) -> torch.Tensor:
    if perm is None:
        return data.permute(tuple(range(data.dim() - 1, -1, -1)))
    return data.permute(perm)


def _unsqueeze(data: torch.Tensor, axes: list[int]) -> torch.Tensor:
    rank = data.dim() + len(axes)
    for a in sorted(a + rank if a < 0 else a for a in axes):
        data = data.unsqueeze(a)
    return data


@register("Unsqueeze", since=1)
def Unsqueeze_1(data: torch.Tensor, axes: list[int] | None = None) -> torch.Tensor:
    return _unsqueeze(data, list(axes or ()))


@register("Unsqueeze", since=13, static=(1,))
def Unsqueeze(data: torch.Tensor, axes: Any) -> torch.Tensor:
    return _unsqueeze(data, _as_list(axes))


def _squeeze(data: torch.Tensor, axes: Any) -> torch.Tensor:
    if axes is None:
        return data.squeeze()
    axes = _as_list(axes)
    if not axes:
        return data.squeeze()
    return data.squeeze(tuple(axes))


@register("Squeeze", since=1)
def Squeeze_1(data: torch.Tensor, axes: list[int] | None = None) -> torch.Tensor:
    return _squeeze(data, axes)


@register("Squeeze", since=13, static=(1,))
def Squeeze(data: torch.Tensor, axes: Any = None) -> torch.Tensor:
    return _squeeze(data, axes)


@register("Identity", since=1)
def Identity(input: torch.Tensor) -> torch.Tensor:
    return input


# --- Concat / Split / Slice / Expand / Tile ------------------------------------------------------


def _concat_out(out: torch.Tensor, *inputs: torch.Tensor, axis: int = 1) -> torch.Tensor:
    return torch.cat(inputs, dim=axis, out=out)


# Opset 1 defaults axis to 1; from opset 4 it is required, so one registration serves both.
@register("Concat", since=1, out=_concat_out, fresh=True)
def Concat(*inputs: torch.Tensor, axis: int = 1) -> torch.Tensor:
    return torch.cat(inputs, dim=axis)


def _split(input: torch.Tensor, split: Any, axis: int, n: int) -> tuple[torch.Tensor, ...]:
    if split is None or split == []:  # an empty split input means "absent"
        dim = input.shape[axis]
        chunk = -(-dim // n) if n else 0  # ceil: opset 18 makes the last chunk the smaller one
        sizes = [min(chunk, max(dim - i * chunk, 0)) for i in range(n)]
    else:
        sizes = _as_list(split)
    return tuple(torch.split(input, sizes, dim=axis))


@register("Split", since=2)
def Split_2(
    input: torch.Tensor, axis: int = 0, split: list[int] | None = None, *, _noutputs: int
) -> tuple[torch.Tensor, ...]:
    return _split(input, split, axis, _noutputs)


@register("Split", since=13, static=(1,))
def Split(
    input: torch.Tensor, split: Any = None, axis: int = 0, num_outputs: int | None = None, *, _noutputs: int
) -> tuple[torch.Tensor, ...]:
    return _split(input, split, axis, num_outputs if num_outputs is not None else _noutputs)


def _slice(
    data: torch.Tensor, starts: list[int], ends: list[int], axes: list[int] | None, steps: list[int] | None
) -> torch.Tensor:
    shape = data.shape
    rank = len(shape)
    index: list[slice] = [slice(None)] * rank
    flip: list[int] = []
    if axes is None:
        axes = list(range(len(starts)))
    if steps is None:
        steps = [1] * len(starts)
    for start, end, axis, step in zip(starts, ends, axes, steps):
        if axis < 0:
            axis += rank
        dim = shape[axis]
        if start < 0:
            start += dim
        if end < 0:
            end += dim
        if step > 0:
            start = min(max(start, 0), dim)
            end = min(max(end, 0), dim)
            index[axis] = slice(start, end, step)
        elif step < 0:
            start = min(max(start, 0), dim - 1)
            end = min(max(end, -1), dim - 1)
            n = max(0, (start - end - step - 1) // -step)
            if n == 0:
                index[axis] = slice(0, 0)
            else:
                # torch slices only step forward: take the same elements ascending, then flip.
                index[axis] = slice(start + (n - 1) * step, start + 1, -step)
                flip.append(axis)
        else:
            raise ModelError(f"Slice: step 0 on axis {axis} is invalid")
    out = data[tuple(index)]
    return out.flip(flip) if flip else out


@register("Slice", since=1)
def Slice_1(
    data: torch.Tensor, *, starts: list[int], ends: list[int], axes: list[int] | None = None
) -> torch.Tensor:
    return _slice(data, list(starts), list(ends), None if axes is None else list(axes), None)


@register("Slice", since=10, static=(1, 2, 3, 4))
def Slice(data: torch.Tensor, starts: Any, ends: Any, axes: Any = None, steps: Any = None) -> torch.Tensor:
    return _slice(
        data,
        _as_list(starts),
        _as_list(ends),
        None if axes is None else _as_list(axes),
        None if steps is None else _as_list(steps),
    )


@register("Expand", since=8, static=(1,))
def Expand(input: torch.Tensor, shape: Any) -> torch.Tensor:
    return input.expand(torch.broadcast_shapes(input.shape, tuple(_as_list(shape))))


@register("Tile", since=6, static=(1,), fresh=True)
def Tile(input: torch.Tensor, repeats: Any) -> torch.Tensor:
    repeats = _as_list(repeats)
    if not repeats:
        return input.clone()
    return input.repeat(repeats)


# --- Shape / Size / Constant / ConstantOfShape / Range ------------------------------------------


@register("Shape", since=1, fresh=True)
def Shape(data: torch.Tensor, start: int = 0, end: int | None = None) -> torch.Tensor:
    # Python's slice clamps exactly like Shape-15's start/end.
    return torch.tensor(data.shape[start:end], dtype=_INT64, device=data.device)


@register("Size", since=1, fresh=True)
def Size(data: torch.Tensor) -> torch.Tensor:
    return torch.tensor(data.numel(), dtype=_INT64, device=data.device)


@register("Constant", since=1)
def Constant(
    value: torch.Tensor | None = None,
    value_float: float | None = None,
    value_floats: list[float] | None = None,
    value_int: int | None = None,
    value_ints: list[int] | None = None,
    value_string: Any = None,
    value_strings: Any = None,
    sparse_value: Any = None,
) -> torch.Tensor:
    if value is not None:
        if not isinstance(value, torch.Tensor):
            raise UnsupportedOpError("Constant: a non-numeric (string?) value tensor is not supported")
        return value
    if value_float is not None:
        return torch.tensor(value_float, dtype=torch.float32)
    if value_floats is not None:
        return torch.tensor(list(value_floats), dtype=torch.float32)
    if value_int is not None:
        return torch.tensor(value_int, dtype=_INT64)
    if value_ints is not None:
        return torch.tensor(list(value_ints), dtype=_INT64)
    if sparse_value is not None:
        # The importer densifies sparse tensor attributes; the output is dense either way.
        if isinstance(sparse_value, torch.Tensor):
            return sparse_value
        raise UnsupportedOpError("Constant: sparse_value is not supported")
    if value_string is not None or value_strings is not None:
        raise UnsupportedOpError("Constant: string values (value_string/value_strings) are not supported")
    raise UnsupportedOpError("Constant: no value attribute")


@register("ConstantOfShape", since=9, static=(0,), fresh=True)
def ConstantOfShape(input: Any, value: torch.Tensor | None = None) -> torch.Tensor:
    shape = _as_list(input) if input is not None else []
    if value is None:
        return torch.zeros(shape, dtype=torch.float32)
    return torch.full(shape, value.reshape(()).item(), dtype=value.dtype, device=value.device)


# Not static: tolist() would lose the element type (int32 vs int64, float16...), which decides the
# output's. The three scalars are read with item().
@register("Range", since=11, fresh=True)
def Range(start: torch.Tensor, limit: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    s, e, d = start.item(), limit.item(), delta.item()
    # torch.arange rejects a step pointing away from the limit; ONNX gives an empty range.
    if (e - s) * d <= 0:
        return torch.empty(0, dtype=start.dtype, device=start.device)
    return torch.arange(s, e, d, dtype=start.dtype, device=start.device)


# --- Gather / GatherElements / GatherND / ScatterND ---------------------------------------------


def _wrap(indices: torch.Tensor, n: int) -> torch.Tensor:
    """Negative indices counted from the end (valid indices lie in [-n, n))."""
    return torch.where(indices < 0, indices + n, indices)


def _gather_shape(data: torch.Tensor, indices: torch.Tensor, axis: int) -> tuple[int, ...]:
    s = data.shape
    return (*s[:axis], *indices.shape, *s[axis + 1 :])


def _gather_out(out: torch.Tensor, data: torch.Tensor, indices: torch.Tensor, axis: int = 0) -> torch.Tensor:
    if axis < 0:
        axis += data.dim()
    flat = out.view(*data.shape[:axis], indices.numel(), *data.shape[axis + 1 :])
    try:  # valid non-negative indices need no rewriting: the common case costs one call
        torch.index_select(data, axis, indices.reshape(-1), out=flat)
    except (IndexError, RuntimeError):
        torch.index_select(data, axis, _wrap(indices, data.shape[axis]).reshape(-1), out=flat)
    return out


@register("Gather", since=1, out=_gather_out, fresh=True)
def Gather(data: torch.Tensor, indices: torch.Tensor, axis: int = 0) -> torch.Tensor:
    if axis < 0:
        axis += data.dim()
    try:  # valid non-negative indices need no rewriting: the common case costs one call
        if axis == 0 and data.dim() == 2 and indices.dtype == _INT64:
            return F.embedding(indices, data)
        picked = torch.index_select(data, axis, indices.reshape(-1))
    except (IndexError, RuntimeError):
        picked = torch.index_select(data, axis, _wrap(indices, data.shape[axis]).reshape(-1))
    return picked.reshape(_gather_shape(data, indices, axis))


@register("GatherElements", since=11, fresh=True)
def GatherElements(data: torch.Tensor, indices: torch.Tensor, axis: int = 0) -> torch.Tensor:
    idx = _wrap(indices, data.shape[axis]).to(_INT64)
    return torch.gather(data, axis, idx)


def _linear_index(indices: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """Row-major offsets of the index tuples in indices' last dimension into a block of `dims`."""
    k = len(dims)
    if k == 0:
        return torch.zeros(indices.shape[:-1], dtype=_INT64, device=indices.device)
    size = torch.tensor(dims, dtype=_INT64, device=indices.device)
    strides = torch.tensor([math.prod(dims[i + 1 :]) for i in range(k)], dtype=_INT64, device=indices.device)
    idx = indices.to(_INT64)
    idx = torch.where(idx < 0, idx + size, idx)
    return (idx * strides).sum(-1)


@register("GatherND", since=11, fresh=True)
def GatherND(data: torch.Tensor, indices: torch.Tensor, batch_dims: int = 0) -> torch.Tensor:
    b = batch_dims
    k = indices.shape[-1]
    dshape = data.shape
    batch = dshape[:b]
    nb = math.prod(batch)
    mid = indices.shape[b:-1]
    rest = dshape[b + k :]
    lin = _linear_index(indices, tuple(dshape[b : b + k])).reshape(nb, -1)
    src = data.reshape(nb, math.prod(dshape[b : b + k]), *rest)
    rows = torch.arange(nb, device=data.device).unsqueeze(1)
    return src[rows, lin].reshape((*batch, *mid, *rest))


_SCATTER_REDUCE = {"add": "sum", "mul": "prod", "max": "amax", "min": "amin"}


@register("ScatterND", since=11, fresh=True)
def ScatterND(
    data: torch.Tensor, indices: torch.Tensor, updates: torch.Tensor, reduction: str = "none"
) -> torch.Tensor:
    reduction = _str(reduction)
    k = indices.shape[-1]
    dshape = data.shape
    rest = dshape[k:]
    out = data.clone(memory_format=torch.contiguous_format)
    view = out.view(math.prod(dshape[:k]), *rest)
    lin = _linear_index(indices, tuple(dshape[:k])).reshape(-1)
    upd = updates.reshape(lin.numel(), *rest)
    if reduction == "none":
        view.index_copy_(0, lin, upd)
    elif reduction in _SCATTER_REDUCE:
        idx = lin.reshape(-1, *([1] * len(rest))).expand(upd.shape)
        view.scatter_reduce_(0, idx, upd, _SCATTER_REDUCE[reduction], include_self=True)
    else:
        raise UnsupportedOpError(f"ScatterND: reduction={reduction!r} is not supported")
    return out


# --- Trilu / Pad / Dropout / Einsum ------------------------------------------------------------


@register("Trilu", since=14, static=(1,), fresh=True)
def Trilu(input: torch.Tensor, k: Any = None, upper: int = 1) -> torch.Tensor:
    if isinstance(k, (list, tuple)):
        k = k[0]
    k = 0 if k is None else int(k)
    return torch.triu(input, k) if upper else torch.tril(input, k)


@lru_cache(maxsize=256)
def _pad_index(n: int, begin: int, end: int, mode: str, device: torch.device) -> torch.Tensor:
    j = torch.arange(-begin, n + end, dtype=_INT64, device=device)
    if mode == "edge":
        return j.clamp(0, n - 1)
    if mode == "wrap":
        return j.remainder(n)
    # reflect: mirror about the first and last element, without repeating them
    if n == 1:
        return torch.zeros_like(j)
    m = j.remainder(2 * n - 2)
    return torch.where(m < n, m, 2 * n - 2 - m)


def _pad(data: torch.Tensor, pads: list[int], mode: str, value: Any, axes: list[int] | None) -> torch.Tensor:
    mode = _str(mode)
    shape = data.shape
    rank = len(shape)
    if axes is None:
        axes = list(range(rank))
    naxes = len(axes)
    if len(pads) != 2 * naxes:
        raise ModelError(f"Pad: {len(pads)} pads for {naxes} axes (it needs two per axis)")
    begin = [0] * rank
    end = [0] * rank
    for i, a in enumerate(axes):
        if a < 0:
            a += rank
        begin[a] = pads[i]
        end[a] = pads[i + naxes]
    # Negative pads crop: take the kept part of the input first.
    src_index = tuple(slice(max(-b, 0), shape[d] - max(-e, 0)) for d, (b, e) in enumerate(zip(begin, end)))
    if mode == "constant":
        out_shape = [shape[d] + begin[d] + end[d] for d in range(rank)]
        if value is None:
            out = torch.zeros(out_shape, dtype=data.dtype, device=data.device)
        elif isinstance(value, torch.Tensor):
            out = torch.empty(out_shape, dtype=data.dtype, device=data.device)
            out.fill_(value.reshape(()))
        else:
            out = torch.full(out_shape, value, dtype=data.dtype, device=data.device)
        src = data[src_index]
        dst_index = tuple(slice(max(b, 0), max(b, 0) + src.shape[d]) for d, b in enumerate(begin))
        out[dst_index] = src
        return out
    if mode not in ("edge", "reflect", "wrap"):
        raise UnsupportedOpError(f"Pad: mode={mode!r} is not supported")
    out = data[src_index]
    for d in range(rank):
        b, e = max(begin[d], 0), max(end[d], 0)
        if b or e:
            n = out.shape[d]
            if n == 0:
                raise UnsupportedOpError(f"Pad: mode={mode!r} cannot pad an empty axis {d}")
            out = torch.index_select(out, d, _pad_index(n, b, e, mode, out.device))
    return out


@register("Pad", since=2)
def Pad_2(data: torch.Tensor, *, pads: list[int], mode: str = "constant", value: float = 0.0) -> torch.Tensor:
    return _pad(data, list(pads), mode, value, None)


@register("Pad", since=11, static=(1, 3))
def Pad(
    data: torch.Tensor,
    pads: Any,
    constant_value: torch.Tensor | None = None,
    axes: Any = None,
    mode: str = "constant",
) -> torch.Tensor:
    return _pad(data, _as_list(pads), mode, constant_value, None if axes is None else _as_list(axes))


def _dropout(data: torch.Tensor, n: int, mask_dtype: torch.dtype) -> Any:
    if n < 2:
        return data
    return data, torch.ones(data.shape, dtype=mask_dtype, device=data.device)


@register("Dropout", since=7)
def Dropout_7(data: torch.Tensor, ratio: float = 0.5, *, _noutputs: int) -> Any:
    return _dropout(data, _noutputs, data.dtype)


@register("Dropout", since=10)
def Dropout_10(data: torch.Tensor, ratio: float = 0.5, *, _noutputs: int) -> Any:
    return _dropout(data, _noutputs, torch.bool)


@register("Dropout", since=12, static=(1, 2))
def Dropout(
    data: torch.Tensor,
    ratio: Any = None,
    training_mode: Any = None,
    seed: int | None = None,
    *,
    _noutputs: int,
) -> Any:
    if training_mode and ratio != 0:
        # ratio 0 drops nothing, so training mode equals inference; anything else is random.
        raise UnsupportedOpError("Dropout: training_mode=True with a nonzero ratio is not supported")
    return _dropout(data, _noutputs, torch.bool)


@register("Einsum", since=12)
def Einsum(*inputs: torch.Tensor, equation: str) -> torch.Tensor:
    return torch.einsum(_str(equation).replace(" ", ""), *inputs)
