"""Imports every op module so that its registrations run."""

from __future__ import annotations

from zeroskip.ops import elementwise, fused, nn, reduce, tensor  # noqa: F401
