"""Type stub for the zeroskip._C extension (csrc/python/module.cc)."""

from collections.abc import Sequence
from typing import Any

import numpy as np

class FormatError(ValueError): ...
class KernelError(ValueError): ...

class PackedCsr:
    def __init__(
        self, rows: int, cols: int, values: np.ndarray, indices: np.ndarray, indptr: np.ndarray
    ) -> None: ...
    @property
    def shape(self) -> tuple[int, int]: ...
    @property
    def stored(self) -> int: ...
    @property
    def nbytes(self) -> int: ...

class PackedBsr:
    def __init__(
        self,
        rows: int,
        cols: int,
        br: int,
        bc: int,
        values: np.ndarray,
        indices: np.ndarray,
        indptr: np.ndarray,
    ) -> None: ...
    @property
    def shape(self) -> tuple[int, int]: ...
    @property
    def index_bits(self) -> int: ...
    @property
    def nbytes(self) -> int: ...

class PackedNm:
    def __init__(
        self, rows: int, cols: int, n: int, m: int, bits: int, values: np.ndarray, meta: np.ndarray
    ) -> None: ...
    @property
    def shape(self) -> tuple[int, int]: ...
    @property
    def nbytes(self) -> int: ...

def kernels() -> list[dict[str, Any]]: ...
def default_kernel(format: str, n: int = 0, m: int = 0) -> str: ...
def num_threads() -> int: ...
def set_num_threads(n: int) -> None: ...
def balanced_split(ptr: np.ndarray, unit: int, parts: int) -> list[int]: ...
def cuda_device_count() -> int: ...
def cuda_compiled() -> bool: ...
def spmm(
    a: PackedCsr | PackedBsr | PackedNm,
    x: np.ndarray,
    out: np.ndarray,
    bias: np.ndarray | None,
    min: float,
    max: float,
    kernel: str | None,
) -> None: ...
def spmm_linear(
    a: PackedCsr | PackedBsr | PackedNm,
    x: np.ndarray,
    out: np.ndarray,
    bias: np.ndarray | None,
    min: float,
    max: float,
    kernel: str | None,
) -> None: ...
def spmm_conv(
    a: PackedCsr | PackedBsr | PackedNm,
    x: np.ndarray,
    out: np.ndarray,
    bias: np.ndarray | None,
    min: float,
    max: float,
    kernel: str | None,
    kernel_shape: Sequence[int],
    strides: Sequence[int],
    pads: Sequence[int],
    dilations: Sequence[int],
) -> None: ...
def dense_isas() -> list[dict[str, Any]]: ...
def gelu(x: np.ndarray, out: np.ndarray, approximate: str = "none", isa: str | None = None) -> None: ...
def softmax(x: np.ndarray, out: np.ndarray, isa: str | None = None) -> None: ...
def gemv(
    w: np.ndarray,
    x: np.ndarray,
    bias: np.ndarray | None,
    out: np.ndarray,
    clamp_min: float = ...,
    clamp_max: float = ...,
    isa: str | None = None,
) -> None: ...
def dwconv(
    x: np.ndarray,
    w: np.ndarray,
    bias: np.ndarray | None,
    out: np.ndarray,
    strides: tuple[int, int],
    pads: tuple[int, int, int, int],
    dilations: tuple[int, int],
    clamp_min: float = ...,
    clamp_max: float = ...,
    isa: str | None = None,
) -> None: ...
def layernorm(
    x: np.ndarray,
    residual: np.ndarray | None,
    scale: np.ndarray,
    bias: np.ndarray | None,
    out: np.ndarray,
    epsilon: float,
    isa: str | None = None,
) -> None: ...
def attention(
    q: np.ndarray,
    kt: np.ndarray,
    v: np.ndarray,
    mask: np.ndarray | None,
    out: np.ndarray,
    scale: float = 1.0,
    isa: str | None = None,
) -> None: ...

class DenseWeight:
    def __init__(self, w: np.ndarray, bias: np.ndarray | None = None, isa: str | None = None) -> None: ...
    @property
    def shape(self) -> tuple[int, int]: ...
    @property
    def isa(self) -> str: ...
    @property
    def nbytes(self) -> int: ...

class DenseConvWeight:
    def __init__(self, w: np.ndarray, bias: np.ndarray | None = None, isa: str | None = None) -> None: ...
    @property
    def shape(self) -> tuple[int, int]: ...
    @property
    def isa(self) -> str: ...
    @property
    def nbytes(self) -> int: ...

def conv2d_dense(
    w: DenseConvWeight | DenseWeight,
    x: np.ndarray,
    out: np.ndarray,
    clamp_min: float,
    clamp_max: float,
    kernel_shape: Sequence[int],
    strides: Sequence[int],
    pads: Sequence[int],
    dilations: Sequence[int],
    residual: np.ndarray | None = None,
) -> None: ...
def gemm(
    w: DenseWeight,
    x: np.ndarray,
    out: np.ndarray,
    clamp_min: float = ...,
    clamp_max: float = ...,
    activation: str = "",
) -> None: ...
def pool2d(
    x: np.ndarray,
    out: np.ndarray,
    kind: str,
    kernel: Sequence[int],
    strides: Sequence[int],
    pads: Sequence[int],
    dilations: Sequence[int],
) -> None: ...

# CUDA (csrc/python/cuda_bindings.cc): host-side packing in every build; the launchers raise
# RuntimeError in builds without CUDA.
def cuda_half_bits(x: np.ndarray, dtype: str) -> np.ndarray: ...
def cuda_sp24_layout() -> dict[str, int]: ...
def cuda_csr_layout() -> dict[str, int]: ...
def cuda_sp24_pack(w: np.ndarray, src: str, dtype: str) -> tuple[np.ndarray, np.ndarray]: ...
def cuda_sp24_unpack(values: np.ndarray, meta: np.ndarray, rows: int, cols: int) -> np.ndarray: ...
def cuda_sp24_fragments(
    values: np.ndarray, meta: np.ndarray, rows: int, cols: int, mt: int, kt: int
) -> tuple[np.ndarray, np.ndarray]: ...
def cuda_spmm_csr(
    values: int,
    indices: int,
    row_start: int,
    row_end: int,
    row_order: int,
    rows: int,
    cols: int,
    n_long: int,
    x: int,
    y: int,
    n: int,
    dtype: str,
    device: int,
    stream: int,
) -> None: ...
def cuda_gemm_sp24(
    values: int,
    meta: int,
    rows: int,
    cols: int,
    x: int,
    ldx: int,
    kx: int,
    y: int,
    n: int,
    dtype: str,
    tile: int,
    device: int,
    stream: int,
) -> None: ...

class BoundCall:
    """One kernel call bound to its operands (bind_*); calling it runs it."""

    def __call__(self) -> None: ...

class Chain:
    """BoundCalls run in order by one call, with the GIL released once."""

    def __init__(self, calls: Sequence[BoundCall]) -> None: ...
    def __len__(self) -> int: ...
    def __call__(self) -> None: ...

def bind_conv2d_dense(
    w: DenseConvWeight | DenseWeight,
    x: np.ndarray,
    out: np.ndarray,
    clamp_min: float,
    clamp_max: float,
    kernel_shape: Sequence[int],
    strides: Sequence[int],
    pads: Sequence[int],
    dilations: Sequence[int],
    residual: np.ndarray | None = None,
) -> BoundCall: ...
def bind_pool2d(
    x: np.ndarray,
    out: np.ndarray,
    kind: str,
    kernel: Sequence[int],
    strides: Sequence[int],
    pads: Sequence[int],
    dilations: Sequence[int],
) -> BoundCall: ...
def bind_dwconv(
    x: np.ndarray,
    w: np.ndarray,
    bias: np.ndarray | None,
    out: np.ndarray,
    strides: tuple[int, int],
    pads: tuple[int, int, int, int],
    dilations: tuple[int, int],
    clamp_min: float = ...,
    clamp_max: float = ...,
    isa: str | None = None,
) -> BoundCall: ...
