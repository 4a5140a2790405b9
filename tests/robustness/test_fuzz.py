"""Hypothesis fuzzing of the model loader and of the sparse formats / kernels.

(a) Random mutations (bit flips, byte overwrites, truncations, insertions, deletions) of a small valid
    model's serialized bytes go to `zeroskip.load`: it must load (and then run on valid feeds) or raise
    a ZeroskipError.
(b) Random CSR / BSR / N:M arrays, valid or corrupted (indices out of range, past 65535, negative,
    unsorted, repeated; row pointers short, long, decreasing; arrays of the wrong length, shape or
    dtype), go to the format constructors, `validate()`, `kernels.spmm` and `kernels.linear`: they
    must work and match a numpy dense reference built from the raw arrays, or raise a ZeroskipError.
    A matrix the reference finds malformed must never be accepted or multiplied.

Each test runs its whole fuzz loop in ONE subprocess (this file run as a script) so that a segfault
fails the test instead of killing pytest. The subprocess writes every example to stderr before trying
it, so a crash names the example in flight, and prints a JSON summary (examples, outcomes, failures
with one reproducer each, wall time) as its last stdout line. Failures are collected, not raised, so
one run reports every kind of failure it met.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("hypothesis")

SUMMARY = "@@ZS-SUMMARY "
EXAMPLE = "@@ZS-EXAMPLE "
MODEL_EXAMPLES = 200  # per base model
FORMAT_EXAMPLES = 600  # per format
AS_CAP = 8 << 30  # address-space cap of the worker: an absurd allocation is a MemoryError, not swap


def _settings(n: int) -> Any:
    from hypothesis import HealthCheck, settings

    return settings(
        max_examples=n,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )


def _announce(desc: str) -> None:
    sys.stderr.write(f"{EXAMPLE}{desc}\n")
    sys.stderr.flush()


def _short(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0][:300] if text else ''}"


class Failures:
    """Distinct failures, keyed by signature, with the first example of each."""

    def __init__(self) -> None:
        self.items: dict[str, dict[str, Any]] = {}

    def add(self, signature: str, example: str, detail: str) -> None:
        f = self.items.setdefault(signature, {"count": 0, "example": example[:600], "detail": detail[:600]})
        f["count"] += 1


# --- (a) model bytes -------------------------------------------------------------------------------


def _base_models() -> dict[str, bytes]:
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)
    F, I64 = TensorProto.FLOAT, TensorProto.INT64

    def model(nodes: list[Any], ins: list[Any], outs: list[Any], inits: list[Any]) -> bytes:
        g = helper.make_graph(nodes, "g", ins, outs, initializer=inits)
        return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()

    def arr(shape: tuple[int, ...], name: str) -> Any:
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)

    mlp = model(
        [
            helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"),
            helper.make_node("Add", ["h", "b1"], ["hb"], name="add1"),
            helper.make_node("Relu", ["hb"], ["r"], name="relu1"),
            helper.make_node("MatMul", ["r", "w2"], ["y"], name="mm2"),
        ],
        [helper.make_tensor_value_info("x", F, ["batch", 4])],
        [helper.make_tensor_value_info("y", F, ["batch", 2])],
        [arr((4, 3), "w1"), arr((3,), "b1"), arr((3, 2), "w2")],
    )
    conv = model(
        [helper.make_node("Conv", ["x", "w"], ["y"], name="conv1", pads=[1, 1, 1, 1], strides=[1, 1])],
        [helper.make_tensor_value_info("x", F, ["n", 2, 5, 5])],
        [helper.make_tensor_value_info("y", F, ["n", 2, 6, 6])],
        [arr((2, 2, 2, 2), "w")],
    )
    gather = model(
        [
            helper.make_node("Gather", ["table", "ids"], ["e"], name="gather1", axis=0),
            helper.make_node("Reshape", ["e", "shape"], ["y"], name="reshape1"),
        ],
        [helper.make_tensor_value_info("ids", I64, ["batch", 3])],
        [helper.make_tensor_value_info("y", F, ["batch", 6])],
        [arr((5, 2), "table"), numpy_helper.from_array(np.array([-1, 6], np.int64), "shape")],
    )
    return {"mlp": mlp, "conv": conv, "gather": gather}


def _feeds_for(session: Any) -> dict[str, np.ndarray] | None:
    """Valid feeds from the session's input specs (symbolic dims 2), or None when it declares none
    or asks for more than a million elements (that would test this harness, not zeroskip)."""
    feeds = {}
    rng = np.random.default_rng(0)
    for info in session.inputs:
        if info.dtype is None or info.shape is None:
            return None
        shape = tuple(d if isinstance(d, int) else 2 for d in info.shape)
        if any(d < 0 for d in shape) or np.prod(shape, dtype=np.float64) > 1e6:
            return None
        if info.dtype.kind == "f":
            feeds[info.name] = rng.uniform(-1, 1, shape).astype(info.dtype)
        elif info.dtype.kind in "iu":
            feeds[info.name] = rng.integers(0, 2, shape).astype(info.dtype)
        elif info.dtype.kind == "b":
            feeds[info.name] = np.ones(shape, info.dtype)
        else:
            return None
    return feeds


def _mutate(data: bytes, ops: list[tuple[Any, ...]]) -> bytes:
    b = bytearray(data)
    for op in ops:
        kind, pos = op[0], op[1]
        if not b:
            break
        pos %= len(b) + (1 if kind in ("insert", "truncate") else 0)
        if kind == "flip":
            b[pos] ^= 1 << op[2]
        elif kind == "set":
            b[pos] = op[2]
        elif kind == "truncate":
            del b[pos:]
        elif kind == "insert":
            b[pos:pos] = op[2]
        elif kind == "delete":
            del b[pos : pos + op[2]]
    return bytes(b)


def fuzz_model_bytes(base_name: str, max_examples: int) -> dict[str, Any]:
    import zeroskip
    from hypothesis import given
    from hypothesis import strategies as st

    base = _base_models()[base_name]
    pos = st.integers(0, 1 << 20)
    op = st.one_of(
        st.tuples(st.just("flip"), pos, st.integers(0, 7)),
        st.tuples(st.just("set"), pos, st.integers(0, 255)),
        st.tuples(st.just("truncate"), pos),
        st.tuples(st.just("insert"), pos, st.binary(min_size=1, max_size=8)),
        st.tuples(st.just("delete"), pos, st.integers(1, 8)),
    )
    outcomes: Counter[str] = Counter()
    failures = Failures()

    @_settings(max_examples)
    @given(st.lists(op, min_size=1, max_size=4))
    def one(ops: list[tuple[Any, ...]]) -> None:
        desc = f"{base_name} mutations {ops!r}"
        _announce(desc)
        data = _mutate(base, ops)
        stage = "load"
        try:
            s = zeroskip.load(data, options={"cache": False})
            stage = "feeds"
            feeds = _feeds_for(s)
            if feeds is None:
                outcomes["loaded, no runnable feeds"] += 1
                return
            stage = "run"
            s.run(feeds)
            outcomes["loaded and ran"] += 1
        except zeroskip.ZeroskipError as e:
            outcomes[f"{type(e).__name__} at {stage}"] += 1
        except BaseException as e:
            outcomes[f"WRONG EXCEPTION {type(e).__name__} at {stage}"] += 1
            failures.add(f"{type(e).__name__} at {stage}", desc, _short(e))

    t0 = time.perf_counter()
    one()
    return {
        "examples": sum(outcomes.values()),
        "outcomes": dict(outcomes),
        "failures": failures.items,
        "seconds": round(time.perf_counter() - t0, 2),
    }


# --- (b) sparse formats and kernels ----------------------------------------------------------------


def _ints_ok(a: np.ndarray) -> bool:
    return a.dtype.kind in "iu"


def _arrays(lenient: bool, value_shape: Any, *arrays: Any) -> list[np.ndarray]:
    """The raw arrays as the references read them. An empty array of any dtype is an empty float (for
    values) or int64 (for indices) array. Lenient (what a kernel may do with an unvalidated matrix):
    float index arrays holding whole numbers are integers, and values of the right size take the
    expected shape (`value_shape`, given once the index arrays fix it)."""
    v, *idx = (np.asarray(a) for a in arrays)
    if v.size == 0 and v.dtype.kind not in "fiu":
        v = np.zeros(v.shape, np.float32)
    out = [v]
    for a in idx:
        if a.size == 0 and not _ints_ok(a):
            a = np.zeros(a.shape, np.int64)
        elif lenient and a.dtype.kind == "f" and np.isfinite(a).all() and (a == np.round(a)).all():
            a = a.astype(np.int64)
        out.append(a)
    if lenient and value_shape is not None and v.size == int(np.prod(value_shape)) and v.shape != value_shape:
        out[0] = v.reshape(value_shape)
    return out


def ref_csr(values: Any, indices: Any, indptr: Any, shape: Any, lenient: bool = False) -> np.ndarray | None:
    """The dense float64 matrix the raw CSR arrays describe, or None when they are malformed."""
    m, k = shape
    v, idx, ptr = _arrays(lenient, (np.asarray(indices).size,), values, indices, indptr)
    if v.ndim != 1 or idx.ndim != 1 or ptr.ndim != 1 or v.dtype.kind not in "fiu":
        return None
    if not (_ints_ok(idx) and _ints_ok(ptr)) or idx.shape != v.shape or ptr.shape != (m + 1,):
        return None
    if int(ptr[0]) != 0 or int(ptr[-1]) != v.size or any(int(a) > int(b) for a, b in zip(ptr[:-1], ptr[1:])):
        return None
    dense = np.zeros((m, k))
    for r in range(m):
        cols = [int(c) for c in idx[int(ptr[r]) : int(ptr[r + 1])]]
        if any(c < 0 or c >= k for c in cols) or any(a >= b for a, b in zip(cols, cols[1:])):
            return None
        dense[r, cols] = v[int(ptr[r]) : int(ptr[r + 1])].astype(np.float32)
    return dense


def ref_bsr(
    values: Any, indices: Any, indptr: Any, shape: Any, block: Any, lenient: bool = False
) -> np.ndarray | None:
    m, k = shape
    r, c = block
    if not (1 <= r <= 1024 and 1 <= c <= 1024):
        return None
    mb, kb = -(-m // r), -(-k // c)
    v, idx, ptr = _arrays(lenient, (np.asarray(indices).size, r, c), values, indices, indptr)
    if v.ndim != 3 or v.shape[1:] != (r, c) or v.dtype.kind not in "fiu":
        return None
    if idx.ndim != 1 or ptr.ndim != 1 or not (_ints_ok(idx) and _ints_ok(ptr)) or idx.shape[0] != v.shape[0]:
        return None
    if ptr.shape != (mb + 1,) or int(ptr[0]) != 0 or int(ptr[-1]) != idx.size:
        return None
    if any(int(a) > int(b) for a, b in zip(ptr[:-1], ptr[1:])):
        return None
    padded = np.zeros((mb * r, kb * c))
    for br in range(mb):
        cols = [int(x) for x in idx[int(ptr[br]) : int(ptr[br + 1])]]
        if any(x < 0 or x >= kb for x in cols) or any(a >= b for a, b in zip(cols, cols[1:])):
            return None
        for j, bc in zip(range(int(ptr[br]), int(ptr[br + 1])), cols):
            padded[br * r : br * r + r, bc * c : bc * c + c] = v[j].astype(np.float32)
    if (padded[m:] != 0).any() or (padded[:, k:] != 0).any():
        return None
    return padded[:m, :k]


def ref_nm(values: Any, meta: Any, shape: Any, n: int, m: int, lenient: bool = False) -> np.ndarray | None:
    rows, k = shape
    if not 1 <= n < m <= 256 or k % m:
        return None
    bits = 2 if m <= 4 else 4 if m <= 16 else 8
    kept = k // m * n
    v, mt = _arrays(lenient, (rows, kept), values, meta)
    if v.shape != (rows, kept) or v.dtype.kind not in "fiu" or mt.ndim != 2 or not _ints_ok(mt):
        return None
    if mt.shape[0] != rows or mt.shape[1] * 8 < kept * bits or ((mt < 0) | (mt > 255)).any():
        return None
    dense = np.zeros((rows, k))
    per = 8 // bits
    for i in range(rows):
        offs = [(int(mt[i, j // per]) >> (bits * (j % per))) & ((1 << bits) - 1) for j in range(kept)]
        for g in range(k // m):
            grp = offs[g * n : g * n + n]
            if any(o >= m for o in grp) or any(a >= b for a, b in zip(grp, grp[1:])):
                return None
            for j, o in enumerate(grp):
                dense[i, g * m + o] = np.float32(v[i, g * n + j])
    return dense


def _corrupt_csr(c: str, a: dict[str, Any], rng: np.random.Generator) -> bool:
    """Apply corruption `c` to the raw arrays in `a`; False when it does not apply to this matrix."""
    v, idx, ptr = a["values"], a["indices"], a["indptr"]
    m, k = a["shape"]
    nnz = idx.size
    j = int(rng.integers(nnz)) if nnz else 0
    if c == "none":
        return True
    if c == "index_out_of_range":
        if not nnz:
            return False
        idx[j] = k + int(rng.integers(0, 3))
    elif c == "index_plus_65536":  # fits in int64, wraps to a valid column in uint16
        if not nnz:
            return False
        idx[j] += 65536
    elif c == "index_negative":
        if not nnz:
            return False
        idx[j] = -1 - int(rng.integers(0, 3))
    elif c in ("index_unsorted", "index_duplicate"):
        rows = [r for r in range(m) if ptr[r + 1] - ptr[r] >= 2]
        if not rows:
            return False
        s = int(ptr[rows[int(rng.integers(len(rows)))]])
        if c == "index_unsorted":
            idx[s], idx[s + 1] = idx[s + 1], idx[s]
        else:
            idx[s + 1] = idx[s]
    elif c == "index_uint64_huge":
        if not nnz:
            return False
        a["indices"] = idx.astype(np.uint64)
        a["indices"][j] = np.uint64(2**63 + int(idx[j]))
    elif c == "indptr_short":
        a["indptr"] = ptr[:-1]
    elif c == "indptr_long":
        a["indptr"] = np.append(ptr, ptr[-1])
    elif c == "indptr_decreasing":
        if m < 2:
            return False
        ptr[1] = ptr[2] + 1
    elif c == "indptr_first_nonzero":
        ptr[0] = 1
    elif c == "indptr_last_too_big":
        ptr[-1] += 1 + int(rng.integers(0, 1000))
    elif c == "indptr_huge":
        ptr[1:] = 2**62
    elif c == "indptr_negative":
        if m < 2:
            return False
        ptr[1:-1] = -5
    elif c == "values_short":
        if not nnz:
            return False
        a["values"] = v[:-1]
    elif c == "values_long":
        a["values"] = np.append(v, np.float32(1))
    elif c == "values_2d":
        a["values"] = v.reshape(-1, 1)
    elif c == "values_float64":
        a["values"] = v.astype(np.float64)
    elif c == "values_int":
        a["values"] = np.round(v * 4).astype(np.int32)
    elif c == "values_complex":
        a["values"] = v.astype(np.complex64) + 1j
    elif c == "values_str":
        a["values"] = np.array(["w"] * nnz)
    elif c == "indices_float":
        a["indices"] = idx.astype(np.float64) + 0.5
    elif c == "indptr_float":
        a["indptr"] = ptr.astype(np.float32)
    elif c == "shape_k_smaller":
        if k == 0:
            return False
        a["shape"] = (m, k - 1)
    elif c == "shape_m_bigger":
        a["shape"] = (m + 1, k)
    else:
        raise AssertionError(c)
    return True


CSR_CORRUPTIONS = [
    "none",
    "index_out_of_range",
    "index_plus_65536",
    "index_negative",
    "index_unsorted",
    "index_duplicate",
    "index_uint64_huge",
    "indptr_short",
    "indptr_long",
    "indptr_decreasing",
    "indptr_first_nonzero",
    "indptr_last_too_big",
    "indptr_huge",
    "indptr_negative",
    "values_short",
    "values_long",
    "values_2d",
    "values_float64",
    "values_int",
    "values_complex",
    "values_str",
    "indices_float",
    "indptr_float",
    "shape_k_smaller",
    "shape_m_bigger",
]
BSR_CORRUPTIONS = [*CSR_CORRUPTIONS, "values_wrong_block", "nonzero_overhang", "block_zero", "block_huge"]
NM_CORRUPTIONS = [
    "none",
    "meta_random_byte",
    "meta_int64_plus_256",
    "meta_negative",
    "meta_short",
    "meta_wrong_rows",
    "meta_float",
    "values_short",
    "values_wrong_rows",
    "values_float64",
    "values_complex",
    "values_str",
    "shape_k_not_multiple",
    "pattern_n_ge_m",
]


def _corrupt_bsr(c: str, a: dict[str, Any], rng: np.random.Generator) -> bool:
    v = a["values"]
    m, k = a["shape"]
    r, cb = a["block"]
    if c == "values_wrong_block":
        a["values"] = v.reshape(v.shape[0], cb, r) if r != cb else v[:, :, :0]
        return True
    if c == "nonzero_overhang":
        if not v.shape[0] or (m % r == 0 and k % cb == 0):
            return False
        v[:, -1, -1] = 7.0  # an entry past the matrix edge, in some block
        return True
    if c == "block_zero":
        a["block"] = (0, cb)
        return True
    if c == "block_huge":
        a["block"] = (r, 2048)
        return True
    if c in ("values_2d", "values_short", "values_long"):
        if c == "values_2d":
            a["values"] = v.reshape(v.shape[0], r * cb)
        elif c == "values_short":
            if not v.shape[0]:
                return False
            a["values"] = v[:-1]
        else:
            a["values"] = np.concatenate([v, np.ones((1, r, cb), np.float32)])
        return True
    if c in ("shape_k_smaller", "shape_m_bigger"):
        # shrink K past a whole block column / grow M past a whole block row, so the block counts change
        if c == "shape_k_smaller":
            if k <= cb:
                return False
            a["shape"] = (m, (-(-k // cb) - 1) * cb)
        else:
            a["shape"] = ((-(-m // r) + 1) * r, k)
        return True
    if c == "values_str":
        a["values"] = np.array([[["w"] * cb] * r] * v.shape[0])
        return True
    kb = -(-k // cb)
    a_csr = {"values": v, "indices": a["indices"], "indptr": a["indptr"], "shape": (-(-m // r), kb)}
    ok = _corrupt_csr(c, a_csr, rng)
    if c.startswith("values"):
        a["values"] = a_csr["values"]
    a["indices"], a["indptr"] = a_csr["indices"], a_csr["indptr"]
    return ok


def _corrupt_nm(c: str, a: dict[str, Any], rng: np.random.Generator) -> bool:
    v, meta = a["values"], a["meta"]
    rows, k = a["shape"]
    if c == "none":
        return True
    if c == "meta_random_byte":
        if not meta.size:
            return False
        meta[int(rng.integers(meta.shape[0])), int(rng.integers(meta.shape[1]))] = int(rng.integers(256))
    elif c == "meta_int64_plus_256":  # wraps back to the same byte in uint8
        if not meta.size:
            return False
        a["meta"] = meta.astype(np.int64)
        a["meta"][0, 0] += 256
    elif c == "meta_negative":
        if not meta.size:
            return False
        a["meta"] = meta.astype(np.int64)
        a["meta"][0, 0] = -1
    elif c == "meta_short":
        if not meta.shape[1]:
            return False
        a["meta"] = meta[:, :-1]
    elif c == "meta_wrong_rows":
        a["meta"] = np.concatenate([meta, meta[:1] if rows else np.zeros((1, meta.shape[1]), np.uint8)])
    elif c == "meta_float":
        a["meta"] = meta.astype(np.float32)
    elif c == "values_short":
        if not v.size:
            return False
        a["values"] = v[:, :-1]
    elif c == "values_wrong_rows":
        a["values"] = v[:-1] if rows else np.zeros((1, v.shape[1]), np.float32)
    elif c == "values_float64":
        a["values"] = v.astype(np.float64)
    elif c == "values_complex":
        a["values"] = v.astype(np.complex64) + 1j
    elif c == "values_str":
        a["values"] = np.full(v.shape, "w")
    elif c == "shape_k_not_multiple":
        a["shape"] = (rows, k + 1)
    elif c == "pattern_n_ge_m":
        a["n"] = a["m"]
    else:
        raise AssertionError(c)
    return True


def _x_for(
    kind: str, k: int, cols: int, rng: np.random.Generator, linear: bool
) -> tuple[Any, np.ndarray | None]:
    """(x as handed to the kernel, x as the reference reads it, or None when the kernel must refuse
    it). spmm takes (K, N) or (K,); linear takes (M, K) or (K,)."""
    base = rng.standard_normal((cols, k) if linear else (k, cols)).astype(np.float32)
    if kind == "ok":
        return base, base
    if kind == "vector":
        v = base[0] if linear else base[:, 0]
        return v, v
    if kind == "non_contiguous":
        wide = np.repeat(base, 2, axis=1)[:, ::2]
        return wide, base
    if kind == "float64":
        return base.astype(np.float64), base
    if kind == "int":
        return np.round(base).astype(np.int32), np.round(base)
    if kind == "wrong_k":
        bad = rng.standard_normal((cols, k + 1) if linear else (k + 1, cols)).astype(np.float32)
        return bad, None
    if kind == "rank3":
        return base[None], None
    if kind == "list":
        return base.tolist(), base
    raise AssertionError(kind)


X_KINDS = ["ok", "ok", "ok", "vector", "non_contiguous", "float64", "int", "wrong_k", "rank3", "list"]


def _close(y: np.ndarray, want: np.ndarray, scale: np.ndarray, k: int) -> str | None:
    """y against the float64 reference `want`, within the float32 rounding a K-long dot product allows
    (`scale` = |w| @ |x|, as in tests/conftest.py)."""
    if y.shape != want.shape or y.dtype != np.float32:
        return f"result {y.dtype} {y.shape}, expected float32 {want.shape}"
    bound = 4 * np.finfo(np.float32).eps * (k + 1) * scale + 1e-30
    err = np.abs(y.astype(np.float64) - want)
    if not (err <= bound).all():
        i = tuple(int(t) for t in np.argwhere(~(err <= bound))[0])
        return f"wrong value at {i}: got {y[i]!r}, expected {want[i]!r}"
    return None


def fuzz_formats(fmt: str, max_examples: int) -> dict[str, Any]:
    from hypothesis import given
    from hypothesis import strategies as st
    from zeroskip import ZeroskipError, kernels, prune
    from zeroskip.formats import BSR, CSR, NM

    corruptions = {"csr": CSR_CORRUPTIONS, "bsr": BSR_CORRUPTIONS, "nm": NM_CORRUPTIONS}[fmt]
    outcomes: Counter[str] = Counter()
    failures = Failures()

    @_settings(max_examples)
    @given(
        st.integers(0, 2**32 - 1),
        st.integers(0, 9),
        st.integers(0, 14),
        st.sampled_from([0.0, 0.5, 0.8, 1.0]),
        st.sampled_from(corruptions),
        st.sampled_from(["validate", "validate_later", "unvalidated_kernel"]),
        st.sampled_from(X_KINDS),
        st.sampled_from(["spmm", "linear"]),
        st.integers(1, 4),
        st.sampled_from([(1, 1), (2, 2), (4, 1), (1, 4), (3, 2)]),
        st.sampled_from([(2, 4), (1, 4), (1, 3), (2, 8), (3, 16)]),
    )
    def one(
        seed: int,
        m: int,
        k: int,
        sparsity: float,
        corruption: str,
        path: str,
        xkind: str,
        op: str,
        cols: int,
        block: tuple[int, int],
        pattern: tuple[int, int],
    ) -> None:
        rng = np.random.default_rng(seed)
        if fmt == "nm":
            n, mm = pattern
            k = mm * (k % 4)
            w = prune.nm_mask(rng.standard_normal((m, k)).astype(np.float32), n, mm)
            w[rng.random(w.shape) < sparsity * 0.5] = 0.0
        else:
            w = rng.standard_normal((m, k)).astype(np.float32)
            w[rng.random(w.shape) < sparsity] = 0.0
        if fmt == "csr":
            d = CSR.from_dense(w)
            a = {"values": d.values.copy(), "indices": d.indices.astype(np.int64), "indptr": d.indptr.copy()}
            a["shape"] = d.shape
            applied = _corrupt_csr(corruption, a, rng)
        elif fmt == "bsr":
            d = BSR.from_dense(w, block)
            a = {"values": d.values.copy(), "indices": d.indices.astype(np.int64), "indptr": d.indptr.copy()}
            a["shape"], a["block"] = d.shape, d.block
            applied = _corrupt_bsr(corruption, a, rng)
        else:
            d = NM.from_dense(w, *pattern)
            a = {"values": d.values.copy(), "meta": d.meta.copy(), "shape": d.shape, "n": d.n, "m": d.m}
            applied = _corrupt_nm(corruption, a, rng)
        if not applied:
            corruption = "none"
        desc = (
            f"{fmt} corruption={corruption} path={path} op={op} x={xkind} seed={seed} "
            f"shape={w.shape} sparsity={sparsity} block={block} pattern={pattern} cols={cols}"
        )
        _announce(desc)

        def reference(lenient: bool) -> np.ndarray | None:
            if fmt == "csr":
                return ref_csr(a["values"], a["indices"], a["indptr"], a["shape"], lenient)
            if fmt == "bsr":
                return ref_bsr(a["values"], a["indices"], a["indptr"], a["shape"], a["block"], lenient)
            return ref_nm(a["values"], a["meta"], a["shape"], a["n"], a["m"], lenient)

        ref = reference(False)
        tag = f"{corruption} ({'valid' if ref is not None else 'malformed'})"

        def fail(what: str, detail: str) -> None:
            outcomes[f"FAIL {what}"] += 1
            failures.add(f"{fmt} {corruption}: {what}", desc, detail)

        stage = "construct"
        try:
            validate = path == "validate"
            if fmt == "csr":
                obj = CSR(a["values"], a["indices"], a["indptr"], a["shape"], validate=validate)
            elif fmt == "bsr":
                obj = BSR(a["values"], a["indices"], a["indptr"], a["shape"], a["block"], validate=validate)
            else:
                obj = NM(a["values"], a["meta"], a["shape"], a["n"], a["m"], validate=validate)
            if path == "validate_later":
                stage = "validate"
                obj.validate()
            accepted = path != "unvalidated_kernel"
            if accepted and ref is None:
                fail(f"malformed matrix accepted by {stage}", repr(a)[:500])
                return
            if accepted:
                dense = obj.to_dense()
                if not np.array_equal(dense, ref.astype(np.float32)):
                    fail("to_dense differs from the arrays", repr(a)[:500])
                    return
            stage = op
            x, xref = _x_for(xkind, obj.shape[1], cols, rng, op == "linear")
            y = kernels.spmm(obj, x) if op == "spmm" else kernels.linear(obj, x)
        except ZeroskipError as e:
            msg = str(e)
            if "\n" in msg.strip():
                fail(f"multi-line message at {stage}", msg)
            else:
                outcomes[f"{type(e).__name__} at {stage}: {tag}"] += 1
            return
        except BaseException as e:
            fail(f"{type(e).__name__} at {stage}", _short(e))
            return
        if ref is None:
            ref = reference(True)  # the kernel may read the unvalidated arrays leniently, not wrongly
            if ref is None:
                fail(f"{op} ran on a malformed matrix", repr(a)[:500])
                return
            tag = f"{corruption} (read leniently)"
        if xref is None:
            fail(f"{op} accepted x={xkind}", f"x shape {np.shape(x)}, matrix {obj.shape}")
            return
        xr = xref.astype(np.float64)
        if op == "spmm":
            want, scale = ref @ xr, np.abs(ref) @ np.abs(xr)
        else:
            want, scale = xr @ ref.T, np.abs(xr) @ np.abs(ref).T
        problem = _close(np.asarray(y), want, scale, ref.shape[1])
        if problem:
            fail(f"wrong {op} result", problem)
            return
        outcomes[f"works: {tag}"] += 1

    t0 = time.perf_counter()
    one()
    return {
        "examples": sum(outcomes.values()),
        "outcomes": dict(sorted(outcomes.items())),
        "failures": failures.items,
        "seconds": round(time.perf_counter() - t0, 2),
    }


# --- the tests (each one subprocess) ---------------------------------------------------------------


def _run_worker(args: list[str], timeout: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="zs-fuzz-") as tmp:
        return _run_worker_in(args, timeout, tmp)


def _run_worker_in(args: list[str], timeout: float, tmp: str) -> dict[str, Any]:
    # hypothesis keeps a constants cache in ./.hypothesis even with database=None: keep it out of the repo
    env = dict(
        os.environ,
        PYTHONFAULTHANDLER="1",
        ZEROSKIP_CACHE_DIR=os.path.join(tmp, "cache"),
        HYPOTHESIS_STORAGE_DIRECTORY=os.path.join(tmp, "hypothesis"),
    )
    try:
        proc = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )
    except subprocess.TimeoutExpired as e:
        err = e.stderr.decode() if isinstance(e.stderr, bytes) else (e.stderr or "")
        last = [ln for ln in err.splitlines() if ln.startswith(EXAMPLE)]
        pytest.fail(
            f"HANG: no summary within {timeout} s; last example: {last[-1:] or 'none'}", pytrace=False
        )
    summaries = [ln for ln in proc.stdout.splitlines() if ln.startswith(SUMMARY)]
    if proc.returncode != 0 or not summaries:
        last = [ln[len(EXAMPLE) :] for ln in proc.stderr.splitlines() if ln.startswith(EXAMPLE)]
        how = f"signal {-proc.returncode}" if proc.returncode < 0 else f"exit code {proc.returncode}"
        pytest.fail(
            f"CRASH ({how}) in the fuzz worker; example in flight: {last[-1] if last else 'none'}\n"
            f"{proc.stderr[-3000:]}",
            pytrace=False,
        )
    return json.loads(summaries[-1][len(SUMMARY) :])


def _report(summary: dict[str, Any]) -> None:
    print(json.dumps(summary, indent=1))
    if summary["failures"]:
        lines = [
            f"- {sig} (x{f['count']}): {f['detail']}\n    e.g. {f['example']}"
            for sig, f in summary["failures"].items()
        ]
        pytest.fail(
            f"{len(summary['failures'])} kind(s) of failure in {summary['examples']} examples:\n"
            + "\n".join(lines),
            pytrace=False,
        )


@pytest.mark.parametrize("base", ["mlp", "conv", "gather"])
def test_fuzz_model_bytes(base: str) -> None:
    summary = _run_worker(["models", base, str(MODEL_EXAMPLES)], timeout=120)
    assert summary["examples"] >= MODEL_EXAMPLES // 2
    _report(summary)


@pytest.mark.parametrize("fmt", ["csr", "bsr", "nm"])
def test_fuzz_sparse_formats(fmt: str) -> None:
    summary = _run_worker(["formats", fmt, str(FORMAT_EXAMPLES)], timeout=120)
    assert summary["examples"] >= FORMAT_EXAMPLES // 2
    _report(summary)


def _worker(argv: list[str]) -> None:
    import resource
    import warnings

    warnings.simplefilter("ignore")
    resource.setrlimit(resource.RLIMIT_AS, (AS_CAP, AS_CAP))
    what, name, count = argv[0], argv[1], int(argv[2])
    if what == "models":
        import zeroskip.session  # noqa: F401  (torch and onnx before the clock starts)

        summary = fuzz_model_bytes(name, count)
    else:
        summary = fuzz_formats(name, count)
    summary["what"] = f"{what} {name}"
    sys.stdout.write(SUMMARY + json.dumps(summary) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    _worker(sys.argv[1:])
