"""Sparse weight formats (numpy only): CSR, BSR and N:M.

Each format has `from_dense`, `to_dense`, `shape`, `nnz` (stored values),
`density`, `nbytes` and `validate()`. A value is stored when its bit pattern
is nonzero, so -0.0 and NaN survive and `to_dense(from_dense(w))` equals `w`
bit for bit. Objects are immutable: their arrays are private read-only copies.
"""

from __future__ import annotations

from zeroskip.formats.bsr import BSR
from zeroskip.formats.csr import CSR
from zeroskip.formats.nm import NM

__all__ = ["BSR", "CSR", "NM"]
