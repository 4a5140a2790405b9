"""The zeroskip exception hierarchy: every error a caller can cause is one of these."""

from __future__ import annotations

__all__ = ["FormatError", "InputError", "KernelError", "ModelError", "UnsupportedOpError", "ZeroskipError"]


class ZeroskipError(Exception):
    """Base class of every error zeroskip raises on purpose."""


class FormatError(ZeroskipError, ValueError):
    """A sparse matrix is malformed, or a dense one does not fit the asked-for format."""


class InputError(ZeroskipError, ValueError):
    """An array handed to a kernel or a session has the wrong dtype, shape or layout."""


class KernelError(ZeroskipError, ValueError):
    """A kernel was asked for that does not exist, does not fit the weight, or cannot run here."""


class ModelError(ZeroskipError, ValueError):
    """An ONNX model cannot be read or is malformed: the message names the file, node or value."""


class UnsupportedOpError(ModelError):
    """A model uses an op (or an op feature) zeroskip does not implement; the message lists them."""
