"""Dense float32 kernels for the ops torch runs slowly on small CPUs (numpy only, no torch).

    y = dense.gelu(x)                        # erf form; approximate="tanh" for the tanh form
    y = dense.softmax(x)                     # along the last dim
    y = dense.gemv(w, x, bias, clamp=(0, inf))   # Linear at batch 1..few: x (K,) or (M, K), w (N, K)

Arrays must be float32 and C-contiguous (nothing is copied or converted). `out`, if given, must
have the result's shape; gelu and softmax may run in place (out=x). `isa` forces one compiled ISA
(see `isas()`); default: the fastest this CPU runs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from zeroskip import _C
from zeroskip.errors import InputError, KernelError

__all__ = ["gelu", "gemv", "isas", "softmax"]


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
        raise KernelError(f"{name}: {e}") from None
    except (ValueError, TypeError) as e:
        raise InputError(f"{name}: {e}") from None


def gelu(
    x: Any, out: np.ndarray | None = None, approximate: str = "none", *, isa: str | None = None
) -> np.ndarray:
    """GELU elementwise: 0.5 x (1 + erf(x / sqrt 2)), or the tanh form (approximate="tanh")."""
    xa = _array(x, "x")
    y = np.empty_like(xa, dtype=np.float32) if out is None else out
    _call("gelu", _C.gelu, xa, y, approximate, isa)
    return y


def softmax(x: Any, out: np.ndarray | None = None, *, isa: str | None = None) -> np.ndarray:
    """Softmax along the last dim (NaN rows for rows holding NaN, +inf, or only -inf, like torch)."""
    xa = _array(x, "x")
    y = np.empty_like(xa, dtype=np.float32) if out is None else out
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
        y = np.empty((n,) if xa.ndim == 1 else (xa.shape[0] if xa.ndim else 0, n), dtype=np.float32)
    else:
        y = out
    lo, hi = (-np.inf, np.inf) if clamp is None else (float(clamp[0]), float(clamp[1]))
    _call("gemv", _C.gemv, wa, xa, bias, y, lo, hi, isa)
    return y
