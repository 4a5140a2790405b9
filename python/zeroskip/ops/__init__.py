"""ONNX ops as Python functions over torch (see `_registry` for the calling convention)."""

from __future__ import annotations

from zeroskip.ops._registry import OpDef, claimed, register, require, resolve

__all__ = ["OpDef", "claimed", "register", "require", "resolve"]
