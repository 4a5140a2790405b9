"""ONNX ModelProto -> zeroskip IR, with every problem reported as a ModelError naming its place."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from zeroskip import formats
from zeroskip.errors import FormatError, ModelError, UnsupportedOpError
from zeroskip.ir import Graph, Node, Value

__all__ = ["read_model", "to_graph"]

_MAX_DIM = 1 << 40


def read_model(model: Any) -> Any:
    """A path, bytes or ModelProto -> a checked ModelProto with inferred shapes."""
    import onnx

    # `raw`: the serialized model while the proto is exactly it (the checker and shape inference take
    # bytes; handing them the proto makes each serialize it again, ~0.15 s for a 40 MB model).
    raw: bytes | None = None
    if isinstance(model, onnx.ModelProto):
        proto, where, base = model, "the model", None
    elif isinstance(model, (bytes, bytearray, memoryview)):
        raw = bytes(model)
        proto, where, base = _parse(raw, "the model bytes"), "the model bytes", None
    elif isinstance(model, (str, os.PathLike)):
        path = Path(model)
        where = f"'{path}'"
        if not path.is_file():
            raise ModelError(f"{where}: no such file")
        raw = path.read_bytes()
        proto, base = _parse(raw, where), path.parent
    else:
        raise ModelError(f"load() takes a path, bytes or onnx.ModelProto, not {type(model).__name__}")
    if not proto.HasField("graph"):
        raise ModelError(f"{where} has no graph: it is not an ONNX model, or the file is truncated")
    if base is not None and _uses_external_data(proto):
        from onnx.external_data_helper import load_external_data_for_model

        raw = None
        try:
            load_external_data_for_model(proto, str(base))
        except Exception as e:
            raise ModelError(
                f"{where}: cannot read external tensor data ({e}); keep the data file beside the model"
            ) from e
    elif base is None and _uses_external_data(proto):
        raise ModelError(
            f"{where} keeps tensors in external files; load it from its path so they can be found"
        )
    # zeroskip's own checks of sparse initializers first: their messages name the initializer.
    for st in proto.graph.sparse_initializer:
        _sparse_entries(st, st.values.name or "?")
    try:
        onnx.checker.check_model(raw if raw is not None else proto)
    except Exception as e:  # ValidationError, or e.g. UnicodeDecodeError on a corrupt name
        text = " ".join(x.strip() for x in str(e).splitlines() if x.strip()).replace("==> Context: ", "")
        if isinstance(e, UnicodeDecodeError):
            near = bytes(e.object[max(0, e.start - 24) : e.end + 8]).decode("utf-8", "replace")
            text = f"a name or string is not valid UTF-8 (near {near!r}); the file is corrupt"
        raise ModelError(f"{where} is not a valid ONNX model: {text or type(e).__name__}") from e
    newest = onnx.defs.onnx_opset_version()
    for o in proto.opset_import:
        if o.domain in ("", "ai.onnx") and o.version > newest:
            raise ModelError(
                f"{where} imports opset {o.version} of the default domain; this build knows opsets up to "
                f"{newest} (its onnx package's): convert the model to opset {newest} or older"
            )
    if proto.functions:
        from onnx import inliner

        proto, raw = inliner.inline_local_functions(proto), None
    # Inferred shapes only describe Session.inputs/outputs better; the runner does not need them.
    with contextlib.suppress(Exception):
        proto = onnx.shape_inference.infer_shapes(raw if raw is not None else proto, strict_mode=False)
    return proto


def _parse(data: bytes, where: str) -> Any:
    import onnx
    from google.protobuf.message import DecodeError

    if not data:
        raise ModelError(f"{where} is empty")
    try:
        return onnx.load_model_from_string(data)
    except (DecodeError, ValueError, RuntimeError) as e:
        raise ModelError(
            f"{where} is not an ONNX model (protobuf parse failed: {e}); check the file is complete"
        ) from e


def _uses_external_data(proto: Any) -> bool:
    import onnx

    return any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)


def to_graph(proto: Any) -> Graph:
    """Build the IR. Unknown ops are not checked here (the planner resolves ops against the registry)."""
    from onnx import numpy_helper

    g = proto.graph
    opset = {("" if o.domain == "ai.onnx" else o.domain): o.version for o in proto.opset_import}
    values: dict[str, Value] = {}
    infos = {vi.name: vi for vi in [*g.input, *g.value_info, *g.output]}

    def value(name: str) -> Value:
        v = values.get(name)
        if v is None:
            v = values[name] = Value(name)
            vi = infos.get(name)
            if vi is not None:
                v.dtype, v.shape = _type_of(vi)
        return v

    for t in g.initializer:
        v = value(t.name)
        try:
            arr = numpy_helper.to_array(t)
        except Exception as e:
            raise ModelError(
                f"initializer '{t.name}': cannot be read ({e}); the model file is corrupt"
            ) from e
        _check_initializer(t, arr)
        v.const, v.dtype, v.shape = arr, t.data_type, tuple(arr.shape)
    for st in g.sparse_initializer:
        v = value(st.values.name)
        _read_sparse(st, v)

    inits = {t.name for t in g.initializer} | {st.values.name for st in g.sparse_initializer}
    inputs = [value(vi.name) for vi in g.input if vi.name not in inits]
    for vi in g.input:
        if vi.name in inits:
            continue
        v = values[vi.name]
        for d in v.shape or ():
            if isinstance(d, int) and not 0 <= d < _MAX_DIM:
                raise ModelError(f"graph input '{vi.name}' has dimension {d}; the model is malformed")

    nodes: list[Node] = []
    for i, n in enumerate(g.node):
        name = n.name or f"{n.op_type}_{i}"
        attrs = {}
        for a in n.attribute:
            attrs[a.name] = _attribute(a, name, n.op_type)
        node = Node(
            name=name,
            op_type=n.op_type,
            domain="" if n.domain == "ai.onnx" else n.domain,
            inputs=[value(x) if x else None for x in n.input],
            outputs=[value(y) if y else None for y in n.output],
            attrs=attrs,
        )
        for y in node.outputs:
            if y is None:
                continue
            if y.producer is not None or y.is_const or y in inputs:
                raise ModelError(
                    f"{node.describe()}: output '{y.name}' is also produced elsewhere (SSA violated)"
                )
            y.producer = node
        nodes.append(node)

    outputs = []
    for vi in g.output:
        if vi.name not in values:
            raise ModelError(f"graph output '{vi.name}' is not produced by any node or initializer")
        outputs.append(values[vi.name])
    graph = Graph(name=g.name or "graph", inputs=inputs, outputs=outputs, nodes=nodes, opset=opset)
    for node in nodes:
        for x in node.inputs:
            if x is not None and x.producer is None and not x.is_const and x not in inputs:
                raise ModelError(
                    f"{node.describe()}: input '{x.name}' is not a graph input, initializer or node output"
                )
    graph.toposort()
    return graph


def _type_of(vi: Any) -> tuple[int | None, tuple[int | str | None, ...] | None]:
    t = vi.type
    if t.WhichOneof("value") != "tensor_type":
        return None, None
    tt = t.tensor_type
    if not tt.HasField("shape"):
        return tt.elem_type or None, None
    dims: list[int | str | None] = []
    for d in tt.shape.dim:
        which = d.WhichOneof("value")
        dims.append(d.dim_value if which == "dim_value" else d.dim_param if which == "dim_param" else None)
    return tt.elem_type or None, tuple(dims)


def _check_initializer(t: Any, arr: np.ndarray) -> None:
    dims = tuple(t.dims)
    if any(d < 0 for d in dims):
        raise ModelError(f"initializer '{t.name}' has negative dimensions {dims}")
    if arr.shape != dims:
        raise ModelError(
            f"initializer '{t.name}': data holds {arr.size} elements, dims {dims} need {int(np.prod(dims))}"
        )


def _attribute(a: Any, node: str, op: str) -> Any:
    import onnx
    from onnx import numpy_helper

    A = onnx.AttributeProto
    if a.type == A.INT:
        return int(a.i)
    if a.type == A.FLOAT:
        return float(a.f)
    if a.type == A.STRING:
        return a.s.decode("utf-8", errors="replace")
    if a.type == A.INTS:
        return [int(x) for x in a.ints]
    if a.type == A.FLOATS:
        return [float(x) for x in a.floats]
    if a.type == A.STRINGS:
        return [s.decode("utf-8", errors="replace") for s in a.strings]
    if a.type == A.TENSOR:
        try:
            return numpy_helper.to_array(a.t)
        except Exception as e:
            raise ModelError(f"node '{node}' ({op}): tensor attribute '{a.name}' cannot be read ({e})") from e
    if a.type == A.SPARSE_TENSOR:
        v = Value(f"{node}.{a.name}")
        _read_sparse(a.sparse_tensor, v)
        return v.dense()
    if a.type in (A.GRAPH, A.GRAPHS):
        raise UnsupportedOpError(
            f"node '{node}' ({op}): subgraph attributes (control flow) are not supported"
        )
    raise UnsupportedOpError(f"node '{node}' ({op}): attribute '{a.name}' has a type zeroskip does not read")


# A sparse initializer that is not 2-D float32 is stored dense: at most this many elements (1 GiB of
# float32), so a tiny file cannot ask for an absurd allocation.
_MAX_DENSIFIED = 1 << 28


def _sparse_entries(st: Any, name: str) -> tuple[tuple[int, ...], np.ndarray, np.ndarray]:
    """(dims, values, row-major flat indices) of a SparseTensorProto, after checking every index."""
    from onnx import numpy_helper

    dims = tuple(int(d) for d in st.dims)
    if any(d < 0 for d in dims) or int(np.prod(dims, dtype=np.float64)) > (1 << 34):
        raise ModelError(f"sparse initializer '{name}' has dims {dims}")
    if (
        not (len(dims) == 2 and st.values.data_type == 1)
        and int(np.prod(dims, dtype=np.float64)) > _MAX_DENSIFIED
    ):
        raise ModelError(
            f"sparse initializer '{name}' of dims {dims} would be stored dense (only 2-D float32 stays "
            f"sparse) and has more than {_MAX_DENSIFIED} elements"
        )
    if len(dims) == 2 and dims[0] > (1 << 31):
        raise ModelError(f"sparse initializer '{name}' has {dims[0]} rows; at most {1 << 31} are supported")
    try:
        vals = numpy_helper.to_array(st.values)
        idx = numpy_helper.to_array(st.indices).astype(np.int64, copy=False)
    except Exception as e:
        raise ModelError(f"sparse initializer '{name}': cannot be read ({e})") from e
    nnz = vals.size
    vals = vals.reshape(-1)
    total = int(np.prod(dims, dtype=np.int64))
    if idx.ndim == 2 and idx.shape == (nnz, len(dims)):
        if (idx < 0).any() or (idx >= np.asarray(dims, dtype=np.int64)).any():
            raise ModelError(f"sparse initializer '{name}': an index is outside dims {dims}")
        flat = np.ravel_multi_index(tuple(idx.T), dims) if nnz else np.zeros(0, np.int64)
    elif idx.ndim == 1 and idx.size == nnz:
        flat = idx
        if nnz and (flat.min() < 0 or flat.max() >= total):
            raise ModelError(f"sparse initializer '{name}': an index is outside [0, {total})")
    else:
        raise ModelError(
            f"sparse initializer '{name}': indices of shape {idx.shape} do not fit {nnz} values in {dims}"
        )
    if nnz > 1 and not (np.diff(flat) > 0).all():
        raise ModelError(
            f"sparse initializer '{name}': indices must be strictly increasing (row-major order, no repeats)"
        )
    return dims, vals, flat


def _read_sparse(st: Any, v: Value) -> None:
    """A SparseTensorProto -> CSR (2-D float32) or a dense array, after checking every index."""
    name = st.values.name or v.name
    dims, vals, flat = _sparse_entries(st, name)
    total = int(np.prod(dims, dtype=np.int64))
    v.dtype, v.shape = st.values.data_type, dims
    if len(dims) == 2 and vals.dtype == np.float32:
        rows, cols = np.divmod(flat, dims[1]) if dims[1] else (flat, flat)
        indptr = np.zeros(dims[0] + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=dims[0]), out=indptr[1:])
        try:
            v.sparse = formats.CSR(vals, cols, indptr, dims)
        except FormatError as e:
            raise ModelError(f"sparse initializer '{name}': {e}") from e
    else:
        dense = np.zeros(total, dtype=vals.dtype)
        dense[flat] = vals
        v.const = dense.reshape(dims)
