"""`from zeroskip import runtime; model = runtime.load("model.onnx")`."""

from __future__ import annotations

from zeroskip.session import InferenceSession, Session, SessionOptions, load

__all__ = ["InferenceSession", "Session", "SessionOptions", "load"]
