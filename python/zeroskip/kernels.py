"""Sparse x dense matrix multiply over the C++ kernels (numpy only, no torch).

    y = kernels.spmm(a, x)             # a: CSR / BSR / NM (M x K), x: float32 (K, N) or (K,)
    y = kernels.linear(w, x)           # Linear: x (M, K) @ w.T with a sparse N x K weight -> (M, N)
    y = kernels.conv2d(w, x, (3, 3), pads=(1, 1, 1, 1))  # Conv2d, NCHW, w: Cout x (C*KH*KW)
    kernels.available()                # every registered kernel and whether this CPU runs it

The first call with a weight packs it into the library's own validated copy (cached per object), so
a kernel can never be made to read outside its arrays.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np

from zeroskip import _C, _args
from zeroskip.errors import FormatError, InputError, KernelError
from zeroskip.formats import BSR, CSR, NM

__all__ = [
    "KernelInfo",
    "available",
    "conv2d",
    "default_kernel",
    "linear",
    "num_threads",
    "pack",
    "set_num_threads",
    "spmm",
]


@dataclass(frozen=True)
class KernelInfo:
    name: str
    format: str  # "csr" | "bsr" | "nm"
    dtype: str
    isa: str  # "scalar" | "avx2" | "avx512" | "neon"
    tile: tuple[int, int]  # output columns x rows per inner step
    nm: tuple[int, int] | None  # the only N:M pattern it takes (None: any)
    runnable: bool  # this CPU has the ISA

    def supports(self, a: CSR | BSR | NM) -> bool:
        if self.format != _format_name(a):
            return False
        return not (isinstance(a, NM) and self.nm is not None and self.nm != (a.n, a.m))


def available() -> list[KernelInfo]:
    """Every registered kernel, in registry order."""
    return [
        KernelInfo(**{**k, "tile": tuple(k["tile"]), "nm": tuple(k["nm"]) if k["nm"] else None})
        for k in _C.kernels()
    ]


def default_kernel(a: CSR | BSR | NM) -> str:
    """Name of the kernel `spmm` uses for `a` when none is asked for: the fastest ISA this CPU has."""
    if isinstance(a, NM):
        return _C.default_kernel("nm", a.n, a.m)
    return _C.default_kernel(_format_name(a))


def num_threads() -> int:
    return _C.num_threads()


def set_num_threads(n: int) -> None:
    """Threads per kernel call (n < 1: back to ZEROSKIP_NUM_THREADS or the core count)."""
    _C.set_num_threads(int(n))


_packed: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def pack(a: CSR | BSR | NM) -> Any:
    """The validated C++ copy of `a` that kernels run on (made once per object)."""
    _format_name(a)  # rejects anything that is not a sparse format
    p = _packed.get(a)
    if p is not None:
        return p
    # The binding would cast float index arrays to integers (truncating): refuse them here.
    for field in ("indices", "indptr", "meta"):
        arr = getattr(a, field, None)
        if arr is not None and arr.dtype.kind not in "iu":
            raise FormatError(
                f"{type(a).__name__} {a.shape}: {field} has dtype {arr.dtype}, not an integer type"
            )
    try:
        if isinstance(a, CSR):
            p = _C.PackedCsr(a.shape[0], a.shape[1], a.values, a.indices, a.indptr)
        elif isinstance(a, BSR):
            p = _C.PackedBsr(a.shape[0], a.shape[1], a.block[0], a.block[1], a.values, a.indices, a.indptr)
        else:
            p = _C.PackedNm(a.shape[0], a.shape[1], a.n, a.m, a.bits, a.values, a.meta)
    except (ValueError, TypeError) as e:
        raise FormatError(f"{type(a).__name__} {a.shape}: {e}") from None
    _packed[a] = p
    return p


def _run(what: str, a: CSR | BSR | NM, fn: Any, x: Any, out: Any, bias: Any, clamp: Any, *rest: Any) -> None:
    """fn(packed a, x, out, bias, lo, hi, *rest), the binding's errors raised as zeroskip's."""
    _args.given_out(out, what)
    lo, hi = _args.clamp_pair(clamp)
    try:
        fn(pack(a), x, out, None if bias is None else np.asarray(bias), lo, hi, *rest)
    except _C.KernelError as e:
        raise KernelError(f"{what} with {type(a).__name__} {a.shape}: {_args.one_line(e)}") from None
    except (ValueError, TypeError) as e:
        raise InputError(f"{what} with {type(a).__name__} {a.shape}: {_args.one_line(e)}") from None


def spmm(
    a: CSR | BSR | NM,
    x: Any,
    out: np.ndarray | None = None,
    *,
    bias: Any = None,
    kernel: str | None = None,
    clamp: tuple[float, float] | None = None,
) -> np.ndarray:
    """y = a @ x (+ bias[:, None]), optionally clamped to clamp=(min, max) (fused Relu / Clip).

    x is float32 and C-contiguous, (K, N) or (K,) (then y is (M,)). `out`, if given, receives y and
    must be float32, C-contiguous, (M, N) and not overlap x. `kernel` forces one registered kernel by
    name (see `available()`); default: the fastest ISA this CPU runs.
    """
    pack(a)  # rejects anything that is not a sparse format before x is looked at
    xa = np.asarray(x)
    vector = xa.ndim == 1
    if vector:
        xa = xa.reshape(-1, 1)
    m = a.shape[0]
    if out is None:
        n = xa.shape[1] if xa.ndim == 2 else 0
        y = np.empty((m, n), dtype=np.float32)
    else:
        y = out.reshape(m, 1) if (vector and isinstance(out, np.ndarray) and out.shape == (m,)) else out
    _run("spmm", a, _C.spmm, xa, y, bias, clamp, kernel)
    if out is not None:
        return out
    return y.reshape(m) if vector else y


def linear(
    a: CSR | BSR | NM,
    x: Any,
    out: np.ndarray | None = None,
    *,
    bias: Any = None,
    kernel: str | None = None,
    clamp: tuple[float, float] | None = None,
    x_transposed: bool = False,
    out_transposed: bool = False,
    gelu: str | None = None,
) -> np.ndarray:
    """y = x @ a.T (+ bias), optionally clamped to clamp=(min, max): a Linear layer with a sparse weight.

    a is the N x K weight (ONNX Gemm's B with transB=1, torch's Linear.weight); x is float32 and
    C-contiguous, (M, K) or (K,) (then y is (N,)); bias has one value per output column (N). `out`, if
    given, receives y and must be float32, C-contiguous, (M, N) and not overlap x. With x_transposed,
    x is given as its transpose (K, M); with out_transposed, y is written as (N, M): what a chain of
    sparse Linears passes between its links, saving two transposes per link. gelu="none" (erf form,
    ONNX's approximate="none") or "tanh" applies GELU after the bias and clamp.
    """
    pack(a)
    xa = np.asarray(x)
    vector = xa.ndim == 1
    if vector:
        xa = xa.reshape(-1, 1) if x_transposed else xa.reshape(1, -1)
    n = a.shape[0]
    if out is None:
        m = xa.shape[1 if x_transposed else 0] if xa.ndim == 2 else 0
        y = np.empty((n, m) if out_transposed else (m, n), dtype=np.float32)
    elif vector and isinstance(out, np.ndarray) and out.shape == (n,):
        y = out.reshape(n, 1) if out_transposed else out.reshape(1, n)
    else:
        y = out
    _run(
        "linear",
        a,
        _C.spmm_linear,
        xa,
        y,
        bias,
        clamp,
        kernel,
        bool(x_transposed),
        bool(out_transposed),
        gelu or "",
    )
    if out is not None:
        return out
    return y.reshape(n) if vector else y


def conv2d(
    a: CSR | BSR | NM,
    x: Any,
    kernel_shape: tuple[int, int],
    strides: tuple[int, int] = (1, 1),
    pads: tuple[int, int, int, int] = (0, 0, 0, 0),
    dilations: tuple[int, int] = (1, 1),
    out: np.ndarray | None = None,
    *,
    bias: Any = None,
    kernel: str | None = None,
    clamp: tuple[float, float] | None = None,
) -> np.ndarray:
    """2-D convolution (NCHW, groups 1, zero padding) with a sparse weight, optionally clamped.

    a is the ONNX weight W (Cout, C, KH, KW) as a Cout x (C*KH*KW) matrix (W.reshape(Cout, -1));
    x is float32, C-contiguous (B, C, H, W); pads are (top, left, bottom, right), as ONNX orders them
    for 2-D. Returns (B, Cout, OH, OW), OH = (H + top + bottom - dh*(KH - 1) - 1) // sh + 1 (likewise
    OW). bias has one value per output channel.
    """
    pack(a)
    xa = np.asarray(x)
    kernel_shape = (kh, kw) = _args.ints(kernel_shape, 2, "conv2d: kernel_shape", 1)
    strides = (sh, sw) = _args.ints(strides, 2, "conv2d: strides", 1)
    pads = (pt, pl, pb, pr) = _args.ints(pads, 4, "conv2d: pads", 0, "(top, left, bottom, right)")
    dilations = (dh, dw) = _args.ints(dilations, 2, "conv2d: dilations", 1)
    if out is None:
        if xa.ndim == 4:
            oh = (xa.shape[2] + pt + pb - dh * (kh - 1) - 1) // sh + 1
            ow = (xa.shape[3] + pl + pr - dw * (kw - 1) - 1) // sw + 1
            y = _args.output((xa.shape[0], a.shape[0], max(oh, 0), max(ow, 0)), "conv2d")
        else:
            y = np.empty((0, 0, 0, 0), dtype=np.float32)  # the kernel call says what is wrong
    else:
        y = out
    _run("conv2d", a, _C.spmm_conv, xa, y, bias, clamp, kernel, kernel_shape, strides, pads, dilations)
    return y


def _format_name(a: object) -> str:
    if isinstance(a, CSR):
        return "csr"
    if isinstance(a, BSR):
        return "bsr"
    if isinstance(a, NM):
        return "nm"
    raise InputError(f"expected a zeroskip.formats CSR, BSR or NM matrix, got {type(a).__name__}")
