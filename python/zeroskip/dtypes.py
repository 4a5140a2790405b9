"""ONNX element types <-> torch / numpy dtypes, in one place."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["from_torch", "numpy_dtype", "onnx_name", "to_torch", "torch_dtype"]

# ONNX TensorProto.DataType codes (stable across onnx releases).
_NUMPY = {
    1: np.float32,
    2: np.uint8,
    3: np.int8,
    4: np.uint16,
    5: np.int16,
    6: np.int32,
    7: np.int64,
    9: np.bool_,
    10: np.float16,
    11: np.float64,
    12: np.uint32,
    13: np.uint64,
}
_NAMES = {
    1: "float",
    2: "uint8",
    3: "int8",
    4: "uint16",
    5: "int16",
    6: "int32",
    7: "int64",
    8: "string",
    9: "bool",
    10: "float16",
    11: "double",
    12: "uint32",
    13: "uint64",
    14: "complex64",
    15: "complex128",
    16: "bfloat16",
}


def onnx_name(code: int) -> str:
    """ORT's type string for an ONNX element type: 'float', 'int64'..."""
    return _NAMES.get(code, f"type{code}")


def numpy_dtype(code: int) -> np.dtype[Any]:
    if code == 16:
        import ml_dtypes  # ships with onnx

        return np.dtype(ml_dtypes.bfloat16)
    if code not in _NUMPY:
        raise KeyError(code)
    return np.dtype(_NUMPY[code])


def to_torch(a: np.ndarray) -> Any:
    """numpy -> torch without a copy; bfloat16 (ml_dtypes) travels as its bits."""
    import torch

    if a.dtype.name == "bfloat16":
        return torch.from_numpy(a.view(np.uint16)).view(torch.bfloat16)
    return torch.from_numpy(a)


def from_torch(t: Any) -> np.ndarray:
    """torch (CPU) -> numpy without a copy; bfloat16 comes back as ml_dtypes.bfloat16."""
    try:
        return t.numpy()
    except TypeError:  # numpy has no bfloat16: its bits, viewed as ml_dtypes' type
        import torch

        if t.dtype != torch.bfloat16:
            raise
        return t.view(torch.uint16).numpy().view(numpy_dtype(16))


def torch_dtype(code: int) -> Any:
    import torch

    table = {
        1: torch.float32,
        2: torch.uint8,
        3: torch.int8,
        4: torch.uint16,
        5: torch.int16,
        6: torch.int32,
        7: torch.int64,
        9: torch.bool,
        10: torch.float16,
        11: torch.float64,
        12: torch.uint32,
        13: torch.uint64,
        16: torch.bfloat16,
    }
    if code not in table:
        raise KeyError(code)
    return table[code]
