"""zeroskip: a sparse inference runtime.

    import zeroskip
    model = zeroskip.load("model.onnx")      # also zeroskip.runtime.load
    out = model.run({"x": x})                # {output name: numpy array}

`import zeroskip` is light: numpy only. torch and onnx are imported when a model is loaded; the
kernels (`zeroskip.kernels`) and sparse formats (`zeroskip.formats`) never need them.
"""

from __future__ import annotations

from typing import Any

from zeroskip.errors import (
    FormatError,
    InputError,
    KernelError,
    ModelError,
    UnsupportedOpError,
    ZeroskipError,
)

__version__ = "0.1.0"

__all__ = [
    "FormatError",
    "InferenceSession",
    "InputError",
    "KernelError",
    "ModelError",
    "Session",
    "SessionOptions",
    "UnsupportedOpError",
    "ZeroskipError",
    "__version__",
    "load",
]

_LAZY = {"load", "Session", "InferenceSession", "SessionOptions", "runtime"}


def __getattr__(name: str) -> Any:
    # The session layer imports torch and onnx; keep them out of `import zeroskip`.
    if name in _LAZY:
        import importlib

        if name == "runtime":
            return importlib.import_module("zeroskip.runtime")
        return getattr(importlib.import_module("zeroskip.session"), name)
    raise AttributeError(f"module 'zeroskip' has no attribute {name!r}")
