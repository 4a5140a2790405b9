"""Argument checks shared by the kernel wrappers (kernels.py, dense.py): window geometry as integers
in range, clamp pairs, output arrays, so no caller value reaches a binding unchecked or wraps in C++."""

from __future__ import annotations

import math
import operator
from typing import Any

import numpy as np

from zeroskip.errors import InputError

# Window sizes, strides, pads and dilations stay below this: their products in the kernels never
# overflow int64, and no real model comes near it.
MAX_GEOMETRY = 1 << 31
# The most elements an output array allocated for the caller may have (8 GiB of float32).
MAX_OUTPUT = 1 << 31


def ints(values: Any, count: int, what: str, lowest: int, layout: str = "") -> tuple[int, ...]:
    """`count` integers, each in [lowest, MAX_GEOMETRY); floats such as 1.5 are refused, not truncated.
    `layout` names the values in the count message, e.g. "(top, left, bottom, right)"."""
    try:
        out = tuple(operator.index(v) for v in values)
    except TypeError:
        raise InputError(f"{what} must be {count} integers, got {values!r}") from None
    if len(out) != count:
        named = f" {layout}" if layout else ""
        raise InputError(f"{what} must have {count} values{named}, got {len(out)}: give {count} integers")
    if min(out) < lowest:
        raise InputError(f"{what} must be >= {lowest}, got {out}")
    if max(out) >= MAX_GEOMETRY:
        raise InputError(f"{what} must be < 2**31, got {out}")
    return out


def clamp_pair(clamp: Any) -> tuple[float, float]:
    """(lo, hi) from None (no clamp) or a pair of numbers."""
    if clamp is None:
        return -math.inf, math.inf
    try:
        lo, hi = (float(c) for c in clamp)
    except (TypeError, ValueError):
        raise InputError(f"clamp must be a pair (lo, hi) of numbers, got {clamp!r}") from None
    return lo, hi


def output(shape: tuple[int, ...], what: str) -> np.ndarray:
    """A float32 array for a kernel's result, refusing absurd sizes before allocating."""
    count = math.prod(shape)
    if count > MAX_OUTPUT:
        raise InputError(f"{what}: the output {shape} would have {count} elements (more than 2**31)")
    return np.empty(shape, dtype=np.float32)


def given_out(out: Any, what: str) -> np.ndarray:
    if not isinstance(out, np.ndarray):
        raise InputError(f"{what}: out must be a numpy array, got {type(out).__name__}")
    return out


def one_line(e: BaseException) -> str:
    """The first line of an exception's text (pybind's argument errors list every overload)."""
    lines = [x.strip() for x in str(e).splitlines() if x.strip()]
    return lines[0] if lines else type(e).__name__
