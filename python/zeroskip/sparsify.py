"""Pruning the weights of an ONNX model: `sparsify(model, pattern=..., sparsity=..., method=...)`.

Targets are the constant weights of MatMul (B, K x N), Gemm (B, with transB) and group-1 Conv (O x I x
kh x kw) nodes, each seen as an (outputs x reduction) matrix; N:M groups run along the reduction dim,
which is what the sparse kernels want. A weight shared by several nodes (a tied embedding), one that is
not float32, or one whose reduction dim does not fit the pattern is left alone, and the report row says
why. `skip` takes "first", "last" (the first/last target in graph order) and shell patterns matched
against node and weight names.

Methods: "magnitude" needs no data; "wanda" and "sparsegpt" need calibration inputs (by input name, the
first dim the sample dim). They run layer by layer in graph order: the inputs of each layer are
collected from the model with the layers before it already pruned (as SparseGPT does), running it step
by step on zeroskip's reference path, so the calibration set passes through the model once.
"""

from __future__ import annotations

import fnmatch
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from zeroskip import prune
from zeroskip.errors import FormatError, InputError, ModelError

__all__ = ["METHODS", "Layer", "Result", "drift", "sparsify"]

METHODS = ("magnitude", "wanda", "sparsegpt")
OPS = ("MatMul", "Gemm", "Conv")


@dataclass
class Layer:
    node: str
    op: str
    weight: str
    shape: tuple[int, int]  # (outputs, reduction)
    before: float  # fraction of zeros
    after: float
    skipped: str | None = None
    # how the (outputs x reduction) matrix sits in the initializer; the conv's geometry
    layout: str = ""
    act: str = ""
    conv: dict[str, Any] = field(default_factory=dict)


@dataclass
class Result:
    model: Any  # onnx.ModelProto
    layers: list[Layer]
    drift: dict[str, dict[str, float]] | None = None
    seconds: float = 0.0

    def table(self) -> str:
        lines = [f"{'node':<36} {'op':<7} {'weight (out x red)':>18} {'before':>7} {'after':>7}  note"]
        for r in self.layers:
            shape = f"{r.shape[0]} x {r.shape[1]}" if r.shape else "-"
            lines.append(
                f"{r.node[:36]:<36} {r.op:<7} {shape:>18} {r.before:>7.1%} {r.after:>7.1%}  {r.skipped or ''}"
            )
        pruned = [r for r in self.layers if r.skipped is None]
        total = sum(r.shape[0] * r.shape[1] for r in pruned)
        zeros = sum(r.after * r.shape[0] * r.shape[1] for r in pruned)
        share = zeros / max(total, 1)
        lines.append(f"{len(pruned)} of {len(self.layers)} weights pruned; {share:.1%} of their values zero")
        return "\n".join(lines)


def _attr(node: Any, name: str, default: Any) -> Any:
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _find(proto: Any, ops: Sequence[str], skip: Sequence[str], pattern: prune.Pattern) -> list[Layer]:
    from onnx import numpy_helper

    g = proto.graph
    inits = {t.name: t for t in g.initializer}
    uses: dict[str, int] = {}
    for n in g.node:
        for x in n.input:
            uses[x] = uses.get(x, 0) + 1
    for o in g.output:
        uses[o.name] = uses.get(o.name, 0) + 1
    layers: list[Layer] = []
    for i, n in enumerate(g.node):
        if n.op_type not in OPS or n.op_type not in ops:
            continue
        name = n.name or f"{n.op_type}_{i}"
        # The weight is input 1 of all three (MatMul B, Gemm B, Conv W); the activation input 0.
        if len(n.input) < 2 or n.input[1] not in inits:
            continue  # a weight computed at run time: nothing to prune
        wname = n.input[1]
        arr = numpy_helper.to_array(inits[wname])
        row = Layer(name, n.op_type, wname, (0, 0), 0.0, 0.0, act=n.input[0])
        if n.op_type == "MatMul":
            if arr.ndim != 2:
                row.skipped = f"weight of rank {arr.ndim}"
            row.layout = "kn"
        elif n.op_type == "Gemm":
            row.layout = "nk" if _attr(n, "transB", 0) else "kn"
            row.conv = {"transA": bool(_attr(n, "transA", 0))}
        else:
            if arr.ndim != 4:
                row.skipped = f"a {arr.ndim - 2}-D conv"
            elif _attr(n, "group", 1) != 1:
                row.skipped = "grouped conv"
            row.layout = "conv"
            row.conv = {
                "kernel": tuple(arr.shape[2:]),
                "pads": tuple(_attr(n, "pads", [0] * 4)),
                "strides": tuple(_attr(n, "strides", [1, 1])),
                "dilations": tuple(_attr(n, "dilations", [1, 1])),
                "auto_pad": _attr(n, "auto_pad", b"NOTSET"),
            }
        if arr.ndim >= 2:
            mat = arr.T if row.layout == "kn" else arr.reshape(arr.shape[0], -1)
            row.shape = (int(mat.shape[0]), int(mat.shape[1]))
            row.before = row.after = float(np.mean(mat == 0)) if mat.size else 0.0
        if row.skipped is None and arr.dtype != np.float32:
            row.skipped = f"{arr.dtype} weight (float32 only)"
        if row.skipped is None and uses.get(wname, 0) > 1:
            row.skipped = f"shared by {uses[wname]} uses"
        if row.skipped is None and pattern.kind == "nm" and row.shape[1] % pattern.b:
            row.skipped = f"reduction dim {row.shape[1]} is not a multiple of {pattern.b}"
        layers.append(row)
    eligible = [r for r in layers if r.skipped is None]
    for tok in skip:
        tok = tok.strip()
        if not tok:
            continue
        if tok in ("first", "last"):
            hit = eligible[:1] if tok == "first" else eligible[-1:]
        else:
            hit = [
                r for r in layers if fnmatch.fnmatchcase(r.node, tok) or fnmatch.fnmatchcase(r.weight, tok)
            ]
        for r in hit:
            if r.skipped is None:
                r.skipped = f"--skip {tok}"
    return layers


def _matrix(arr: np.ndarray, layer: Layer) -> np.ndarray:
    return np.ascontiguousarray(arr.T if layer.layout == "kn" else arr.reshape(layer.shape))


def _unmatrix(mat: np.ndarray, layer: Layer, shape: tuple[int, ...]) -> np.ndarray:
    return np.ascontiguousarray(mat.T if layer.layout == "kn" else mat.reshape(shape))


def _rows(x: np.ndarray, layer: Layer) -> np.ndarray:
    """The calibration input of `layer` as (samples x reduction) rows."""
    if layer.layout != "conv":
        if layer.conv.get("transA"):
            x = x.T
        return np.ascontiguousarray(x.reshape(-1, layer.shape[1]), dtype=np.float32)
    import torch
    import torch.nn.functional as F

    c = layer.conv
    if c["auto_pad"] not in (b"NOTSET", "NOTSET", b"VALID", "VALID"):
        raise ModelError(
            f"node '{layer.node}': calibrated pruning of a conv with auto_pad={c['auto_pad']!r} is not "
            "supported; prune it with --method magnitude or leave it out with --skip"
        )
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    top, left, bottom, right = c["pads"]
    if any(c["pads"]):
        t = F.pad(t, (left, right, top, bottom))
    cols = F.unfold(t, c["kernel"], dilation=c["dilations"], stride=c["strides"])  # B x (I kh kw) x L
    return cols.transpose(1, 2).reshape(-1, layer.shape[1]).contiguous().numpy()


def _calibration_rows(xs: Sequence[np.ndarray], layer: Layer) -> list[np.ndarray]:
    try:
        return [_rows(x, layer) for x in xs]
    except ModelError:
        raise
    except Exception as e:
        raise ModelError(f"node '{layer.node}': cannot use its calibration input '{layer.act}': {e}") from e


def _statistics(method: str, xs: Sequence[np.ndarray], xd: Sequence[np.ndarray], layer: Layer) -> Any:
    """Wanda: the input column norms. SparseGPT: (H, C) = (X'^T X', X'^T X) / rows, X' the inputs
    the pruned model gives the layer, X the dense model's. Products in float32, sums in float64."""
    rows = _calibration_rows(xs, layer)
    if method == "wanda":
        return np.sqrt(sum((x.astype(np.float64) ** 2).sum(axis=0) for x in rows))
    n = max(1, sum(x.shape[0] for x in rows))
    h = sum((x.T @ x).astype(np.float64) for x in rows) / n
    cross = sum((x.T @ y).astype(np.float64) for x, y in zip(rows, _calibration_rows(xd, layer))) / n
    return h, cross


def _chunks(
    feeds: Mapping[str, np.ndarray] | Sequence[Mapping[str, np.ndarray]], size: int
) -> list[dict[str, np.ndarray]]:
    """Batches of at most `size` samples from one feed dict, or from each of a list of them."""
    out = []
    for f in [feeds] if isinstance(feeds, Mapping) else feeds:
        n = next(iter(f.values())).shape[0]
        out.extend({k: v[i : i + size] for k, v in f.items()} for i in range(0, n, size))
    return out


class _Probe:
    """The model on zeroskip's reference path, run step by step on each calibration batch: a layer's
    input is read when the steps before it have run, with the weights pruned so far (overwritten in
    place as pruning goes), so the whole calibration set passes through the model once."""

    def __init__(
        self,
        model: Any,
        feeds: Mapping[str, np.ndarray] | Sequence[Mapping[str, np.ndarray]],
        batch: int,
        threads: int | None,
    ):
        from zeroskip.session import load

        self.session = load(
            model, threads=threads, options={"reference": True, "cache": False, "progress": False}
        )
        self.steppers = [self.session.stepper(chunk) for chunk in _chunks(feeds, batch)]

    def set(self, name: str, arr: np.ndarray) -> None:
        self.session.program.replace_constant(name, arr)

    def values(self, name: str) -> list[np.ndarray]:
        return [st.value(name).numpy() for st in self.steppers]


def sparsify(
    model: Any,
    *,
    pattern: str = "unstructured",
    sparsity: float = 0.9,
    method: str = "magnitude",
    ops: Sequence[str] = OPS,
    skip: Sequence[str] = (),
    calib: Mapping[str, np.ndarray] | Sequence[Mapping[str, np.ndarray]] | None = None,
    calib_batch: int = 64,
    damp: float = 0.1,
    sparse_initializers: bool = False,
    threads: int | None = None,
    progress: bool = False,
) -> Result:
    """Prune `model` (path, bytes or ModelProto; not changed) and return the pruned ModelProto with a
    per-layer report. `calib` is required for "wanda" and "sparsegpt". `damp` is SparseGPT's dampening
    (a fraction of the mean diagonal of H added to it; 0.1 measured best on MiniLM, see models/). With
    `sparse_initializers` the pruned weights are stored as ONNX sparse_initializers (COO)."""
    import onnx
    from onnx import numpy_helper

    from zeroskip.onnx_import import read_model

    t0 = time.perf_counter()
    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; choose from {list(METHODS)}")
    pat = prune.parse_pattern(pattern)
    bad_ops = sorted(set(ops) - set(OPS))
    if bad_ops:
        raise InputError(f"cannot prune op(s) {bad_ops}; choose from {list(OPS)}")
    if method != "magnitude" and not calib:
        raise InputError(f"--method {method} needs calibration inputs (an .npz, or generated ones)")
    if method == "sparsegpt" and pat.kind == "block":
        raise InputError(
            "SparseGPT prunes unstructured or N:M patterns; use --method wanda or magnitude for blocks"
        )
    if pat.kind != "nm" and not 0.0 <= float(sparsity) <= 1.0:
        raise InputError(f"sparsity must be within [0, 1], got {sparsity}")
    src = read_model(model)
    out = onnx.ModelProto()
    out.CopyFrom(src)
    layers = _find(out, ops, skip, pat)
    todo = [r for r in layers if r.skipped is None]
    inits = {t.name: t for t in out.graph.initializer}

    probe = _Probe(src, calib, calib_batch, threads) if method != "magnitude" and calib else None
    # SparseGPT also sees what the dense model gives each layer, to correct the error from before it.
    dense_probe = _Probe(src, calib, calib_batch, threads) if method == "sparsegpt" and calib else None
    groups: dict[str, list[Layer]] = {}
    for r in todo:
        groups.setdefault(r.act, []).append(r)
    done = 0
    for act, members in groups.items():
        xs = probe.values(act) if probe is not None else []
        xd = dense_probe.values(act) if dense_probe is not None else []
        stats: dict[Any, Any] = {}  # per way of reading the input (q, k and v share theirs)
        for r in members:
            arr = numpy_helper.to_array(inits[r.weight])
            w = _matrix(arr, r)
            try:
                if method == "magnitude":
                    pruned = prune.select(w, pat, sparsity)
                else:
                    key = (r.layout, repr(sorted(r.conv.items())))
                    if key not in stats:
                        stats[key] = _statistics(method, xs, xd, r)
                    if method == "wanda":
                        pruned = prune.wanda(w, stats[key], pat, sparsity)
                    else:
                        h, cross = stats[key]
                        pruned = prune.sparsegpt(w, h, pat, sparsity, cross=cross, damp=damp)
            except FormatError as e:
                raise ModelError(f"node '{r.node}' (weight '{r.weight}'): {e}") from e
            new = _unmatrix(pruned, r, arr.shape)
            inits[r.weight].CopyFrom(numpy_helper.from_array(new, r.weight))
            if probe is not None:
                probe.set(r.weight, new)
            r.after = float(np.mean(pruned == 0))
            done += 1
            if progress:
                print(
                    f"\rsparsify: {done}/{len(todo)} {r.node[:50]:<50}", end="", file=sys.stderr, flush=True
                )
    if progress and todo:
        print(file=sys.stderr)
    if sparse_initializers:
        _to_sparse_initializers(out, [r.weight for r in todo])
    meta = {p.key: p for p in out.metadata_props}
    entry = meta.get("zeroskip.sparsify") or out.metadata_props.add()
    entry.key = "zeroskip.sparsify"
    entry.value = f"method={method} pattern={pat} sparsity={sparsity if pat.kind != 'nm' else 0.5:g}"
    onnx.checker.check_model(out)
    return Result(out, layers, seconds=time.perf_counter() - t0)


def _to_sparse_initializers(proto: Any, names: Sequence[str]) -> None:
    from onnx import helper, numpy_helper

    g = proto.graph
    wanted = set(names)
    keep = []
    for t in g.initializer:
        if t.name not in wanted:
            keep.append(t)
            continue
        arr = numpy_helper.to_array(t)
        flat = np.flatnonzero(arr.reshape(-1))
        values = numpy_helper.from_array(arr.reshape(-1)[flat].astype(arr.dtype), t.name)
        indices = numpy_helper.from_array(flat.astype(np.int64), f"{t.name}.indices")
        g.sparse_initializer.append(helper.make_sparse_tensor(values, indices, list(arr.shape)))
    del g.initializer[:]
    g.initializer.extend(keep)


def drift(
    dense: Any, sparse: Any, feeds: Mapping[str, np.ndarray], batch: int = 16, threads: int | None = None
) -> dict[str, dict[str, float]]:
    """Per float output: relative L2 error of the pruned model's output against the dense one's, and
    the mean and min cosine similarity of their per-sample rows (both on zeroskip's reference path)."""
    from zeroskip.session import load

    opts = {"reference": True, "cache": False, "progress": False}
    a, b = load(dense, threads=threads, options=opts), load(sparse, threads=threads, options=opts)
    res: dict[str, dict[str, list[np.ndarray]]] = {}
    for chunk in _chunks(feeds, batch):
        ya, yb = a.run(chunk), b.run(chunk)
        for k, v in ya.items():
            if np.asarray(v).dtype.kind == "f":
                res.setdefault(k, {"a": [], "b": []})
                res[k]["a"].append(np.asarray(v, dtype=np.float64))
                res[k]["b"].append(np.asarray(yb[k], dtype=np.float64))
    report = {}
    for k, d in res.items():
        ya, yb = np.concatenate(d["a"]), np.concatenate(d["b"])
        ra, rb = ya.reshape(ya.shape[0], -1), yb.reshape(yb.shape[0], -1)
        cos = (ra * rb).sum(1) / np.maximum(np.linalg.norm(ra, axis=1) * np.linalg.norm(rb, axis=1), 1e-30)
        report[k] = {
            "rel_l2": float(np.linalg.norm(ya - yb) / max(np.linalg.norm(ya), 1e-30)),
            "cosine_mean": float(cos.mean()),
            "cosine_min": float(cos.min()),
        }
    return report
