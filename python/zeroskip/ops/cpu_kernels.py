"""torch tensors through zeroskip's own dense C++ kernels (GELU, softmax, small-batch Linear).

torch's transcendental functions use accurate, slow routines on CPUs that split 256-bit ops, and its
BLAS sgemv is slow on some x86 parts; these kernels (csrc/cpu/dense*) do better there. Tensors cross
as numpy views of the same memory: nothing is copied. Callers pass float32, contiguous CPU tensors.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from zeroskip import _C, kernels
from zeroskip.formats import CSR

__all__ = [
    "SparseLinear",
    "attention_runner",
    "available",
    "conv_dense_csr",
    "conv_dense_gemm",
    "gelu",
    "gelu_out",
    "layernorm_runner",
    "linear_packed",
    "linear_small",
    "pool2d",
    "softmax",
    "sparse_conv",
    "sparse_linear",
]


def available() -> bool:
    return hasattr(_C, "gelu") and hasattr(_C, "softmax") and hasattr(_C, "gemv")


_HAVE = available()
# Rows up to which the GEMV kernel is offered as a Linear candidate; the planner times it against
# torch's linear and keeps the faster.
SMALL_M = 16
# The GEMV kernel reads the weight once per 4 rows. The planner times each op on its own, with the weight
# hot in cache; in a model whose weights outgrow the cache every extra pass comes from memory, which the
# timing never sees (mlp2048 at batch 8: 1.2 ms per layer in the model, 0.7 timed alone). So past 4 rows
# it is offered only for weights that stay in L2.
GEMV_REREAD_BYTES = 1 << 19


def gelu(x: torch.Tensor, approximate: str = "none") -> torch.Tensor:
    if not _HAVE or x.dtype != torch.float32 or not x.is_contiguous():
        return torch.nn.functional.gelu(x, approximate=approximate)
    y = torch.empty_like(x)
    _C.gelu(x.numpy(), y.numpy(), approximate, None)
    return y


def gelu_out(out: torch.Tensor, x: torch.Tensor, approximate: str = "none") -> None:
    if not _HAVE or x.dtype != torch.float32 or not x.is_contiguous():
        torch.ops.aten.gelu.out(x, approximate=approximate, out=out)
    else:
        _C.gelu(x.numpy(), out.numpy(), approximate, None)


def softmax(x: torch.Tensor) -> torch.Tensor:
    """Softmax along the last dim of a float32 contiguous tensor."""
    if not _HAVE:
        return torch.softmax(x, -1)
    y = torch.empty_like(x)
    _C.softmax(x.numpy(), y.numpy(), None)
    return y


def layernorm_runner(
    x_shape: tuple[int, ...],
    residual: bool,
    scale: torch.Tensor,
    bias: torch.Tensor | None,
    eps: float,
    fallback: Any,
) -> Any:
    """A runner of layer_norm(x (+ r)) over the last dim for inputs of shape `x_shape` (and a residual of
    the same shape), with the constant scale and bias converted once: run(x, r, ...) or run(x, ...).
    Inputs that are not float32 and contiguous go to fallback(x, r). None when the kernel cannot
    take the constants."""
    if not hasattr(_C, "layernorm") or not x_shape:
        return None
    n = x_shape[-1]
    for t in (scale, bias):
        if t is not None and (t.dtype != torch.float32 or tuple(t.shape) != (n,)):
            return None
    s_np = scale.contiguous().numpy()
    b_np = None if bias is None else bias.contiguous().numpy()
    shape, ln, empty, f32, t32, from_numpy = (
        tuple(x_shape),
        _C.layernorm,
        np.empty,
        np.float32,
        torch.float32,
        torch.from_numpy,
    )

    xv, rv, ov = _Views(shape), _Views(shape), _Views(shape)

    def ok(x: torch.Tensor, rr: Any) -> bool:
        return (
            x.dtype is t32 and x.is_contiguous() and (rr is None or (rr.dtype is t32 and rr.is_contiguous()))
        )

    def run(x: torch.Tensor, r: Any = None, *_: Any) -> torch.Tensor:
        rr = r if residual else None
        if not ok(x, rr):
            return fallback(x, rr)
        y = empty(shape, f32)
        ln(xv(x), None if rr is None else rv(rr), s_np, b_np, y, eps)
        return from_numpy(y)

    def run_out(out: torch.Tensor, x: torch.Tensor, r: Any = None, *_: Any) -> None:
        rr = r if residual else None
        if not ok(x, rr):
            out.copy_(fallback(x, rr))
            return
        ln(xv(x), None if rr is None else rv(rr), s_np, b_np, ov(out), eps)

    return _with_out(run, run_out, shape)


def attention_runner(
    q_shape: tuple[int, ...],
    kt_shape: tuple[int, ...],
    v_shape: tuple[int, ...],
    mask_shape: tuple[int, ...] | None,
    scale: float,
) -> Any:
    """A runner of softmax(scale * q @ kt + mask) @ v through the C++ kernel for float32 CPU operands of
    these shapes, read in place (permuted and broadcast views included): run(q, kt, v, mask); None
    when the shapes do not fit the kernel (leading dims that differ, a mask that widens the scores).
    The result is a (..., Sq, Dv) view of a (B, Sq, H, Dv) buffer: the layout the usual Transpose +
    Reshape after attention reads without a copy."""
    rank = len(q_shape)
    if not hasattr(_C, "attention") or rank not in (3, 4) or len(kt_shape) != rank or len(v_shape) != rank:
        return None
    lead = tuple(q_shape[:-2])
    if (
        tuple(kt_shape[:-2]) != lead
        or tuple(v_shape[:-2]) != lead
        or q_shape[-1] != kt_shape[-2]
        or kt_shape[-1] != v_shape[-2]
    ):
        return None
    scores = (*lead, q_shape[-2], kt_shape[-1])
    if mask_shape is not None:
        try:
            if tuple(torch.broadcast_shapes(scores, tuple(mask_shape))) != scores:
                return None
        except RuntimeError:
            return None
    b, h = (1, lead[0]) if rank == 3 else lead
    sq, dv = q_shape[-2], v_shape[-1]
    scores4 = (b, h, sq, kt_shape[-1])
    attn, empty, f32, from_numpy = _C.attention, np.empty, np.float32, torch.from_numpy
    qv, kv, vv, ov = (_Views(None, strided=True) for _ in range(4))

    def run(q: torch.Tensor, kt: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if rank == 3:
            q, kt, v = q.unsqueeze(0), kt.unsqueeze(0), v.unsqueeze(0)
            mask = None if mask is None else mask.broadcast_to(scores).unsqueeze(0)
        m = None if mask is None else mask.broadcast_to(scores4).numpy()
        out = empty((b, sq, h, dv), f32)
        attn(qv(q), kv(kt), vv(v), m, out.transpose(0, 2, 1, 3), scale)
        y = from_numpy(out).permute(0, 2, 1, 3)
        return y[0] if rank == 3 else y

    if rank == 3:
        return run

    def run_out(out: torch.Tensor, q: torch.Tensor, kt: torch.Tensor, v: torch.Tensor, mask: Any) -> None:
        m = None if mask is None else mask.broadcast_to(scores4).numpy()
        attn(qv(q), kv(kt), vv(v), m, ov(out), scale)

    def out_view(buf: torch.Tensor) -> torch.Tensor:
        # (B, H, Sq, Dv) over (B, Sq, H, Dv) memory, as `run` returns it.
        return buf.view(b, sq, h, dv).permute(0, 2, 1, 3)

    run = _with_out(run, run_out, (b, h, sq, dv))
    run.out_view = out_view
    return run


def _c_array(x: torch.Tensor) -> np.ndarray:
    """A C-contiguous numpy view of `x` (a copy only when `x` is strided)."""
    xn = x.numpy()
    return xn if xn.flags.c_contiguous else np.ascontiguousarray(xn)


class _Views:
    """The numpy view of the tensor a runner was last given, kept by identity: a plan hands a step the
    same pooled buffer objects on every run, so their views are made once (x.numpy() costs more than
    many kernels here). A tensor that needs a contiguous copy is copied every call, never kept."""

    __slots__ = ("a", "ptr", "shape", "strided", "t")

    def __init__(self, shape: tuple[int, ...] | None, strided: bool = False):
        self.t: Any = None
        self.a: Any = None
        self.ptr = 0
        self.shape = shape  # None: as it comes
        self.strided = strided  # the kernel reads any strides: never copied

    def __call__(self, x: torch.Tensor) -> np.ndarray:
        # The address too: a tensor given new storage in place (set_) is the same object.
        if x is self.t and x.data_ptr() == self.ptr:
            return self.a
        xn = x.numpy()
        if not (self.strided or xn.flags.c_contiguous):
            return np.ascontiguousarray(xn).reshape(self.shape)
        if self.shape is not None and xn.shape != self.shape:
            xn = xn.reshape(self.shape)
        self.t, self.a, self.ptr = x, xn, x.data_ptr()
        return xn


def depthwise_conv(
    w: torch.Tensor,
    bias: torch.Tensor | None,
    x_shape: tuple[int, ...],
    strides: tuple[int, ...],
    pads: tuple[int, ...],
    dilations: tuple[int, ...],
    group: int,
    clamp: tuple[float, float] | None,
) -> Any:
    """A depthwise 2-D convolution (one 2-D filter per channel) through the C++ kernel, or None."""
    if not hasattr(_C, "dwconv") or w.dtype != torch.float32 or len(x_shape) != 4:
        return None
    c = x_shape[1]
    if group != c or w.shape[0] != c or w.shape[1] != 1 or (bias is not None and bias.dtype != torch.float32):
        return None
    n, _, h, wd = x_shape
    kh, kw = w.shape[2], w.shape[3]
    oh = (h + pads[0] + pads[2] - dilations[0] * (kh - 1) - 1) // strides[0] + 1
    ow = (wd + pads[1] + pads[3] - dilations[1] * (kw - 1) - 1) // strides[1] + 1
    if oh <= 0 or ow <= 0:
        return None
    w_np = w.contiguous().numpy()
    b_np = None if bias is None else bias.contiguous().numpy()
    lo, hi = clamp if clamp is not None else (-math.inf, math.inf)
    out_shape = (n, c, oh, ow)
    st, pd, dl = tuple(strides), (pads[0], pads[1], pads[2], pads[3]), tuple(dilations)
    conv, from_numpy, empty, f32 = _C.dwconv, torch.from_numpy, np.empty, np.float32

    xv, ov = _Views(tuple(x_shape)), _Views(out_shape)

    def run(x: torch.Tensor, *_: Any) -> torch.Tensor:
        y = empty(out_shape, f32)
        conv(xv(x), w_np, b_np, y, st, pd, dl, lo, hi, None)
        return from_numpy(y)

    def run_out(out: torch.Tensor, x: torch.Tensor, *_: Any) -> None:
        conv(xv(x), w_np, b_np, ov(out), st, pd, dl, lo, hi, None)

    _native(run, (0,), lambda out, x: _C.bind_dwconv(x, w_np, b_np, out, st, pd, dl, lo, hi, None))
    return _with_out(run, run_out, out_shape)


def linear_small(wt: torch.Tensor, bias: torch.Tensor | None, x_shape: tuple[int, ...], relu: bool) -> Any:
    """A Linear for inputs of shape `x_shape` with few rows (M <= SMALL_M) through the GEMV kernel,
    or None when the kernel is missing, the shapes do not fit it, or the weight would be streamed from
    memory more than once (see GEMV_REREAD_BYTES)."""
    if not _HAVE or wt.dtype != torch.float32 or (bias is not None and bias.dtype != torch.float32):
        return None
    n, k = wt.shape
    m = math.prod(x_shape[:-1])
    if not x_shape or x_shape[-1] != k or not 1 <= m <= SMALL_M:
        return None
    if m > 4 and wt.numel() * 4 > GEMV_REREAD_BYTES:
        return None
    w_np = wt.contiguous().numpy()
    b_np = None if bias is None else bias.contiguous().reshape(n).numpy()
    lo, hi = (0.0, math.inf) if relu else (-math.inf, math.inf)
    out_shape = (*x_shape[:-1], n)
    gemv, from_numpy, empty, f32 = _C.gemv, torch.from_numpy, np.empty, np.float32
    # Reshapes happen on the numpy side: a torch reshape or empty() costs several times more here.

    xv, ov = _Views((m, k)), _Views((m, n))

    def run(x: torch.Tensor, *_: Any) -> torch.Tensor:
        y = empty(out_shape, f32)
        gemv(w_np, xv(x), b_np, y.reshape(m, n), lo, hi, None)
        return from_numpy(y)

    def run_out(out: torch.Tensor, x: torch.Tensor, *_: Any) -> None:
        gemv(w_np, xv(x), b_np, ov(out), lo, hi, None)

    return _with_out(run, run_out, out_shape)


# Linear activations the packed GEMM applies in its epilogue: name -> (its activation, clamp).
_GEMM_ACT = {
    "": ("", None),
    "relu": ("", (0.0, math.inf)),
    "gelu": ("gelu", None),
    "gelu_tanh": ("gelu_tanh", None),
}


def linear_packed(
    wt: torch.Tensor, bias: torch.Tensor | None, x_shape: tuple[int, ...], activation: str
) -> Any:
    """A Linear for inputs of shape `x_shape` through the dense GEMM kernel on a copy of the weight packed
    once into the kernel's panel layout (bias, Relu or GELU in its epilogue), or None when the kernel is
    missing or the shapes or dtypes do not fit it."""
    if not _HAVE or not hasattr(_C, "gemm") or activation not in _GEMM_ACT:
        return None
    if wt.dtype != torch.float32 or (bias is not None and bias.dtype != torch.float32):
        return None
    n, k = wt.shape
    if not x_shape or x_shape[-1] != k or (bias is not None and bias.numel() != n):
        return None
    act, clamp = _GEMM_ACT[activation]
    lo, hi = _bounds(clamp)
    weight = _packed_on_first_call(_C.DenseWeight, wt.reshape(n, k), bias)
    out_shape = (*x_shape[:-1], n)
    gemm, from_numpy, empty, f32 = _C.gemm, torch.from_numpy, np.empty, np.float32
    xv, ov = _Views(tuple(x_shape)), _Views(out_shape)

    def run(x: torch.Tensor, *_: Any) -> torch.Tensor:
        y = empty(out_shape, f32)
        gemm(weight(), xv(x), y, lo, hi, act)
        return from_numpy(y)

    def run_out(out: torch.Tensor, x: torch.Tensor, *_: Any) -> None:
        gemm(weight(), xv(x), ov(out), lo, hi, act)

    return _with_out(run, run_out, out_shape)


def _packed_on_first_call(cls: Any, w2: torch.Tensor, bias: torch.Tensor | None) -> Any:
    """weight() -> cls(w2, bias) (a packed dense weight), made on the first call: a load that takes
    another candidate never pays for the copy."""
    packed: list[Any] = []

    def weight() -> Any:
        if not packed:
            b_np = None if bias is None else bias.contiguous().reshape(-1).numpy()
            packed.append(cls(w2.contiguous().numpy(), b_np, None))
        return packed[0]

    return weight


def _native(run: Any, inputs: tuple[int, ...], bind: Any) -> None:
    """Marks a runner whose run_out(out, *args) is one kernel call: `bind(out, *tensors)` on numpy arrays,
    the tensors being args[i] for i in `inputs`, returns that call bound to them (_C.BoundCall), which a
    plan runs with its neighbours in one _C.Chain when they are all its own buffers (Plan)."""
    run.native = (inputs, bind)


def chain(calls: list[Any]) -> Any:
    """BoundCalls (see _native) as one callable that runs them in order: _C.Chain."""
    return _C.Chain(calls)


def _with_out(run: Any, run_out: Any, out_shape: tuple[int, ...]) -> Any:
    """`run` with its variant that writes into a given float32 tensor of `out_shape`'s size (a plan's
    pooled buffer) attached as run.run_out, and that shape as run.out_shape."""
    run.run_out, run.out_shape = run_out, out_shape
    return run


def add_residual(inner: Any, lo: float, hi: float) -> Any:
    """A conv runner (`inner(x)`) finished as zeroskip::Conv with residual=1 does: y = clamp(y + r, lo,
    hi) in y's buffer (Relu: 0, inf; no activation: -inf, inf). The step passes (x, w, b, r); with
    `inner.run_out`, the result also writes into a given buffer. A kernel that adds r itself (its
    epilogue, a post-op) offers `inner.with_residual(lo, hi)`, used instead."""
    native = getattr(inner, "with_residual", None)
    if native is not None:
        return native(lo, hi)
    clamp = lo > -math.inf or hi < math.inf

    def finish(y: torch.Tensor, r: torch.Tensor) -> None:
        y.add_(r)
        if clamp:
            y.clamp_(lo, hi)

    def run(x: torch.Tensor, _w: Any = None, _b: Any = None, r: Any = None, *_: Any) -> torch.Tensor:
        y = inner(x)
        finish(y, r)
        return y

    inner_out = getattr(inner, "run_out", None)
    if inner_out is None:
        return run

    def run_out(
        out: torch.Tensor, x: torch.Tensor, _w: Any = None, _b: Any = None, r: Any = None, *_: Any
    ) -> None:
        if out.data_ptr() == r.data_ptr():  # the conv would overwrite r before reading it
            out.copy_(run(x, _w, _b, r))
            return
        inner_out(out, x)
        finish(out, r)

    return _with_out(run, run_out, inner.out_shape)


def _bounds(clamp: tuple[float, float] | None) -> tuple[float, float]:
    return (-math.inf, math.inf) if clamp is None else (float(clamp[0]), float(clamp[1]))


class SparseLinear:
    """y = clamp(x @ A.T + bias) for inputs of one shape, with A a packed sparse weight (N x K) run by the
    named SpMM kernel (bias and Relu/Clip in the kernel's epilogue): a plan step's runner.

    Inside a chain of sparse Linears the planner relays the links (`relaid`): a link then takes its
    input as the (K, M) transpose its predecessor wrote (x_t) and writes (N, M) for its successor (y_t),
    so the kernel skips two transposes per link. Such tensors are seen by no other step. With `gelu`
    ("none": erf form, "tanh"), GELU follows the bias in the same call."""

    __slots__ = (
        "_b",
        "_hi",
        "_lo",
        "_out",
        "_x",
        "gelu",
        "k",
        "kernel",
        "m",
        "n",
        "out_shape",
        "packed",
        "x_shape",
        "x_t",
        "y_t",
    )

    def __init__(
        self,
        packed: Any,
        kernel: str,
        bias: np.ndarray | None,
        clamp: tuple[float, float] | None,
        x_shape: tuple[int, ...],
        x_t: bool = False,
        y_t: bool = False,
        gelu: str = "",
    ):
        self.packed, self.kernel, self._b, self.x_shape, self.gelu = packed, kernel, bias, x_shape, gelu
        self._lo, self._hi = _bounds(clamp)
        self.n, self.k = packed.shape
        self.m = math.prod(x_shape[:-1])
        self.x_t, self.y_t = x_t, y_t
        self.out_shape = (self.n, self.m) if y_t else (*x_shape[:-1], self.n)
        self._x = _Views((self.k, self.m) if x_t else (self.m, self.k))
        self._out = _Views((self.n, self.m) if y_t else (self.m, self.n))

    def relaid(self, x_t: bool, y_t: bool) -> SparseLinear:
        clamp = None if (self._lo, self._hi) == (-math.inf, math.inf) else (self._lo, self._hi)
        return SparseLinear(self.packed, self.kernel, self._b, clamp, self.x_shape, x_t, y_t, self.gelu)

    def __call__(self, x: torch.Tensor, *_: Any) -> torch.Tensor:
        y = np.empty(self.out_shape, np.float32)
        ys = y.reshape((self.n, self.m) if self.y_t else (self.m, self.n))
        xs, lo, hi = self._x(x), self._lo, self._hi
        _C.spmm_linear(self.packed, xs, ys, self._b, lo, hi, self.kernel, self.x_t, self.y_t, self.gelu)
        return torch.from_numpy(y)

    def run_out(self, out: torch.Tensor, x: torch.Tensor, *_: Any) -> None:
        """The same into `out` (float32, contiguous, out_shape's size): a plan's pooled buffer."""
        _C.spmm_linear(
            self.packed,
            self._x(x),
            self._out(out),
            self._b,
            self._lo,
            self._hi,
            self.kernel,
            self.x_t,
            self.y_t,
            self.gelu,
        )


def sparse_linear(
    packed: Any,
    kernel: str,
    bias: torch.Tensor | None,
    clamp: tuple[float, float] | None,
    x_shape: tuple[int, ...],
    gelu: str = "",
) -> SparseLinear:
    """The runner of a Linear with a packed sparse weight for inputs of shape `x_shape` (see SparseLinear);
    gelu "none" (erf form) or "tanh" applies GELU after the bias."""
    n = packed.shape[0]
    b_np = None if bias is None else bias.contiguous().reshape(n).numpy()
    return SparseLinear(packed, kernel, b_np, clamp, tuple(x_shape), gelu=gelu)


def sparse_conv(
    packed: Any,
    kernel: str | None,
    bias: torch.Tensor | None,
    clamp: tuple[float, float] | None,
    x_shape: tuple[int, ...],
    kernel_shape: tuple[int, int],
    strides: tuple[int, int],
    pads: tuple[int, int, int, int],
    dilations: tuple[int, int],
) -> Any:
    """A 2-D NCHW convolution (group 1) whose weight, reshaped to Cout x (C * KH * KW), is a packed
    sparse matrix: 1x1 convs run as SpMM on the input itself, others on its im2col."""
    n, _, h, wd = x_shape
    (kh, kw), (sh, sw), (dh, dw) = kernel_shape, strides, dilations
    oh = (h + pads[0] + pads[2] - dh * (kh - 1) - 1) // sh + 1
    ow = (wd + pads[1] + pads[3] - dw * (kw - 1) - 1) // sw + 1
    cout = packed.shape[0]
    b_np = None if bias is None else bias.contiguous().reshape(cout).numpy()
    lo, hi = _bounds(clamp)
    out_shape = (n, cout, oh, ow)
    ks, st, pd, dl = (kh, kw), (sh, sw), tuple(pads), (dh, dw)
    conv, from_numpy, empty, f32 = _C.spmm_conv, torch.from_numpy, np.empty, np.float32
    xv, ov = _Views(tuple(x_shape)), _Views(out_shape)

    def run(x: torch.Tensor, *_: Any) -> torch.Tensor:
        y = empty(out_shape, f32)
        conv(packed, xv(x), y, b_np, lo, hi, kernel, ks, st, pd, dl)
        return from_numpy(y)

    def run_out(out: torch.Tensor, x: torch.Tensor, *_: Any) -> None:
        conv(packed, xv(x), ov(out), b_np, lo, hi, kernel, ks, st, pd, dl)

    return _with_out(run, run_out, out_shape)


def conv_dense_gemm(
    w: torch.Tensor,
    bias: torch.Tensor | None,
    x_shape: tuple[int, ...],
    kernel_shape: tuple[int, int],
    strides: tuple[int, int],
    pads: tuple[int, int, int, int],
    dilations: tuple[int, int],
    clamp: tuple[float, float] | None,
    channel_vectors: bool = False,
) -> Any:
    """A group-1 2-D NCHW convolution through the dense weight-left GEMM: the weight, as Cout x (C * KH *
    KW), and the bias are packed on the first call; 1x1 convs multiply the input itself, others its
    im2col; Relu / Clip in the epilogue. With `channel_vectors` (1x1, stride 1, no padding only), the
    weight is packed as a Linear's and the output channels fill the vectors, positions broadcast (for
    maps of few positions, whose position tiles the weight-left GEMM leaves part empty). None when the
    kernel is missing or the operands do not fit."""
    if not hasattr(_C, "conv2d_dense") or w.dtype != torch.float32 or len(x_shape) != 4 or w.dim() != 4:
        return None
    if channel_vectors and (tuple(kernel_shape) != (1, 1) or tuple(strides) != (1, 1) or any(pads)):
        return None  # (the weight's own shape is checked against kernel_shape below)
    if bias is not None and (bias.dtype != torch.float32 or bias.numel() != w.shape[0]):
        return None
    n, c, h, wd = x_shape
    (kh, kw), (sh, sw), (dh, dw) = kernel_shape, strides, dilations
    oh = (h + pads[0] + pads[2] - dh * (kh - 1) - 1) // sh + 1
    ow = (wd + pads[1] + pads[3] - dw * (kw - 1) - 1) // sw + 1
    cout = w.shape[0]
    if oh <= 0 or ow <= 0 or w.shape[1] != c or tuple(w.shape[2:]) != (kh, kw):
        return None
    lo, hi = _bounds(clamp)
    out_shape = (n, cout, oh, ow)
    ks, st, pd, dl = [kh, kw], [sh, sw], list(pads), [dh, dw]
    packing = _C.DenseWeight if channel_vectors else _C.DenseConvWeight
    weight = _packed_on_first_call(packing, w.reshape(cout, -1), bias)
    conv, from_numpy, empty, f32 = _C.conv2d_dense, torch.from_numpy, np.empty, np.float32
    xv, ov = _Views(tuple(x_shape)), _Views(out_shape)

    def run(x: torch.Tensor, *_: Any) -> torch.Tensor:
        y = empty(out_shape, f32)
        conv(weight(), xv(x), y, lo, hi, ks, st, pd, dl)
        return from_numpy(y)

    def run_out(out: torch.Tensor, x: torch.Tensor, *_: Any) -> None:
        conv(weight(), xv(x), ov(out), lo, hi, ks, st, pd, dl)

    def with_residual(rlo: float, rhi: float) -> Any:
        """This conv as a zeroskip::Conv step with residual=1: (x, w, b, r) -> clamp(conv(x) + r, rlo,
        rhi), r added in the GEMM's epilogue (see add_residual)."""
        rv = _Views(out_shape)

        def run_r(x: torch.Tensor, _w: Any = None, _b: Any = None, r: Any = None, *_: Any) -> torch.Tensor:
            y = empty(out_shape, f32)
            conv(weight(), xv(x), y, rlo, rhi, ks, st, pd, dl, rv(r.contiguous()))
            return from_numpy(y)

        def run_out_r(
            out: torch.Tensor, x: torch.Tensor, _w: Any = None, _b: Any = None, r: Any = None, *_: Any
        ) -> None:
            if r.data_ptr() == out.data_ptr():  # the GEMM keeps partial sums in out
                out.copy_(run_r(x, _w, _b, r))
                return
            conv(weight(), xv(x), ov(out), rlo, rhi, ks, st, pd, dl, rv(r.contiguous()))

        def bind_r(out: np.ndarray, x: np.ndarray, r: np.ndarray) -> Any:
            return _C.bind_conv2d_dense(weight(), x, out, rlo, rhi, ks, st, pd, dl, r)

        _native(run_r, (0, 3), bind_r)
        return _with_out(run_r, run_out_r, out_shape)

    run.with_residual = with_residual
    _native(run, (0,), lambda out, x: _C.bind_conv2d_dense(weight(), x, out, lo, hi, ks, st, pd, dl))
    return _with_out(run, run_out, out_shape)


def pool2d(
    kind: str,
    x_shape: tuple[int, ...],
    kernel: tuple[int, int],
    strides: tuple[int, int],
    pads: tuple[int, int, int, int],
    fallback: Any,
) -> Any:
    """2-D max / average pooling of NCHW float32 inputs of shape `x_shape` through the C++ kernel
    (kind "max", "avg" or "avg_include_pad"); other dtypes or strided inputs go to `fallback(x)`."""
    if not hasattr(_C, "pool2d") or len(x_shape) != 4:
        return None
    n, c, h, w = x_shape
    oh = (h + pads[0] + pads[2] - kernel[0]) // strides[0] + 1
    ow = (w + pads[1] + pads[3] - kernel[1]) // strides[1] + 1
    if oh < 1 or ow < 1:
        return None
    out_shape = (n, c, oh, ow)
    pool, from_numpy, empty, f32, t32 = _C.pool2d, torch.from_numpy, np.empty, np.float32, torch.float32
    ks, st, pd, dl = tuple(kernel), tuple(strides), tuple(pads), (1, 1)

    xv, ov = _Views(tuple(x_shape)), _Views(out_shape)

    def run(x: torch.Tensor, *_: Any) -> torch.Tensor:
        if x.dtype is not t32 or not x.is_contiguous():
            return fallback(x)
        y = empty(out_shape, f32)
        pool(xv(x), y, kind, ks, st, pd, dl)
        return from_numpy(y)

    def run_out(out: torch.Tensor, x: torch.Tensor, *_: Any) -> None:
        if x.dtype is not t32 or not x.is_contiguous():
            out.copy_(fallback(x))
        else:
            pool(xv(x), ov(out), kind, ks, st, pd, dl)

    _native(run, (0,), lambda out, x: _C.bind_pool2d(x, out, kind, ks, st, pd, dl))
    return _with_out(run, run_out, out_shape)


# Group-1 convolutions up to this many multiply-adds are offered the SpMM path with their dense weight
# (every entry stored): on small maps torch's fixed cost per call (~20-50 us) dominates, while the CSR
# kernel on the im2col runs at vector speed along the output pixels.
SMALL_CONV_MACS = 1 << 22


def conv_dense_csr(
    w: torch.Tensor,
    bias: torch.Tensor | None,
    x_shape: tuple[int, ...],
    kernel_shape: tuple[int, int],
    strides: tuple[int, int],
    pads: tuple[int, int, int, int],
    dilations: tuple[int, int],
    clamp: tuple[float, float] | None,
) -> Any:
    """A small group-1 2-D convolution with its dense weight packed as CSR, or None."""
    if not hasattr(_C, "spmm_conv") or w.dtype != torch.float32 or len(x_shape) != 4:
        return None
    n, _, h, wd = x_shape
    cout = w.shape[0]
    oh = (h + pads[0] + pads[2] - dilations[0] * (kernel_shape[0] - 1) - 1) // strides[0] + 1
    ow = (wd + pads[1] + pads[3] - dilations[1] * (kernel_shape[1] - 1) - 1) // strides[1] + 1
    if oh <= 0 or ow <= 0 or n * oh * ow * w.numel() > SMALL_CONV_MACS:
        return None
    packed = kernels.pack(CSR.from_dense(w.reshape(cout, -1).numpy()))
    return sparse_conv(packed, None, bias, clamp, x_shape, kernel_shape, strides, pads, dilations)
