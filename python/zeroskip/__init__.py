"""zeroskip: a sparse inference runtime.

`import zeroskip` is light: numpy only. torch and onnx are imported when a
model is loaded; the kernels (`zeroskip.kernels`) and sparse formats
(`zeroskip.formats`) never need them.
"""

from __future__ import annotations

from zeroskip.errors import FormatError, InputError, KernelError, ZeroskipError

__version__ = "0.1.0"

__all__ = ["FormatError", "InputError", "KernelError", "ZeroskipError", "__version__"]
