"""Malformed-input survey: corrupted ONNX models and bad feeds must give a clear zeroskip error, or work.

Every case builds a small valid model (MatMul+Add+Relu MLP, a Conv, a Gather), corrupts it (or its
feeds) and asks zeroskip to load and run it. The allowed outcomes are:

* it works, and the outputs equal onnxruntime's (for inputs that are legitimately valid), or
* it raises a `zeroskip.ZeroskipError` subclass (ModelError at load for malformed models, InputError at
  run for bad feeds) whose message is a single line and names the node / input / initializer involved.

A segfault, an abort, a hang, a MemoryError or a raw ValueError/KeyError/RuntimeError is a failure.

All cases run in a worker subprocess (this file run as a script, `--worker`), one case after the
other, each one announced on stdout before it starts. A worker that dies or stops answering marks the
case in flight as CRASH / HANG and a fresh worker goes on with the rest, so one crash fails one test
and never takes pytest down. The worker caps its address space (8 GiB), so a model that asks for an
absurd allocation shows up as a MemoryError instead of swapping the machine.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

F = TensorProto.FLOAT
I64 = TensorProto.INT64
OPSET = 17
CASE_TIMEOUT_S = 30.0
PROTOCOL = "@@ZS "

# --- the base models -------------------------------------------------------------------------------


def _rng() -> np.random.Generator:
    return np.random.default_rng(20240611)


def _vi(name: str, shape: list[Any] | None, t: int = F) -> Any:
    return helper.make_tensor_value_info(name, t, shape)


def _model(
    nodes: list[Any],
    inputs: list[Any],
    outputs: list[Any],
    inits: list[Any] = (),  # type: ignore[assignment]
    sparse: list[Any] = (),  # type: ignore[assignment]
    opsets: list[tuple[str, int]] | None = None,
) -> Any:
    g = helper.make_graph(
        nodes, "g", inputs, outputs, initializer=list(inits), sparse_initializer=list(sparse)
    )
    opsets = [("", OPSET)] if opsets is None else opsets
    return helper.make_model(g, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets])


def _mlp_parts(x_shape: list[Any] | None = None) -> tuple[list[Any], list[Any], list[Any], list[Any]]:
    rng = _rng()
    w1 = rng.standard_normal((8, 16)).astype(np.float32)
    b1 = rng.standard_normal(16).astype(np.float32)
    w2 = rng.standard_normal((16, 4)).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"),
        helper.make_node("Add", ["h", "b1"], ["hb"], name="add1"),
        helper.make_node("Relu", ["hb"], ["r"], name="relu1"),
        helper.make_node("MatMul", ["r", "w2"], ["y"], name="mm2"),
    ]
    inits = [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"))]
    x_shape = ["batch", 8] if x_shape is None else x_shape
    return nodes, [_vi("x", x_shape)], [_vi("y", ["batch", 4])], inits


def mlp(x_shape: list[Any] | None = None) -> Any:
    nodes, ins, outs, inits = _mlp_parts(x_shape)
    return _model(nodes, ins, outs, inits)


def conv() -> Any:
    w = _rng().standard_normal((4, 3, 3, 3)).astype(np.float32)
    b = _rng().standard_normal(4).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv1", pads=[1, 1, 1, 1])]
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")]
    return _model(nodes, [_vi("x", ["n", 3, "h", "w"])], [_vi("y", ["n", 4, "h", "w"])], inits)


def gather() -> Any:
    table = _rng().standard_normal((10, 4)).astype(np.float32)
    nodes = [helper.make_node("Gather", ["table", "ids"], ["y"], name="gather1", axis=0)]
    return _model(
        nodes,
        [_vi("ids", ["batch", 5], I64)],
        [_vi("y", ["batch", 5, 4])],
        [numpy_helper.from_array(table, "table")],
    )


def mlp_x(batch: int = 2) -> np.ndarray:
    return np.random.default_rng(7).standard_normal((batch, 8)).astype(np.float32)


def conv_x() -> np.ndarray:
    return np.random.default_rng(8).standard_normal((1, 3, 8, 8)).astype(np.float32)


def gather_ids() -> np.ndarray:
    return np.random.default_rng(9).integers(0, 10, (2, 5)).astype(np.int64)


BASES: dict[str, tuple[Callable[[], Any], Callable[[], dict[str, Any]]]] = {
    "mlp": (mlp, lambda: {"x": mlp_x()}),
    "conv": (conv, lambda: {"x": conv_x()}),
    "gather": (gather, lambda: {"ids": gather_ids()}),
}


def _copy(m: Any) -> Any:
    out = onnx.ModelProto()
    out.CopyFrom(m)
    return out


def _init(m: Any, name: str) -> Any:
    return next(t for t in m.graph.initializer if t.name == name)


# --- the cases -------------------------------------------------------------------------------------

# expect:
#   "load:<Error>"  load() raises that zeroskip error class (or a subclass)
#   "run:<Error>"   load() works, run() raises that class
#   "error"         some ZeroskipError, at load or at run
#   "works"         load and run work and the outputs equal onnxruntime's
#   "either"        works (and then equals onnxruntime's where onnxruntime runs it) or a ZeroskipError


@dataclass(frozen=True)
class Case:
    build: Callable[[], tuple[Any, dict[str, Any] | None]]  # (model, feeds); feeds None: load only
    expect: str
    names: tuple[str, ...] = ()  # the error message must mention one of these
    ref_feeds: Callable[[], dict[str, np.ndarray]] | None = None  # feeds for onnxruntime if not `feeds`
    skip_rows: int = 0  # rows of every output not compared (they hold NaN / Inf)
    family: str = ""


CASES: dict[str, Case] = {}


def case(cid: str, family: str, expect: str, names: tuple[str, ...] = (), **kw: Any) -> Callable[..., Any]:
    def deco(fn: Callable[[], tuple[Any, dict[str, Any] | None]]) -> Callable[..., Any]:
        assert cid not in CASES, cid
        CASES[cid] = Case(fn, expect, names, family=family, **kw)
        return fn

    return deco


def add(cid: str, family: str, build: Callable[[], Any], expect: str, names: tuple[str, ...] = (), **kw: Any):
    case(cid, family, expect, names, **kw)(build)


# Truncated files.
for _base in BASES:
    _cuts: list[tuple[str, Callable[[int], int]]] = [
        ("0B", lambda n: 0),
        ("1B", lambda n: 1),
        ("2B", lambda n: 2),
        ("16B", lambda n: 16),
        ("half", lambda n: n // 2),
        ("minus1B", lambda n: n - 1),
    ]
    for _label, _cut in _cuts:

        def _trunc(base: str = _base, cut: Callable[[int], int] = _cut) -> tuple[Any, Any]:
            data = BASES[base][0]().SerializeToString()
            return data[: cut(len(data))], BASES[base][1]()

        add(f"truncate-{_base}-{_label}", "truncated file", _trunc, "load:ModelError")

# Bit flips at seeded positions.
for _base in BASES:
    for _flips in (1, 8, 64):
        for _seed in (0, 1, 2):

            def _flip(base: str = _base, flips: int = _flips, seed: int = _seed) -> tuple[Any, Any]:
                data = bytearray(BASES[base][0]().SerializeToString())
                rng = np.random.default_rng(seed)
                for pos in rng.integers(0, len(data) * 8, flips):
                    data[pos // 8] ^= 1 << (pos % 8)
                return bytes(data), BASES[base][1]()

            add(f"bitflip-{_base}-{_flips}x-seed{_seed}", "bit flips", _flip, "either")


# IR version and opsets.
def _with_ir(v: int) -> Callable[[], tuple[Any, Any]]:
    def build() -> tuple[Any, Any]:
        m = mlp()
        m.ir_version = v
        return m, {"x": mlp_x()}

    return build


add("ir-version-0", "IR version", _with_ir(0), "load:ModelError", ("ir_version", "IR version", "ir version"))
add("ir-version-2", "IR version", _with_ir(2), "load:ModelError", ("ir_version", "IR version", "ir version"))
add(
    "ir-version-99", "IR version", _with_ir(99), "load:ModelError", ("ir_version", "IR version", "ir version")
)
add(
    "ir-version-2**62",
    "IR version",
    _with_ir(2**62),
    "load:ModelError",
    ("ir_version", "IR version", "ir version"),
)
add(
    "ir-version-negative",
    "IR version",
    _with_ir(-5),
    "load:ModelError",
    ("ir_version", "IR version", "ir version"),
)


def _with_opsets(opsets: list[tuple[str, int]]) -> Callable[[], tuple[Any, Any]]:
    def build() -> tuple[Any, Any]:
        nodes, ins, outs, inits = _mlp_parts()
        return _model(nodes, ins, outs, inits, opsets=opsets), {"x": mlp_x()}

    return build


add("opset-0", "opset", _with_opsets([("", 0)]), "load:ModelError", ("opset", "Opset", "version"))
add("opset-999", "opset", _with_opsets([("", 999)]), "load:ModelError", ("opset", "Opset", "version"))
add("opset-missing-default", "opset", _with_opsets([]), "load:ModelError", ("opset", "Opset", "domain"))
add(
    "opset-only-other-domain",
    "opset",
    _with_opsets([("com.example", 1)]),
    "load:ModelError",
    ("opset", "Opset", "domain"),
)


# Graph input dims.
def _x_dims(shape: list[Any]) -> Callable[[], tuple[Any, Any]]:
    return lambda: (mlp(shape), {"x": mlp_x()})


add("input-dim-negative", "graph input dims", _x_dims([-1, 8]), "load:ModelError", ("'x'",))
add("input-dim-negative-huge", "graph input dims", _x_dims([2, -(2**62)]), "load:ModelError", ("'x'",))
add("input-dim-2**40", "graph input dims", _x_dims([2**40, 8]), "load:ModelError", ("'x'",))
add("input-dim-2**62", "graph input dims", _x_dims([2, 2**62]), "load:ModelError", ("'x'",))
add("input-dim-zero-batch", "graph input dims", lambda: (mlp([0, 8]), {"x": mlp_x(0)}), "works")
add(
    "input-dim-zero-feature",
    "graph input dims",
    lambda: (mlp([2, 0]), {"x": np.zeros((2, 0), np.float32)}),
    "error",
    ("'x'", "mm1"),
)


def _output_dims_absurd() -> tuple[Any, Any]:
    m = mlp()
    m.graph.output[0].type.tensor_type.shape.dim[1].dim_value = 2**62
    return m, {"x": mlp_x()}


add("output-dim-2**62", "graph input dims", _output_dims_absurd, "either", ("'y'",))


# Initializers whose data does not fit their dims or type.
def _init_change(change: Callable[[Any], None], name: str = "w1") -> Callable[[], tuple[Any, Any]]:
    def build() -> tuple[Any, Any]:
        m = mlp()
        change(_init(m, name))
        return m, {"x": mlp_x()}

    return build


def _raw(delta: int) -> Callable[[Any], None]:
    def change(t: Any) -> None:
        raw = t.raw_data
        t.raw_data = raw[:delta] if delta < 0 else raw + b"\0" * delta

    return change


def _dims(dims: list[int], raw: bytes | None = None) -> Callable[[Any], None]:
    def change(t: Any) -> None:
        del t.dims[:]
        t.dims.extend(dims)
        if raw is not None:
            t.raw_data = raw

    return change


def _dtype(code: int) -> Callable[[Any], None]:
    def change(t: Any) -> None:
        t.data_type = code

    return change


def _float_data_short(t: Any) -> None:
    arr = numpy_helper.to_array(t)
    t.ClearField("raw_data")
    t.float_data.extend(arr.ravel()[:-3].tolist())


NAMES_W1 = ("'w1'", '"w1"', "w1")
add("init-raw-too-short-4B", "initializer data/dims", _init_change(_raw(-4)), "load:ModelError", NAMES_W1)
add("init-raw-too-short-1B", "initializer data/dims", _init_change(_raw(-1)), "load:ModelError", NAMES_W1)
add("init-raw-too-long-4B", "initializer data/dims", _init_change(_raw(4)), "load:ModelError", NAMES_W1)
add("init-raw-too-long-3B", "initializer data/dims", _init_change(_raw(3)), "load:ModelError", NAMES_W1)
add(
    "init-float-data-short",
    "initializer data/dims",
    _init_change(_float_data_short),
    "load:ModelError",
    NAMES_W1,
)
add(
    "init-dims-huge-tiny-data",
    "initializer data/dims",
    _init_change(_dims([2**31, 2**31], b"\0" * 4)),
    "load:ModelError",
    NAMES_W1,
)
add(
    "init-dims-overflow-empty-data",
    "initializer data/dims",
    _init_change(_dims([2**32, 2**32], b"")),
    "load:ModelError",
    NAMES_W1,
)
add(
    "init-dims-negative",
    "initializer data/dims",
    _init_change(_dims([-8, -16])),
    "load:ModelError",
    NAMES_W1,
)
add("init-dims-wrong-rank", "initializer data/dims", _init_change(_dims([128])), "error", (*NAMES_W1, "mm1"))
add("init-dtype-0", "initializer data type", _init_change(_dtype(0)), "load:ModelError", NAMES_W1)
add("init-dtype-99", "initializer data type", _init_change(_dtype(99)), "load:ModelError", NAMES_W1)
add(
    "init-dtype-string",
    "initializer data type",
    _init_change(_dtype(8)),
    "load:ModelError",
    (*NAMES_W1, "mm1"),
)
add(
    "init-dtype-double-raw-mismatch",
    "initializer data type",
    _init_change(_dtype(11)),
    "load:ModelError",
    (*NAMES_W1, "mm1"),
)


# Sparse initializers (flat indices and COO coordinates).
def _sparse(
    idx: np.ndarray, vals: np.ndarray | None = None, dims: tuple[int, ...] = (8, 16), dtype: Any = np.float32
) -> Callable[[], tuple[Any, Any]]:
    def build() -> tuple[Any, Any]:
        nodes, ins, outs, inits = _mlp_parts()
        inits = [t for t in inits if t.name != "w1"]
        v = np.arange(1, (idx.shape[0] if idx.ndim else 1) + 1, dtype=dtype) if vals is None else vals
        st = helper.make_sparse_tensor(
            numpy_helper.from_array(v.astype(dtype), "w1"), numpy_helper.from_array(idx), list(dims)
        )
        return _model(nodes, ins, outs, inits, sparse=[st]), {"x": mlp_x()}

    return build


def _i(*a: Any) -> np.ndarray:
    return np.array(a, dtype=np.int64)


NAMES_SP = ("w1",)
add("sparse-valid-flat", "sparse initializer", _sparse(_i(0, 17, 40, 127)), "works")
add("sparse-valid-coo", "sparse initializer", _sparse(_i([0, 0], [1, 1], [2, 8], [7, 15])), "works")
add(
    "sparse-flat-out-of-range", "sparse initializer", _sparse(_i(0, 17, 40, 128)), "load:ModelError", NAMES_SP
)
add("sparse-flat-way-out-of-range", "sparse initializer", _sparse(_i(0, 2**40)), "load:ModelError", NAMES_SP)
add("sparse-flat-negative", "sparse initializer", _sparse(_i(-1, 17, 40)), "load:ModelError", NAMES_SP)
add("sparse-flat-unsorted", "sparse initializer", _sparse(_i(40, 17, 60)), "load:ModelError", NAMES_SP)
add("sparse-flat-duplicate", "sparse initializer", _sparse(_i(17, 17, 60)), "load:ModelError", NAMES_SP)
add(
    "sparse-coo-out-of-range-col",
    "sparse initializer",
    _sparse(_i([0, 0], [1, 16])),
    "load:ModelError",
    NAMES_SP,
)
add("sparse-coo-negative", "sparse initializer", _sparse(_i([0, 0], [-1, 3])), "load:ModelError", NAMES_SP)
add("sparse-coo-unsorted", "sparse initializer", _sparse(_i([2, 0], [1, 3])), "load:ModelError", NAMES_SP)
add("sparse-coo-duplicate", "sparse initializer", _sparse(_i([1, 3], [1, 3])), "load:ModelError", NAMES_SP)
add(
    "sparse-indices-wrong-shape-3cols",
    "sparse initializer",
    _sparse(_i([0, 0, 0], [1, 1, 1])),
    "load:ModelError",
    NAMES_SP,
)
add(
    "sparse-indices-wrong-shape-3d",
    "sparse initializer",
    _sparse(np.zeros((2, 2, 1), np.int64)),
    "load:ModelError",
    NAMES_SP,
)
add(
    "sparse-values-more-than-indices",
    "sparse initializer",
    _sparse(_i(1, 2), vals=np.ones(3, np.float32)),
    "load:ModelError",
    NAMES_SP,
)
add(
    "sparse-values-fewer-than-indices",
    "sparse initializer",
    _sparse(_i(1, 2, 3), vals=np.ones(2, np.float32)),
    "load:ModelError",
    NAMES_SP,
)
add(
    "sparse-dims-negative",
    "sparse initializer",
    _sparse(_i(1, 2), dims=(-8, -16)),
    "load:ModelError",
    NAMES_SP,
)
add(
    "sparse-dims-huge",
    "sparse initializer",
    _sparse(_i(1, 2), dims=(2**40, 2**40)),
    "load:ModelError",
    NAMES_SP,
)
add(
    "sparse-dims-overflow",
    "sparse initializer",
    _sparse(_i(1, 2), dims=(2**32, 2**32)),
    "load:ModelError",
    NAMES_SP,
)


def _sparse_dense_huge() -> tuple[Any, Any]:
    # A 3-D int64 sparse initializer is densified at load: 2**34 elements (128 GiB) from a tiny file.
    st = helper.make_sparse_tensor(
        numpy_helper.from_array(np.array([5], np.int64), "big"),
        numpy_helper.from_array(_i(3)),
        [2**12, 2**11, 2**11],
    )
    nodes = [
        helper.make_node("Shape", ["big"], ["s"], name="shape1"),
        helper.make_node("Add", ["x", "s"], ["y"], name="add1"),
    ]
    return _model(nodes, [_vi("x", [3], I64)], [_vi("y", [3], I64)], sparse=[st]), {
        "x": np.zeros(3, np.int64)
    }


add(
    "sparse-int64-dims-2**34-densified",
    "sparse initializer",
    _sparse_dense_huge,
    "load:ModelError",
    ("'big'",),
)


# Graph structure.
def _structure(nodes: list[Any], outs: list[Any] | None = None) -> Callable[[], tuple[Any, Any]]:
    def build() -> tuple[Any, Any]:
        _, ins, mlp_outs, inits = _mlp_parts()
        return _model(nodes, ins, mlp_outs if outs is None else outs, inits), {"x": mlp_x()}

    return build


_mm1 = helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1")
_mm2 = helper.make_node("MatMul", ["r", "w2"], ["y"], name="mm2")
add(
    "cycle-two-nodes",
    "graph structure",
    _structure(
        [
            helper.make_node("Add", ["h", "r"], ["hb"], name="add1"),
            helper.make_node("Relu", ["hb"], ["r"], name="relu1"),
            _mm1,
            _mm2,
        ]
    ),
    "load:ModelError",
    ("add1", "relu1"),
)
add(
    "cycle-self-loop",
    "graph structure",
    _structure([_mm1, helper.make_node("Add", ["h", "r"], ["r"], name="selfloop"), _mm2]),
    "load:ModelError",
    ("selfloop", "'r'"),
)
add(
    "node-input-missing-value",
    "graph structure",
    _structure([_mm1, helper.make_node("Add", ["h", "ghost"], ["r"], name="add1"), _mm2]),
    "load:ModelError",
    ("ghost",),
)


def _bad_utf8(build: Callable[[], tuple[Any, Any]], old: bytes, new: bytes) -> Callable[[], tuple[Any, Any]]:
    """`build`'s model with the name `old` replaced by `new` (invalid UTF-8) in its serialized bytes."""

    def rebuilt() -> tuple[Any, Any]:
        m, feeds = build()
        data = m.SerializeToString()
        assert data.count(old) >= 1
        assert len(old) == len(new)
        return data.replace(old, new), feeds

    return rebuilt


add(
    "node-input-missing-value-bad-utf8-name",
    "graph structure",
    _bad_utf8(CASES["node-input-missing-value"].build, b"ghost", b"ghos\xfc"),
    "load:ModelError",
    ("ghos",),
)
add(
    "node-name-bad-utf8-valid-model",
    "graph structure",
    _bad_utf8(lambda: (mlp(), {"x": mlp_x()}), b"relu1", b"relu\xfc"),
    "either",
)

add(
    "graph-output-not-produced",
    "graph structure",
    _structure([_mm1], [_vi("nowhere", ["batch", 4])]),
    "load:ModelError",
    ("nowhere",),
)
add(
    "graph-zero-outputs",
    "graph structure",
    _structure([_mm1, helper.make_node("Relu", ["h"], ["r"], name="relu1"), _mm2], []),
    "either",
    ("output",),
)
add(
    "duplicate-node-output",
    "graph structure",
    _structure([_mm1, helper.make_node("Relu", ["h"], ["h"], name="relu_dup"), _mm2]),
    "load:ModelError",
    ("'h'", "relu_dup"),
)
add(
    "duplicate-output-two-nodes",
    "graph structure",
    _structure(
        [
            _mm1,
            helper.make_node("Relu", ["h"], ["r"], name="relu1"),
            helper.make_node("Sigmoid", ["h"], ["r"], name="sig1"),
            _mm2,
        ]
    ),
    "load:ModelError",
    ("'r'", "sig1", "relu1"),
)
add(
    "node-output-shadows-input",
    "graph structure",
    _structure([helper.make_node("Relu", ["w1"], ["x"], name="shadow"), _mm1, _mm2]),
    "error",
    ("'x'", "shadow"),
)
add(
    "matmul-one-input",
    "graph structure",
    _structure([helper.make_node("MatMul", ["x"], ["h"], name="mm_one"), _mm2]),
    "load:ModelError",
    ("mm_one",),
)
add(
    "matmul-three-inputs",
    "graph structure",
    _structure([helper.make_node("MatMul", ["x", "w1", "w1"], ["r"], name="mm_three"), _mm2]),
    "load:ModelError",
    ("mm_three",),
)
add(
    "unknown-op-type",
    "unknown op / domain",
    _structure([_mm1, helper.make_node("FrobnicateRelu", ["h"], ["r"], name="frob"), _mm2]),
    "load:ModelError",
    ("frob", "FrobnicateRelu"),
)


def _unknown_domain(with_import: bool) -> Callable[[], tuple[Any, Any]]:
    def build() -> tuple[Any, Any]:
        _, ins, outs, inits = _mlp_parts()
        nodes = [_mm1, helper.make_node("Relu", ["h"], ["r"], name="dom_relu", domain="com.nowhere"), _mm2]
        opsets = [("", OPSET), ("com.nowhere", 1)] if with_import else None
        return _model(nodes, ins, outs, inits, opsets=opsets), {"x": mlp_x()}

    return build


add(
    "unknown-domain-imported",
    "unknown op / domain",
    _unknown_domain(True),
    "load:UnsupportedOpError",
    ("dom_relu", "com.nowhere"),
)
add(
    "unknown-domain-not-imported",
    "unknown op / domain",
    _unknown_domain(False),
    "load:ModelError",
    ("dom_relu", "com.nowhere"),
)


def _attr(node_name: str, base: str, attr: Any) -> Callable[[], tuple[Any, Any]]:
    def build() -> tuple[Any, Any]:
        m = BASES[base][0]()
        n = next(n for n in m.graph.node if n.name == node_name)
        kept = [a for a in n.attribute if a.name != attr.name]
        del n.attribute[:]
        n.attribute.extend([*kept, attr])
        return m, BASES[base][1]()

    return build


add(
    "attr-gather-axis-float",
    "attribute type",
    _attr("gather1", "gather", helper.make_attribute("axis", 0.5)),
    "load:ModelError",
    ("gather1", "axis"),
)
add(
    "attr-gather-axis-string",
    "attribute type",
    _attr("gather1", "gather", helper.make_attribute("axis", "zero")),
    "load:ModelError",
    ("gather1", "axis"),
)
add(
    "attr-conv-pads-float",
    "attribute type",
    _attr("conv1", "conv", helper.make_attribute("pads", [1.0, 1.0, 1.0, 1.0])),
    "load:ModelError",
    ("conv1", "pads"),
)
add(
    "attr-conv-pads-wrong-length",
    "attribute type",
    _attr("conv1", "conv", helper.make_attribute("pads", [1, 1, 1])),
    "error",
    ("conv1", "pads"),
)
add(
    "attr-conv-pads-negative-huge",
    "attribute type",
    _attr("conv1", "conv", helper.make_attribute("pads", [-(2**40)] * 4)),
    "error",
    ("conv1", "pads"),
)
add(
    "attr-conv-strides-zero",
    "attribute type",
    _attr("conv1", "conv", helper.make_attribute("strides", [0, 0])),
    "error",
    ("conv1", "strides"),
)
add(
    "attr-gather-axis-out-of-range",
    "attribute type",
    _attr("gather1", "gather", helper.make_attribute("axis", 7)),
    "error",
    ("gather1", "axis"),
)


def _reshape(shape: list[int], x_shape: list[Any]) -> Callable[[], tuple[Any, Any]]:
    def build() -> tuple[Any, Any]:
        nodes = [helper.make_node("Reshape", ["x", "shape"], ["y"], name="reshape1")]
        m = _model(
            nodes,
            [_vi("x", x_shape)],
            [_vi("y", ["r0", "r1"])],
            [numpy_helper.from_array(np.array(shape, np.int64), "shape")],
        )
        return m, {"x": mlp_x()}

    return build


add("reshape-impossible-fixed", "reshape", _reshape([3, 5], [2, 8]), "error", ("reshape1",))
add("reshape-impossible-symbolic", "reshape", _reshape([3, 5], ["batch", 8]), "error", ("reshape1",))
add("reshape-two-minus-one", "reshape", _reshape([-1, -1], ["batch", 8]), "error", ("reshape1",))
add("reshape-huge-dims", "reshape", _reshape([2**40, 2**40], ["batch", 8]), "error", ("reshape1",))
add("reshape-below-minus-one", "reshape", _reshape([-4, 4], ["batch", 8]), "error", ("reshape1",))


# Feeds at run time (the model is valid).
def _feeds(base: str, feeds: Callable[[], dict[str, Any]]) -> Callable[[], tuple[Any, Any]]:
    return lambda: (BASES[base][0](), feeds())


def _mlp_feeds(feeds: Callable[[], dict[str, Any]]) -> Callable[[], tuple[Any, Any]]:
    return _feeds("mlp", feeds)


def _two_inputs() -> tuple[Any, Any]:
    nodes = [helper.make_node("Add", ["a", "b"], ["y"], name="add_ab")]
    m = _model(nodes, [_vi("a", [2, 3]), _vi("b", [2, 3])], [_vi("y", [2, 3])])
    return m, {"a": np.ones((2, 3), np.float32)}


def _nan_x() -> dict[str, Any]:
    x = mlp_x(3)
    x[0, [1, 5]] = np.nan
    return {"x": x}


def _inf_x() -> dict[str, Any]:
    x = mlp_x(3)
    x[0, 2] = np.inf
    x[0, 3] = -np.inf
    return {"x": x}


def _noncontig() -> dict[str, Any]:
    return {"x": np.repeat(mlp_x(3), 2, axis=1)[:, ::2]}


def _fortran() -> dict[str, Any]:
    return {"x": np.asfortranarray(mlp_x(3))}


def _transposed() -> dict[str, Any]:
    return {"x": np.ascontiguousarray(mlp_x(3).T).T}


def _readonly() -> dict[str, Any]:
    x = mlp_x(3)
    x.flags.writeable = False
    return {"x": x}


def _broadcast_view() -> dict[str, Any]:
    return {"x": np.broadcast_to(mlp_x(1), (4, 8))}


def _torch_x() -> dict[str, Any]:
    import torch

    return {"x": torch.from_numpy(mlp_x(3))}


def _torch_noncontig() -> dict[str, Any]:
    import torch

    return {"x": torch.from_numpy(np.ascontiguousarray(mlp_x(3).T)).T}


def _ref_x(batch: int = 3) -> Callable[[], dict[str, np.ndarray]]:
    return lambda: {"x": mlp_x(batch)}


NAMES_X = ("'x'",)
add(
    "feed-dtype-float64",
    "run: bad feed",
    _mlp_feeds(lambda: {"x": mlp_x().astype(np.float64)}),
    "run:InputError",
    NAMES_X,
)
add(
    "feed-dtype-int32",
    "run: bad feed",
    _mlp_feeds(lambda: {"x": mlp_x().astype(np.int32)}),
    "run:InputError",
    NAMES_X,
)
add(
    "feed-dtype-float16",
    "run: bad feed",
    _mlp_feeds(lambda: {"x": mlp_x().astype(np.float16)}),
    "run:InputError",
    NAMES_X,
)
add("feed-dtype-bool", "run: bad feed", _mlp_feeds(lambda: {"x": mlp_x() > 0}), "run:InputError", NAMES_X)
add(
    "feed-dtype-complex",
    "run: bad feed",
    _mlp_feeds(lambda: {"x": mlp_x().astype(np.complex64)}),
    "run:InputError",
    NAMES_X,
)
add(
    "feed-dtype-string",
    "run: bad feed",
    _mlp_feeds(lambda: {"x": np.array([["a"] * 8] * 2)}),
    "run:InputError",
    NAMES_X,
)
add(
    "feed-dtype-object",
    "run: bad feed",
    _mlp_feeds(lambda: {"x": np.array([[None] * 8] * 2)}),
    "run:InputError",
    NAMES_X,
)
add(
    "feed-gather-float-ids",
    "run: bad feed",
    _feeds("gather", lambda: {"ids": gather_ids().astype(np.float32)}),
    "run:InputError",
    ("'ids'",),
)
add("feed-rank-0", "run: bad feed", _mlp_feeds(lambda: {"x": np.float32(1.0)}), "run:InputError", NAMES_X)
add("feed-rank-1", "run: bad feed", _mlp_feeds(lambda: {"x": mlp_x()[0]}), "run:InputError", NAMES_X)
add("feed-rank-3", "run: bad feed", _mlp_feeds(lambda: {"x": mlp_x()[None]}), "run:InputError", NAMES_X)
add(
    "feed-wrong-fixed-dim",
    "run: bad feed",
    _mlp_feeds(lambda: {"x": mlp_x()[:, :5]}),
    "run:InputError",
    NAMES_X,
)
add(
    "feed-conv-wrong-channels",
    "run: bad feed",
    _feeds("conv", lambda: {"x": conv_x()[:, :2]}),
    "run:InputError",
    ("'x'",),
)
add("feed-missing", "run: bad feed", _mlp_feeds(lambda: {}), "run:InputError", NAMES_X)
add("feed-missing-one-of-two", "run: bad feed", _two_inputs, "run:InputError", ("'b'",))
add(
    "feed-extra",
    "run: bad feed",
    _mlp_feeds(lambda: {"x": mlp_x(), "zzz": mlp_x()}),
    "run:InputError",
    ("zzz",),
)
add("feed-misnamed", "run: bad feed", _mlp_feeds(lambda: {"X": mlp_x()}), "run:InputError", NAMES_X)
add("feed-none", "run: bad feed", _mlp_feeds(lambda: {"x": None}), "run:InputError", NAMES_X)
add(
    "feed-ragged-list",
    "run: bad feed",
    _mlp_feeds(lambda: {"x": [[1.0] * 8, [1.0] * 7]}),
    "run:InputError",
    NAMES_X,
)
add(
    "feed-gather-ids-out-of-range",
    "run: bad feed",
    _feeds("gather", lambda: {"ids": np.full((2, 5), 10, np.int64)}),
    "run:InputError",
    ("gather1", "'ids'"),
)
add(
    "feed-gather-ids-huge",
    "run: bad feed",
    _feeds("gather", lambda: {"ids": np.full((2, 5), 2**62, np.int64)}),
    "run:InputError",
    ("gather1", "'ids'"),
)
add(
    "feed-gather-ids-below-minus-rows",
    "run: bad feed",
    _feeds("gather", lambda: {"ids": np.full((2, 5), -11, np.int64)}),
    "run:InputError",
    ("gather1", "'ids'"),
)
add(
    "feed-conv-spatial-zero",
    "run: bad feed",
    _feeds("conv", lambda: {"x": np.zeros((1, 3, 0, 0), np.float32)}),
    "either",
    ("conv1", "'x'"),
)

add("feed-nan", "run: valid feed", _mlp_feeds(_nan_x), "works", skip_rows=1)
add("feed-inf", "run: valid feed", _mlp_feeds(_inf_x), "works", skip_rows=1)
add(
    "feed-all-nan",
    "run: valid feed",
    _mlp_feeds(lambda: {"x": np.full((2, 8), np.nan, np.float32)}),
    "works",
    skip_rows=2,
)
add(
    "feed-conv-nan",
    "run: valid feed",
    _feeds("conv", lambda: {"x": np.where(conv_x() > 1.5, np.nan, conv_x()).astype(np.float32)}),
    "works",
    skip_rows=1,
)
add("feed-empty-batch", "run: valid feed", _mlp_feeds(lambda: {"x": mlp_x(0)}), "works")
add("feed-conv-empty-batch", "run: valid feed", _feeds("conv", lambda: {"x": conv_x()[:0]}), "works")
add(
    "feed-gather-empty-batch", "run: valid feed", _feeds("gather", lambda: {"ids": gather_ids()[:0]}), "works"
)
add(
    "feed-gather-negative-ids",
    "run: valid feed",
    _feeds("gather", lambda: {"ids": -gather_ids() - 1}),
    "works",
)
add("feed-non-contiguous", "run: valid feed", _mlp_feeds(_noncontig), "works", ref_feeds=_ref_x())
add("feed-fortran-order", "run: valid feed", _mlp_feeds(_fortran), "works", ref_feeds=_ref_x())
add("feed-transposed-view", "run: valid feed", _mlp_feeds(_transposed), "works", ref_feeds=_ref_x())
add("feed-read-only", "run: valid feed", _mlp_feeds(_readonly), "works", ref_feeds=_ref_x())
add(
    "feed-broadcast-view",
    "run: valid feed",
    _mlp_feeds(_broadcast_view),
    "works",
    ref_feeds=lambda: {"x": np.repeat(mlp_x(1), 4, axis=0)},
)
add(
    "feed-conv-non-contiguous",
    "run: valid feed",
    _feeds("conv", lambda: {"x": np.repeat(conv_x(), 2, axis=3)[..., ::2]}),
    "works",
    ref_feeds=lambda: {"x": conv_x()},
)
add(
    "feed-python-list-float",
    "run: valid feed",
    _mlp_feeds(lambda: {"x": mlp_x(3).tolist()}),
    "either",  # a list of Python floats is float64 to numpy: converting it or refusing it clearly are fine
    NAMES_X,
    ref_feeds=_ref_x(),
)
add(
    "feed-python-list-int-ids",
    "run: valid feed",
    _feeds("gather", lambda: {"ids": gather_ids().tolist()}),
    "works",
    ref_feeds=lambda: {"ids": gather_ids()},
)
add("feed-torch-tensor", "run: valid feed", _mlp_feeds(_torch_x), "works", ref_feeds=_ref_x())
add("feed-torch-non-contiguous", "run: valid feed", _mlp_feeds(_torch_noncontig), "works", ref_feeds=_ref_x())


# --- the worker (this file run as a script) --------------------------------------------------------


def _emit(kind: str, payload: Any) -> None:
    sys.stdout.write(f"{PROTOCOL}{kind} {json.dumps(payload)}\n")
    sys.stdout.flush()


def _exc_record(e: BaseException, stage: str) -> dict[str, Any]:
    return {
        "status": "raised",
        "stage": stage,
        "exc": type(e).__name__,
        "mro": [c.__name__ for c in type(e).__mro__],
        "message": str(e),
    }


def _compare(got: dict[str, Any], want: list[np.ndarray], names: list[str], skip_rows: int) -> str | None:
    if list(got) != names:
        return f"outputs {list(got)}, onnxruntime gives {names}"
    for name, w in zip(names, want):
        g = np.asarray(got[name])
        if g.shape != w.shape or g.dtype != w.dtype:
            return f"output '{name}': {g.dtype} {g.shape}, onnxruntime gives {w.dtype} {w.shape}"
        if g.ndim and skip_rows:
            g, w = g[skip_rows:], w[skip_rows:]
        ok = np.isclose(g, w, rtol=0.0001, atol=1e-05, equal_nan=True) if g.dtype.kind == "f" else g == w
        if not ok.all():
            i = tuple(int(v) for v in np.argwhere(~ok)[0])
            return f"output '{name}' differs at {i}: got {g[i]!r}, onnxruntime gives {w[i]!r}"
    return None


def _run_case(cid: str) -> dict[str, Any]:
    import zeroskip

    c = CASES[cid]
    model, feeds = c.build()
    _emit("STAGE", {"id": cid, "stage": "load"})
    try:
        s = zeroskip.load(model, options={"cache": False})
    except BaseException as e:
        return _exc_record(e, "load")
    if feeds is None:
        return {"status": "ok"}
    _emit("STAGE", {"id": cid, "stage": "run"})
    try:
        got = s.run(feeds)
    except BaseException as e:
        return _exc_record(e, "run")
    rec: dict[str, Any] = {"status": "ok", "shapes": {k: list(np.shape(v)) for k, v in got.items()}}
    _emit("STAGE", {"id": cid, "stage": "reference"})
    try:
        import onnxruntime as ort

        data = model if isinstance(model, bytes) else model.SerializeToString()
        opts = ort.SessionOptions()
        opts.log_severity_level = 4
        sess = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
        ref_feeds = c.ref_feeds() if c.ref_feeds is not None else {k: np.asarray(v) for k, v in feeds.items()}
        want = sess.run(None, ref_feeds)
        names = [o.name for o in sess.get_outputs()]
    except Exception as e:
        rec["reference"] = (
            f"onnxruntime fails: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        )
        return rec
    rec["reference"] = "onnxruntime"
    rec["mismatch"] = _compare(got, want, names, c.skip_rows)
    return rec


def _worker() -> None:
    import resource
    import warnings

    warnings.simplefilter("ignore")
    cap = 8 << 30
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    import zeroskip.session  # noqa: F401  (import torch/onnx before the first case is announced)

    for line in sys.stdin:
        cid = line.strip()
        if not cid:
            continue
        _emit("START", {"id": cid})
        t0 = time.perf_counter()
        try:
            rec = _run_case(cid)
        except BaseException as e:  # building the case failed: a bug in this file
            rec = {"status": "harness", "message": f"{type(e).__name__}: {e}"}
        rec["id"] = cid
        rec["seconds"] = round(time.perf_counter() - t0, 3)
        _emit("RESULT", rec)


def run_cases(ids: list[str]) -> dict[str, dict[str, Any]]:
    """Run `ids` in worker subprocesses; a crash or hang marks the case in flight and a new worker goes
    on with the rest."""
    results: dict[str, dict[str, Any]] = {}
    pending = list(ids)
    with tempfile.TemporaryDirectory(prefix="zs-robust-") as tmp:
        env = dict(os.environ, PYTHONFAULTHANDLER="1", ZEROSKIP_CACHE_DIR=tmp)
        _run_in_workers(pending, ids, env, results)
    return results


def _run_in_workers(
    pending: list[str], ids: list[str], env: dict[str, str], results: dict[str, dict[str, Any]]
) -> None:
    while pending:
        with tempfile.TemporaryFile("w+") as err:
            proc = subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), "--worker"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                env=env,
            )
            assert proc.stdin is not None
            assert proc.stdout is not None
            proc.stdin.write("\n".join(pending) + "\n")
            proc.stdin.close()
            lines: queue.Queue[str | None] = queue.Queue()

            def pump(out: Any = proc.stdout, q: queue.Queue[str | None] = lines) -> None:
                with out:
                    for ln in out:
                        q.put(ln)
                q.put(None)

            threading.Thread(target=pump, daemon=True).start()
            current, stage = None, None
            timeout = 120.0  # the first wait covers importing torch
            while True:
                try:
                    ln = lines.get(timeout=timeout)
                except queue.Empty:
                    proc.kill()
                    proc.wait()
                    cid = current or pending[0]
                    results[cid] = {"id": cid, "status": "hang", "stage": stage}
                    break
                if ln is None:
                    rc = proc.wait()
                    if current is not None or len(results) < len(ids):
                        err.seek(0)
                        tail = err.read()[-3000:]
                        cid = current or next(i for i in pending if i not in results)
                        results[cid] = {
                            "id": cid,
                            "status": "crash",
                            "rc": rc,
                            "stage": stage,
                            "stderr": tail,
                        }
                    break
                if not ln.startswith(PROTOCOL):
                    continue
                kind, _, payload = ln[len(PROTOCOL) :].partition(" ")
                rec = json.loads(payload)
                if kind == "START":
                    current, stage, timeout = rec["id"], None, CASE_TIMEOUT_S
                elif kind == "STAGE":
                    stage = rec["stage"]
                elif kind == "RESULT":
                    results[rec["id"]] = rec
                    current = None
        pending = [i for i in pending if i not in results]


# --- the tests -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def results() -> dict[str, dict[str, Any]]:
    return run_cases(list(CASES))


def _outcome(c: Case, rec: dict[str, Any]) -> str | None:
    """None when `rec` is an allowed outcome of `c`, else what is wrong, in one line."""
    status = rec["status"]
    if status == "harness":
        raise AssertionError(f"the case itself failed to build: {rec['message']}")
    if status == "crash":
        rc = rec["rc"]
        if rec.get("stage") == "reference":
            pytest.skip(f"onnxruntime (the reference) crashed with rc {rc}")
        how = f"signal {-rc}" if rc < 0 else f"exit code {rc}"
        stage = rec.get("stage") or "setup (building the case, or importing)"
        return f"CRASH ({how}) during {stage}:\n{rec['stderr']}"
    if status == "hang":
        return f"HANG: no answer within {CASE_TIMEOUT_S} s during {rec.get('stage')}"
    kind, _, cls = c.expect.partition(":")
    if status == "ok":
        if kind in ("load", "run"):
            return f"expected {cls} at {kind}, but the model loaded and ran ({rec.get('shapes')})"
        if kind == "error":
            return f"expected a ZeroskipError, but the model loaded and ran ({rec.get('shapes')})"
        if rec.get("reference") != "onnxruntime":
            if kind == "works":
                return f"no reference to compare with: {rec.get('reference')}"
            return None
        if rec.get("mismatch"):
            return f"WRONG RESULT: {rec['mismatch']}"
        return None
    # raised
    where = f"{rec['exc']} at {rec['stage']}: {rec['message']!r}"
    if "ZeroskipError" not in rec["mro"]:
        return f"WRONG EXCEPTION: {where}"
    if kind in ("load", "run") and (cls not in rec["mro"] or rec["stage"] != kind):
        return f"expected {cls} at {kind}, got {where}"
    if kind == "works":
        return f"expected the model to run, got {where}"
    msg = rec["message"]
    if "\n" in msg.strip() or not msg.strip():
        return f"message is not one line: {where}"
    if c.names and not any(n in msg for n in c.names):
        return f"message names none of {list(c.names)}: {where}"
    return None


@pytest.mark.parametrize("case_id", list(CASES))
def test_malformed(case_id: str, results: dict[str, dict[str, Any]]) -> None:
    problem = _outcome(CASES[case_id], results[case_id])
    if problem is not None:
        pytest.fail(f"{case_id}: {problem}", pytrace=False)


def summary(results: dict[str, dict[str, Any]]) -> dict[str, dict[str, int]]:
    """family -> {outcome: count}, for the README."""
    table: dict[str, dict[str, int]] = {}
    for cid, c in CASES.items():
        rec = results[cid]
        try:
            problem = _outcome(c, rec)
        except BaseException:
            problem = "skipped"
        if problem is None:
            label = "works" if rec["status"] == "ok" else "clear error"
        else:
            label = problem.split(":")[0].split(" (")[0]
            if label.startswith(("expected", "message")):
                label = "unclear error" if rec["status"] == "raised" else "no error"
        fam = table.setdefault(c.family, {})
        fam[label] = fam.get(label, 0) + 1
    return table


if __name__ == "__main__":
    if sys.argv[1:] == ["--worker"]:
        _worker()
    else:  # a report: python tests/robustness/test_malformed_models.py
        t0 = time.perf_counter()
        res = run_cases(list(CASES))
        for cid, c in CASES.items():
            try:
                p = _outcome(c, res[cid])
            except BaseException as e:
                p = f"skipped: {e}"
            if p is not None:
                print(f"FAIL {cid}: {p.splitlines()[0]}")
        print(json.dumps(summary(res), indent=1))
        print(f"{len(CASES)} cases in {time.perf_counter() - t0:.1f} s")
