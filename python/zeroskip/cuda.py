"""CUDA kernels on torch CUDA tensors: the 2:4 sparse tensor-core GEMM and the CSR SpMM / SpMV.

    from zeroskip import cuda
    cuda.is_available()                      # this build has the CUDA kernels and a GPU is present
    w24 = cuda.pack_sp24(w, "float16")       # host-side packing (numpy; runs without a GPU)
    y = cuda.gemm_sp24(w24, x)               # x: (N, K) or (K,) float16 CUDA tensor -> y = x @ w.T
    wc = cuda.pack_csr(w, "float16")         # any sparsity; float32, float16 or bfloat16 values
    y = cuda.spmm_csr(wc, x)                 # same orientation: y (N, M) = x (N, K) @ w.T

Both ops take the Linear orientation (torch.nn.functional.linear(x, w) without bias): w is the
M x K weight as stored (M outputs, K inputs), x and y are row-major, accumulation is float32 and y
has x's dtype. Kernels run on torch's current stream of x's device; nothing waits for them.

Status: the GPU kernels (csrc/cuda/*.cu) are compiled for sm_80 and sm_90 but have not yet been run
on a GPU. The packing here, and the 2:4 layout against an emulation of the instruction, are tested
on the CPU (tests/test_cuda.py).

This module imports numpy only; torch is imported by the functions that take tensors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from zeroskip import _C
from zeroskip.errors import FormatError, InputError, KernelError
from zeroskip.formats import CSR, NM

__all__ = [
    "CsrWeight",
    "Sp24Weight",
    "compiled",
    "device_count",
    "gemm_sp24",
    "is_available",
    "pack_csr",
    "pack_sp24",
    "spmm_csr",
]

_HALF = ("float16", "bfloat16")
_DTYPES = ("float32", *_HALF)
_TILES = {"auto": 0, "small": 1, "large": 2}


def compiled() -> bool:
    """True when this build of zeroskip contains the CUDA kernels (nvcc was found at build time)."""
    return bool(_C.cuda_compiled())


def device_count() -> int:
    """CUDA devices usable by zeroskip's kernels (0 without a driver, a GPU, or a CUDA build)."""
    return int(_C.cuda_device_count()) if compiled() else 0


def is_available() -> bool:
    """True when the CUDA kernels can run here: a CUDA build and at least one GPU."""
    return device_count() > 0


@dataclass(eq=False)
class Sp24Weight:
    """A 2:4 weight packed for the sparse tensor-core GEMM (layout: csrc/cuda/sp24_layout.h).

    values: uint16 bit patterns of `dtype`, (Mp / 16, Kp / 32, 32, 8): per 16 x 32 tile, each lane's
    8 kept values; meta: uint32 (Mp / 16, Kp / 32, 16), the metadata registers. Mp and Kp are M and K
    padded (see zeroskip._C.cuda_sp24_layout()).
    """

    shape: tuple[int, int]
    dtype: str
    values: np.ndarray
    meta: np.ndarray
    _device: dict[Any, tuple[Any, Any]] = field(default_factory=dict, repr=False)

    def to_dense(self) -> np.ndarray:
        """The float32 (M, K) matrix the packed arrays hold (values rounded to `dtype`)."""
        try:
            bits = _C.cuda_sp24_unpack(self.values, self.meta, *self.shape)
        except (ValueError, TypeError) as e:
            raise FormatError(f"Sp24Weight {self.shape}: {e}") from None
        return _bits_to_float(bits, self.dtype)

    def to_device(self, device: Any) -> tuple[Any, Any]:
        """(values, meta) as torch tensors on `device`, uploaded once per device."""
        return _uploaded(self, device, (self.values, self.meta))


@dataclass(eq=False)
class CsrWeight:
    """A CSR weight packed for the CUDA SpMM: row r's entries are [row_start[r], row_end[r]) of
    values / indices (uint16 columns), each row starting at a multiple of 8 and zero-padded to the next
    one; rows are visited in row_order (by decreasing length), the first n_long by a warp each."""

    shape: tuple[int, int]
    dtype: str
    values: np.ndarray  # float32, or uint16 bit patterns of float16 / bfloat16
    indices: np.ndarray
    row_start: np.ndarray
    row_end: np.ndarray
    row_order: np.ndarray
    n_long: int
    _device: dict[Any, tuple[Any, ...]] = field(default_factory=dict, repr=False)

    def to_dense(self) -> np.ndarray:
        m, k = self.shape
        out = np.zeros((m, k), dtype=np.float32)
        lengths = (self.row_end - self.row_start).astype(np.int64)
        rows = np.repeat(np.arange(m), lengths)
        pos = np.repeat(self.row_start.astype(np.int64), lengths) + _ranks(lengths)
        vals = self.values if self.dtype == "float32" else _bits_to_float(self.values, self.dtype)
        out[rows, self.indices[pos].astype(np.int64)] = vals[pos]
        return out

    def to_device(self, device: Any) -> tuple[Any, ...]:
        arrays = (self.values, self.indices, self.row_start, self.row_end, self.row_order)
        return _uploaded(self, device, arrays)


def pack_sp24(w: Any, dtype: Any = "float16") -> Sp24Weight:
    """Pack a 2:4-sparse (M, K) weight for gemm_sp24, rounding it to `dtype` (float16 or bfloat16).

    w: a numpy array (float32, float16; float64 is taken through float32), an NM weight, or a torch
    tensor (float32, float16, bfloat16; any device). Every 4-wide group of columns of a row may hold
    at most two nonzeros (+-0 count as zero; K need not be a multiple of 4); else FormatError names the
    first offending group.
    """
    dt = _dtype_name(dtype, _HALF, "pack_sp24")
    arr, src = _host_matrix(w, "pack_sp24")
    try:
        values, meta = _C.cuda_sp24_pack(arr, src, dt)
    except _C.FormatError as e:
        raise FormatError(f"pack_sp24: {e}") from None
    return Sp24Weight((int(arr.shape[0]), int(arr.shape[1])), dt, values, meta)


def pack_csr(w: Any, dtype: Any = "float32") -> CsrWeight:
    """Pack a weight for spmm_csr: a zeroskip CSR, or a dense matrix (numpy or torch) whose nonzeros
    are kept. K may be at most 65536 (uint16 column indices). The row order is computed here, once."""
    dt = _dtype_name(dtype, _DTYPES, "pack_csr")
    if isinstance(w, CSR):
        a = w
    else:
        arr, src = _host_matrix(w, "pack_csr")
        a = CSR.from_dense(arr if src == "float32" else _bits_to_float(arr, src))
    m, k = a.shape
    lay = _C.cuda_csr_layout()
    if k > lay["max_cols"]:
        raise FormatError(f"pack_csr: K={k} > {lay['max_cols']}: the CUDA CSR kernels take uint16 columns")
    vec = lay["vector"]
    nnz = np.diff(a.indptr.astype(np.int64))
    padded = -(-nnz // vec) * vec
    start = np.concatenate(([0], np.cumsum(padded)[:-1])).astype(np.int64) if m else padded
    total = max(int(padded.sum()), vec)  # never empty: the device arrays need an address
    if total >= 1 << 31:
        raise FormatError(f"pack_csr: {total} padded entries do not fit int32 offsets")
    pos = np.repeat(start, nnz) + _ranks(nnz)
    values = np.zeros(total, dtype=np.float32)
    values[pos] = a.values
    indices = np.zeros(total, dtype=np.uint16)
    indices[pos] = a.indices
    if dt != "float32":
        values = _C.cuda_half_bits(values, dt)
    order = np.argsort(-padded, kind="stable").astype(np.int32)
    n_long = int(np.count_nonzero(padded >= lay["long_row"]))
    return CsrWeight(
        (m, k),
        dt,
        values,
        indices,
        start.astype(np.int32),
        (start + nnz).astype(np.int32),
        order,
        n_long,
    )


def gemm_sp24(w: Sp24Weight, x: Any, out: Any = None, *, tile: str = "auto") -> Any:
    """y = x @ w.T on sparse tensor cores: x (N, K) or (K,), a CUDA tensor of w's dtype; y (N, M) or (M,).

    `out`, if given, receives y: a contiguous CUDA tensor of x's dtype and device, not overlapping x.
    tile: "auto" (by N), "small" (16 x 16 block tile, K split across warps: N up to ~32) or "large"
    (128 x 64). Runs on torch's current stream of x's device.
    """
    if not isinstance(w, Sp24Weight):
        raise InputError(f"gemm_sp24: expected a weight from zeroskip.cuda.pack_sp24, got {type(w).__name__}")
    if tile not in _TILES:
        raise InputError(f"gemm_sp24: tile must be one of {sorted(_TILES)}, got {tile!r}")
    torch = _torch()
    m, k = w.shape
    x2, n, y, ret = _begin("gemm_sp24", w, x, out)
    if x2 is None:
        return ret
    kx = -(-k // 8) * 8
    if kx != k or x2.data_ptr() % 16:
        # The kernel streams x in 16-byte pieces: give it rows of a multiple of 8, zero-padded.
        xp = torch.zeros((n, kx), dtype=x2.dtype, device=x2.device)
        xp[:, :k] = x2
        x2 = xp
    values, meta = w.to_device(x2.device)
    _launch(
        "gemm_sp24",
        _C.cuda_gemm_sp24,
        values.data_ptr(),
        meta.data_ptr(),
        m,
        k,
        x2.data_ptr(),
        kx,
        kx,
        y.data_ptr(),
        n,
        w.dtype,
        _TILES[tile],
        _device_index(x2),
        torch.cuda.current_stream(x2.device).cuda_stream,
    )
    return ret


def spmm_csr(w: CsrWeight, x: Any, out: Any = None) -> Any:
    """y = x @ w.T with a CSR weight: x (N, K) or (K,), a CUDA tensor of w's dtype; y (N, M) or (M,).

    N == 1 takes the SpMV path. `out` as for gemm_sp24. Runs on torch's current stream of x's device.
    """
    if not isinstance(w, CsrWeight):
        raise InputError(f"spmm_csr: expected a weight from zeroskip.cuda.pack_csr, got {type(w).__name__}")
    torch = _torch()
    m, k = w.shape
    x2, n, y, ret = _begin("spmm_csr", w, x, out)
    if x2 is None:
        return ret
    values, indices, start, end, order = w.to_device(x2.device)
    _launch(
        "spmm_csr",
        _C.cuda_spmm_csr,
        values.data_ptr(),
        indices.data_ptr(),
        start.data_ptr(),
        end.data_ptr(),
        order.data_ptr(),
        m,
        k,
        w.n_long,
        x2.data_ptr(),
        y.data_ptr(),
        n,
        w.dtype,
        _device_index(x2),
        torch.cuda.current_stream(x2.device).cuda_stream,
    )
    return ret


# ---------------------------------------------------------------------------------------------------


def _torch() -> Any:
    import torch

    return torch


def _require_gpu(what: str) -> None:
    if not compiled():
        raise KernelError(
            f"{what}: zeroskip was built without CUDA (no nvcc at build time); rebuild with the CUDA "
            "toolkit installed to use zeroskip.cuda"
        )
    if device_count() == 0:
        raise KernelError(f"{what}: needs a CUDA GPU, and none was found (zeroskip.cuda.is_available())")


def _dtype_name(dtype: Any, allowed: tuple[str, ...], what: str) -> str:
    """'float16' from "float16", numpy.float16 or torch.float16 (likewise the others)."""
    if isinstance(dtype, str):
        name = dtype
    else:
        try:
            name = np.dtype(dtype).name
        except TypeError:
            name = str(dtype).removeprefix("torch.")
    if name not in allowed:
        raise InputError(f"{what}: dtype must be one of {', '.join(allowed)}, got {dtype!r}")
    return name


def _host_matrix(w: Any, what: str) -> tuple[np.ndarray, str]:
    """(C-contiguous 2-D host array, its source type): float32, or uint16 / float16 bit patterns."""
    if isinstance(w, NM):
        return np.ascontiguousarray(w.to_dense(), dtype=np.float32), "float32"
    if isinstance(w, CSR):
        return np.ascontiguousarray(w.to_dense(), dtype=np.float32), "float32"
    if type(w).__module__.split(".")[0] == "torch":
        name = str(w.dtype).removeprefix("torch.")
        if name not in _DTYPES:
            raise InputError(f"{what}: expected a float32, float16 or bfloat16 tensor, got {w.dtype}")
        t = w.detach().to("cpu").contiguous()
        if w.ndim != 2:
            raise InputError(f"{what}: expected a 2-D weight (M, K), got shape {tuple(w.shape)}")
        if name == "bfloat16":
            import torch

            return t.view(torch.int16).numpy().view(np.uint16), "bfloat16"
        return t.numpy(), name
    a = np.asarray(w)
    if a.ndim != 2:
        raise InputError(f"{what}: expected a 2-D weight (M, K), got shape {a.shape}")
    if a.dtype == np.float16:
        return np.ascontiguousarray(a), "float16"
    if a.dtype.kind != "f":
        raise InputError(f"{what}: expected a floating-point weight, got dtype {a.dtype}")
    return np.ascontiguousarray(a, dtype=np.float32), "float32"


def _bits_to_float(bits: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "float16":
        return bits.view(np.float16).astype(np.float32)
    return (bits.astype(np.uint32) << 16).view(np.float32)


def _ranks(counts: np.ndarray) -> np.ndarray:
    """0, 1, ..., c - 1 for each count c, concatenated."""
    total = int(counts.sum())
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    return np.arange(total, dtype=np.int64) - starts


def _uploaded(w: Any, device: Any, arrays: tuple[np.ndarray, ...]) -> tuple[Any, ...]:
    torch = _torch()
    dev = torch.device(device)
    if dev.type != "cuda":
        raise InputError(f"expected a CUDA device, got {dev}")
    if dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    got = w._device.get(dev)
    if got is None:
        signed = {np.dtype(np.uint16): np.int16, np.dtype(np.uint32): np.int32}
        got = tuple(
            torch.from_numpy(a.view(signed.get(a.dtype, a.dtype)).copy()).to(dev, non_blocking=False)
            for a in arrays
        )
        w._device[dev] = got
    return got


def _device_index(t: Any) -> int:
    return int(t.device.index) if t.device.index is not None else 0


def _rows(x: Any, k: int, dtype: str, what: str) -> tuple[Any, bool]:
    """x as a 2-D (N, K) CUDA tensor view, and whether it was a vector."""
    torch = _torch()
    if not isinstance(x, torch.Tensor):
        raise InputError(f"{what}: x must be a torch CUDA tensor, got {type(x).__name__}")
    if not x.is_cuda:
        raise InputError(f"{what}: x is on {x.device}; move it to the GPU (x.cuda())")
    if str(x.dtype).removeprefix("torch.") != dtype:
        raise InputError(f"{what}: x is {x.dtype} but the weight was packed as {dtype}; convert x or repack")
    if x.ndim not in (1, 2) or x.shape[-1] != k:
        raise InputError(f"{what}: x has shape {tuple(x.shape)}, expected (N, {k}) or ({k},)")
    if not x.is_contiguous():
        raise InputError(f"{what}: x must be contiguous; pass x.contiguous()")
    vector = x.ndim == 1
    return (x.view(1, k) if vector else x), vector


def _output(out: Any, x: Any, x2: Any, n: int, m: int, vector: bool, what: str) -> tuple[Any, Any]:
    """(the (N, M) tensor the kernel writes, what the caller gets back)."""
    torch = _torch()
    if out is None:
        y = torch.empty((n, m), dtype=x2.dtype, device=x2.device)
        return y, (y.view(m) if vector else y)
    want = (m,) if vector else (n, m)
    if not isinstance(out, torch.Tensor):
        raise InputError(f"{what}: out must be a torch CUDA tensor, got {type(out).__name__}")
    if out.device != x.device or out.dtype != x.dtype:
        raise InputError(f"{what}: out is {out.dtype} on {out.device}; expected {x.dtype} on {x.device}")
    if tuple(out.shape) != want:
        raise InputError(f"{what}: out has shape {tuple(out.shape)}, expected {want}")
    if not out.is_contiguous():
        raise InputError(f"{what}: out must be contiguous")
    a0, a1 = out.data_ptr(), out.data_ptr() + out.numel() * out.element_size()
    b0, b1 = x.data_ptr(), x.data_ptr() + x.numel() * x.element_size()
    if out.numel() and x.numel() and a0 < b1 and b0 < a1:
        raise InputError(f"{what}: out must not share memory with x")
    return out.view(n, m), out


def _begin(what: str, w: Any, x: Any, out: Any) -> tuple[Any, int, Any, Any]:
    """Checks shared by the ops: a GPU, x's rows (N, K) and the output y (N, M); returns (x2, N, y, the
    value to return), x2 None when there is nothing to compute (y is then zeroed)."""
    _require_gpu(what)
    m, k = w.shape
    x2, vector = _rows(x, k, w.dtype, what)
    n = x2.shape[0]
    y, ret = _output(out, x, x2, n, m, vector, what)
    if n == 0 or m == 0 or k == 0:
        y.zero_()
        return None, n, y, ret
    return x2, n, y, ret


def _launch(what: str, fn: Any, *args: Any) -> None:
    try:
        fn(*args)
    except ValueError as e:
        raise KernelError(f"{what}: {e}") from None
