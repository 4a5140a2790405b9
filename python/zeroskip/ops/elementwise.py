"""Elementwise ONNX ops: arithmetic, activations, comparisons, logic, variadic Max/Min/Sum/Mean, Cast.

Binary ops broadcast like numpy (ONNX's multidirectional broadcasting from opset 7 on). ONNX gives
both operands of a binary op the same element type (Pow excepted), so torch's result type is ONNX's.

torch implements almost nothing for uint16/uint32/uint64 on CPU; the ops ONNX allows those types
for fall back to numpy when torch refuses them (off the hot path: only reached through the
RuntimeError torch raises).
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from zeroskip.dtypes import onnx_name, torch_dtype
from zeroskip.errors import UnsupportedOpError
from zeroskip.ops._registry import register

Tensor = torch.Tensor

# Element types torch has only as storage ("shell" dtypes): most kernels refuse them.
_SHELL = frozenset({torch.uint16, torch.uint32, torch.uint64})


def _via_numpy(err: RuntimeError, fn: Callable[..., Any], *ts: Tensor) -> Tensor:
    """`fn` over numpy views of `ts`, for element types torch does not compute on; else re-raise `err`."""
    if not any(t.dtype in _SHELL for t in ts):
        raise err
    r = fn(*(t.cpu().numpy() for t in ts))
    return torch.from_numpy(np.array(r)).to(ts[0].device)


# --- binary arithmetic ------------------------------------------------------------------------


def _binary(name: str, torch_fn: Callable[..., Tensor], np_fn: Callable[..., Any]) -> tuple[Any, Any]:
    """The op `name` as torch_fn(A, B) and its out= form, falling back to numpy for element types
    torch only stores (uint16/32/64)."""

    def op(A: Tensor, B: Tensor) -> Tensor:
        try:
            return torch_fn(A, B)
        except RuntimeError as e:
            return _via_numpy(e, np_fn, A, B)

    def op_out(out: Tensor, A: Tensor, B: Tensor) -> Tensor:
        try:
            return torch_fn(A, B, out=out)
        except RuntimeError as e:
            return out.copy_(_via_numpy(e, np_fn, A, B))

    op.__name__ = op.__qualname__ = name
    op_out.__name__ = op_out.__qualname__ = f"{name}_out"
    return op, op_out


# (op, since, torch, numpy, whether the planner may write it into a pooled buffer). Comparisons are
# left to the allocator: their bool outputs are small.
for _name, _since, _t, _n, _pooled in (
    ("Add", 7, torch.add, np.add, True),
    ("Sub", 7, torch.sub, np.subtract, True),
    ("Mul", 7, torch.mul, np.multiply, True),
    ("Equal", 7, torch.eq, np.equal, False),
    ("Greater", 7, torch.gt, np.greater, False),
    ("Less", 7, torch.lt, np.less, False),
    ("GreaterOrEqual", 12, torch.ge, np.greater_equal, False),
    ("LessOrEqual", 12, torch.le, np.less_equal, False),
):
    _fn, _out = _binary(_name, _t, _n)
    register(_name, since=_since, out=_out if _pooled else None, fresh=True)(_fn)


# Integer Div truncates toward zero (C semantics, as ONNX's reference: true division cast back).
# The numpy fallback only sees unsigned types, where floor division is truncation.


def _div_out(out: Tensor, A: Tensor, B: Tensor) -> Tensor:
    try:
        if A.is_floating_point():
            return torch.div(A, B, out=out)
        return torch.div(A, B, rounding_mode="trunc", out=out)
    except RuntimeError as e:
        return out.copy_(_via_numpy(e, np.floor_divide, A, B))


@register("Div", since=7, out=_div_out, fresh=True)
def Div(A: Tensor, B: Tensor) -> Tensor:
    try:
        if A.is_floating_point():
            return torch.div(A, B)
        return torch.div(A, B, rounding_mode="trunc")
    except RuntimeError as e:
        return _via_numpy(e, np.floor_divide, A, B)


def _np_pow(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.power(x, y).astype(x.dtype, copy=False)


# Pow: the output has the base's type, whatever the exponent's. A 0-d CPU exponent goes to torch as
# a Python number: torch's scalar path turns 2 into a square, 0.5 into sqrt, -1 into reciprocal...


def _pow_out(out: Tensor, X: Tensor, Y: Tensor) -> Tensor:
    try:
        if Y.dim() == 0 and Y.is_cpu:
            e = Y.item()
            if X.is_floating_point() or isinstance(e, int):
                return torch.pow(X, e, out=out)
        elif X.dtype == Y.dtype:
            return torch.pow(X, Y, out=out)
    except RuntimeError as err:
        return out.copy_(_via_numpy(err, _np_pow, X, Y))
    return out.copy_(Pow(X, Y))


@register("Pow", since=7, out=_pow_out, fresh=True)
def Pow(X: Tensor, Y: Tensor) -> Tensor:
    try:
        r = torch.pow(X, Y.item() if Y.dim() == 0 and Y.is_cpu else Y)
    except RuntimeError as e:
        return _via_numpy(e, _np_pow, X, Y)
    return r if r.dtype == X.dtype else r.to(X.dtype)


@register("Mod", since=10, fresh=True)
def Mod(A: Tensor, B: Tensor, fmod: int = 0) -> Tensor:
    if fmod not in (0, 1):
        raise UnsupportedOpError(f"Mod: fmod={fmod} is not supported (only 0 and 1)")
    try:
        # fmod=0: the result takes the divisor's sign (Python's %); fmod=1: the dividend's (C fmod).
        return torch.fmod(A, B) if fmod else torch.remainder(A, B)
    except RuntimeError as e:
        return _via_numpy(e, np.fmod if fmod else np.mod, A, B)


# --- unary math -------------------------------------------------------------------------------


@register("Sqrt", since=6, out=lambda out, X: torch.sqrt(X, out=out), fresh=True)
def Sqrt(X: Tensor) -> Tensor:
    return torch.sqrt(X)


@register("Erf", since=9, out=lambda out, input: torch.erf(input, out=out), fresh=True)
def Erf(input: Tensor) -> Tensor:
    return torch.erf(input)


@register("Tanh", since=6, out=lambda out, input: torch.tanh(input, out=out), fresh=True)
def Tanh(input: Tensor) -> Tensor:
    return torch.tanh(input)


@register("Sigmoid", since=6, out=lambda out, X: torch.sigmoid(X, out=out), fresh=True)
def Sigmoid(X: Tensor) -> Tensor:
    return torch.sigmoid(X)


@register("Relu", since=6, out=lambda out, X: torch.clamp_min(X, 0, out=out), fresh=True)
def Relu(X: Tensor) -> Tensor:
    return torch.relu(X)


@register("Neg", since=6, fresh=True)
def Neg(X: Tensor) -> Tensor:
    return torch.neg(X)


@register("Abs", since=6, fresh=True)
def Abs(X: Tensor) -> Tensor:
    try:
        return torch.abs(X)
    except RuntimeError as e:
        return _via_numpy(e, np.abs, X)


@register("Exp", since=6, fresh=True)
def Exp(input: Tensor) -> Tensor:
    return torch.exp(input)


@register("Log", since=6, fresh=True)
def Log(input: Tensor) -> Tensor:
    return torch.log(input)


@register("Reciprocal", since=6, fresh=True)
def Reciprocal(X: Tensor) -> Tensor:
    return torch.reciprocal(X)


@register("Floor", since=6, fresh=True)
def Floor(X: Tensor) -> Tensor:
    return torch.floor(X)


@register("Ceil", since=6, fresh=True)
def Ceil(X: Tensor) -> Tensor:
    return torch.ceil(X)


@register("Sign", since=9, fresh=True)
def Sign(input: Tensor) -> Tensor:
    try:
        if input.is_floating_point():  # torch.sign(nan) is 0; ONNX (numpy) keeps nan
            return torch.where(torch.isnan(input), input, torch.sign(input))
        return torch.sign(input)
    except RuntimeError as e:
        return _via_numpy(e, np.sign, input)


# --- activations ------------------------------------------------------------------------------


@register("LeakyRelu", since=6, fresh=True)
def LeakyRelu(X: Tensor, alpha: float = 0.01) -> Tensor:
    return F.leaky_relu(X, alpha)


@register("Softplus", since=1, fresh=True)
def Softplus(X: Tensor) -> Tensor:
    return F.softplus(X)


@register("HardSigmoid", since=6, fresh=True)
def HardSigmoid(X: Tensor, alpha: float = 0.2, beta: float = 0.5) -> Tensor:
    return torch.mul(X, alpha).add_(beta).clamp_(0.0, 1.0)


@register("HardSwish", since=14, fresh=True)
def HardSwish(X: Tensor) -> Tensor:
    return F.hardswish(X)


@register("Gelu", since=20, fresh=True)
def Gelu(X: Tensor, approximate: str = "none") -> Tensor:
    if approximate not in ("none", "tanh"):
        raise UnsupportedOpError(f"Gelu: approximate={approximate!r} is not supported ('none' or 'tanh')")
    return F.gelu(X, approximate=approximate)


# Clip: min/max are attributes (floats) in opset 6, optional inputs from opset 11. The inputs are
# `static` so that the usual constant bounds reach torch.clamp as Python numbers. torch.clamp, like
# ONNX, gives `max` everywhere when min > max.


def _np_clip(x: np.ndarray, lo: Any, hi: Any) -> np.ndarray:
    if lo is not None:
        x = np.maximum(x, np.asarray(lo, dtype=x.dtype))
    if hi is not None:
        x = np.minimum(x, np.asarray(hi, dtype=x.dtype))
    return x


def _clip(input: Tensor, lo: Any, hi: Any) -> Tensor:
    if isinstance(lo, list) or isinstance(hi, list):  # a 1-element bound instead of a 0-d one
        lo, hi = _scalar(lo), _scalar(hi)
    if lo is None and hi is None:
        return input.clone()
    try:
        return torch.clamp(input, lo, hi)
    except RuntimeError as e:
        return _via_numpy(e, lambda x: _np_clip(x, lo, hi), input)


def _scalar(v: Any) -> Any:
    if isinstance(v, list):
        if len(v) != 1:
            raise UnsupportedOpError(f"Clip: a bound with {len(v)} elements (it must be a scalar)")
        return v[0]
    return v


def _clip_out(out: Tensor, input: Tensor, min: Any = None, max: Any = None) -> Tensor:
    try:
        return torch.clamp(input, min, max, out=out)
    except (RuntimeError, TypeError):  # no bounds, 1-element bounds, uint types: the slow path
        return out.copy_(_clip(input, min, max))


@register("Clip", since=11, static=(1, 2), out=_clip_out, fresh=True)
def Clip(input: Tensor, min: Any = None, max: Any = None) -> Tensor:
    return _clip(input, min, max)


_FLT_MAX = 3.4028234663852886e38


def _clip6_out(out: Tensor, input: Tensor, max: float = _FLT_MAX, min: float = -_FLT_MAX) -> Tensor:
    return torch.clamp(input, min, max, out=out)


@register("Clip", since=6, out=_clip6_out, fresh=True)
def Clip_6(input: Tensor, max: float = _FLT_MAX, min: float = -_FLT_MAX) -> Tensor:
    return torch.clamp(input, min, max)


# --- comparisons and logic --------------------------------------------------------------------


@register("And", since=7, fresh=True)
def And(A: Tensor, B: Tensor) -> Tensor:
    return torch.logical_and(A, B)


@register("Or", since=7, fresh=True)
def Or(A: Tensor, B: Tensor) -> Tensor:
    return torch.logical_or(A, B)


@register("Xor", since=7, fresh=True)
def Xor(A: Tensor, B: Tensor) -> Tensor:
    return torch.logical_xor(A, B)


@register("Not", since=1, fresh=True)
def Not(X: Tensor) -> Tensor:
    return torch.logical_not(X)


@register("IsNaN", since=9, fresh=True)
def IsNaN(X: Tensor) -> Tensor:
    return torch.isnan(X)


@register("IsInf", since=10, fresh=True)
def IsInf(X: Tensor, detect_negative: int = 1, detect_positive: int = 1) -> Tensor:
    if detect_negative and detect_positive:
        return torch.isinf(X)
    if detect_positive:
        return torch.isposinf(X)
    if detect_negative:
        return torch.isneginf(X)
    return torch.zeros(X.shape, dtype=torch.bool, device=X.device)


def _where_out(out: Tensor, condition: Tensor, X: Tensor, Y: Tensor) -> Tensor:
    try:
        return torch.where(condition, X, Y, out=out)
    except RuntimeError as e:
        return out.copy_(_via_numpy(e, np.where, condition, X, Y))


@register("Where", since=9, out=_where_out, fresh=True)
def Where(condition: Tensor, X: Tensor, Y: Tensor) -> Tensor:
    try:
        return torch.where(condition, X, Y)
    except RuntimeError as e:
        return _via_numpy(e, np.where, condition, X, Y)


# --- variadic (numpy broadcasting from opset 8; opset 6's equal shapes are a special case) --------


def _fold(torch_fn: Callable[..., Tensor], np_fn: Callable[..., Any], inputs: tuple[Tensor, ...]) -> Tensor:
    if len(inputs) == 1:
        return inputs[0].clone()
    try:
        return functools.reduce(torch_fn, inputs)
    except RuntimeError as e:
        return _via_numpy(e, lambda *xs: functools.reduce(np_fn, xs), *inputs)


@register("Max", since=6, fresh=True)
def Max(*data_0: Tensor) -> Tensor:
    return _fold(torch.maximum, np.maximum, data_0)


@register("Min", since=6, fresh=True)
def Min(*data_0: Tensor) -> Tensor:
    return _fold(torch.minimum, np.minimum, data_0)


@register("Sum", since=6, fresh=True)
def Sum(*data_0: Tensor) -> Tensor:
    return _fold(torch.add, np.add, data_0)


@register("Mean", since=6, fresh=True)
def Mean(*data_0: Tensor) -> Tensor:
    if len(data_0) == 1:
        return data_0[0].clone()
    return functools.reduce(torch.add, data_0).div_(len(data_0))


# --- casts ------------------------------------------------------------------------------------


def _torch_dtypes() -> dict[int, Any]:
    out = {}
    for code in range(32):
        with contextlib.suppress(KeyError):
            out[code] = torch_dtype(code)
    return out


_DTYPES = _torch_dtypes()


def _cast_target(to: int) -> Any:
    try:
        return _DTYPES[to]
    except KeyError:
        raise UnsupportedOpError(f"Cast: to={to} ({onnx_name(to)}) is not a supported element type") from None


# `saturate` only concerns float8 targets and `round_mode` only float8e8m0: neither is supported
# here, so both are accepted and have nothing to change. Casting to the input's own type returns the
# input itself (Cast is registered without fresh=True).


@register("Cast", since=6)
def Cast(input: Tensor, to: int, saturate: int = 1, round_mode: str = "up") -> Tensor:
    dt = _DTYPES.get(to)
    if dt is None:
        dt = _cast_target(to)
    return input.to(dt)


@register("CastLike", since=15)
def CastLike(input: Tensor, target_type: Tensor, saturate: int = 1, round_mode: str = "up") -> Tensor:
    return input.to(target_type.dtype)
