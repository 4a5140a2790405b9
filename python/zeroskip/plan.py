"""The planner: an IR graph -> a flat, pre-bound Python function per input-shape signature.

Load resolves every node to a registered op (or to a kernel the scheduler chose for that node),
converts constants to torch once and checks attributes. The first run with a new signature (input
shapes and dtypes) is interpreted step by step while recording every value's shape; from that the
planner specialises:

- Shape/Size of statically shaped values, and everything computed only from them (the shape
  subgraphs torch exports), become constants for the signature, so those steps disappear.
- Shape-deciding inputs that are now constant (Reshape's shape, Slice's starts...) are converted to
  Python values once instead of on every run.
- Ops with an `out=` variant write into preallocated buffers; a buffer is reused by a later step
  once every value that may alias it is dead (liveness over alias groups). Graph outputs are never
  buffers, so what `run()` returns is the caller's to keep.
- The steps are emitted as straight-line Python (`Plan.source`) and compiled: no graph walking and
  no per-step dispatch on the hot path.
"""

from __future__ import annotations

import linecache
import math
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from zeroskip import ops
from zeroskip.dtypes import from_torch, to_torch
from zeroskip.errors import InputError, ModelError, UnsupportedOpError, ZeroskipError
from zeroskip.ir import Graph, Node, Value, fold_batchnorm, fold_constants, remove_dead_nodes
from zeroskip.ir.fusion import fuse
from zeroskip.ir.passes import NONDETERMINISTIC
from zeroskip.ops import cpu_kernels
from zeroskip.ops import nn as nn_ops
from zeroskip.ops._select import Offer
from zeroskip.tuning import Tuner, fingerprint

__all__ = ["Program", "evaluate_node", "optimize"]

_MAX_SIGNATURES = 32


def _to_torch(a: np.ndarray) -> torch.Tensor:
    if not a.flags.writeable or not a.flags.c_contiguous or a.dtype.byteorder == ">":
        a = np.array(a, order="C", dtype=a.dtype.newbyteorder("="))  # keeps 0-d arrays 0-d
    return to_torch(a)


def _py(t: torch.Tensor | None) -> Any:
    return None if t is None else t.tolist()


@dataclass
class Step:
    index: int
    node: Node
    opdef: ops.OpDef
    fn: Callable[..., Any]
    inputs: list[int | None]  # value ids
    outputs: list[int | None]
    attrs: dict[str, Any]
    static: frozenset[int]
    foldable: bool  # deterministic: may be evaluated at plan time when its inputs are known
    tuple_result: bool = False


def _resolve(g: Graph) -> dict[int, ops.OpDef]:
    """Every node's op registration; all unsupported ops are reported together."""
    found: dict[int, ops.OpDef] = {}
    missing: dict[str, list[str]] = {}
    for n in g.nodes:
        opset = g.opset_for(n.domain)
        d = ops.resolve(n.op_type, n.domain, opset)
        if d is None:
            key = f"{n.domain + '::' if n.domain else ''}{n.op_type} (opset {opset})"
            missing.setdefault(key, []).append(n.name)
        else:
            found[id(n)] = d
    if missing:
        parts = [
            f"{op} (nodes {', '.join(repr(x) for x in names[:5])}{', ...' if len(names) > 5 else ''})"
            for op, names in sorted(missing.items())
        ]
        raise UnsupportedOpError(
            f"the model uses {len(missing)} op(s) zeroskip does not support: {'; '.join(parts)}. "
            "The supported ones: zeroskip.ops.claimed()"
        )
    for n in g.nodes:
        d = found[id(n)]
        if not d.takes_any_attr:
            extra = sorted(set(n.attrs) - d.attrs)
            if extra:
                raise UnsupportedOpError(
                    f"{n.describe()}: attribute(s) {extra} are not supported by zeroskip's {n.op_type} "
                    f"(it takes {sorted(d.attrs)})"
                )
    return found


def _call(
    d: ops.OpDef, fn: Callable[..., Any], node: Node, args: list[Any], attrs: dict[str, Any]
) -> tuple[list[Any], bool]:
    """Run an op; returns its outputs as a list and whether it returned a tuple."""
    kw = dict(attrs)
    if d.wants_noutputs:
        kw["_noutputs"] = len(node.outputs)
    res = fn(*args, **kw)
    if isinstance(res, (tuple, list)):
        return list(res), True
    return [res], False


def _torch_attrs(n: Node) -> dict[str, Any]:
    return {k: _to_torch(v) if isinstance(v, np.ndarray) else v for k, v in n.attrs.items()}


def evaluate_node(g: Graph, n: Node, args: list[np.ndarray | None]) -> list[np.ndarray]:
    """Run one node on constant inputs (constant folding)."""
    d = ops.require(n.op_type, n.domain, g.opset_for(n.domain))
    targs = [
        None if a is None else (_py(_to_torch(a)) if i in d.static else _to_torch(a))
        for i, a in enumerate(args)
    ]
    try:
        with torch.inference_mode():
            res, _ = _call(d, d.fn, n, targs, _torch_attrs(n))
    except ZeroskipError:
        raise
    except Exception as e:
        raise ModelError(f"{n.describe()}: fails on its constant inputs: {e}") from e
    return [from_torch(r.detach()).copy() if isinstance(r, torch.Tensor) else np.asarray(r) for r in res]


def optimize(g: Graph) -> dict[str, int]:
    """The load-time passes, in order. Returns what each did."""
    _resolve(g)  # unsupported ops are reported before anything runs
    stats = {"folded": fold_constants(g, lambda n, a: evaluate_node(g, n, a))}
    stats["bn_folded"] = fold_batchnorm(g)
    stats["dead"] = remove_dead_nodes(g)
    stats.update(fuse(g))
    return stats


@dataclass
class _Signature:
    shapes: dict[int, tuple[int, ...]] = field(default_factory=dict)
    dtypes: dict[int, torch.dtype] = field(default_factory=dict)
    known: dict[int, torch.Tensor] = field(default_factory=dict)  # values constant for this signature


class Program:
    """A loaded graph ready to run: constants in torch, ops bound; one compiled plan per signature."""

    def __init__(
        self,
        g: Graph,
        impls: Mapping[str, Callable[..., Any]] | None = None,
        *,
        min_buffer_bytes: int = 64 << 10,
        tuner: Tuner | None = None,
        reference: bool = False,
    ):
        self.graph = g
        # Every op on its generic torch function: no op specialises itself, no kernel is tuned.
        self.reference = reference
        # Chooses among the paths weight-bearing ops offer (dense, sparse formats), per signature.
        self.tuner = tuner if tuner is not None else Tuner()
        # Outputs smaller than this are left to the allocator: a small malloc costs less than the
        # out= call's extra Python and shape checks.
        self.min_buffer_bytes = min_buffer_bytes
        opdefs = _resolve(g)
        self._ids: dict[int, int] = {}
        self.values: list[Value] = []
        for v in g.inputs:
            self._vid(v)
        self.consts: dict[int, torch.Tensor] = {}
        self.steps: list[Step] = []
        impls = impls or {}
        for i, n in enumerate(g.nodes):
            d = opdefs[id(n)]
            ins = []
            for x in n.inputs:
                if x is None:
                    ins.append(None)
                    continue
                vid = self._vid(x)
                if x.is_const and vid not in self.consts:
                    self.consts[vid] = _to_torch(x.dense())
                ins.append(vid)
            self.steps.append(
                Step(
                    index=i,
                    node=n,
                    opdef=d,
                    fn=impls.get(n.name, d.fn),
                    inputs=ins,
                    outputs=[None if y is None else self._vid(y) for y in n.outputs],
                    attrs=_torch_attrs(n),
                    static=frozenset(d.static),
                    foldable=n.op_type not in NONDETERMINISTIC,
                )
            )
        self.input_ids = [self._vid(v) for v in g.inputs]
        self._untyped_inputs = any(v.dtype is None for v in g.inputs)
        self.output_ids = []
        for v in g.outputs:
            vid = self._vid(v)
            if v.is_const and vid not in self.consts:
                self.consts[vid] = _to_torch(v.dense())
            self.output_ids.append(vid)
        self._plans: OrderedDict[tuple[Any, ...], Plan] = OrderedDict()
        self._lock = threading.Lock()

    def stepper(self, feeds: Sequence[torch.Tensor]) -> Stepper:
        """A step-by-step run on `feeds` (graph-input order; see Stepper)."""
        return Stepper(self, feeds)

    def replace_constant(self, name: str, values: np.ndarray) -> None:
        """Overwrite constant `name` in place (same shape and dtype). Only on a reference program: there
        no op keeps a converted copy of its weights. Plans that folded a value computed from it are
        dropped (the next run plans again)."""
        if not self.reference:
            raise InputError("constants can be replaced only when loaded with options={'reference': True}")
        vid = next((i for i, v in enumerate(self.values) if v.name == name and i in self.consts), None)
        if vid is None:
            raise InputError(f"the model has no constant named '{name}'")
        old, new = self.consts[vid], _to_torch(np.ascontiguousarray(values))
        if new.shape != old.shape or new.dtype != old.dtype:
            raise InputError(
                f"constant '{name}' is {old.dtype} {list(old.shape)}; got {new.dtype} {list(new.shape)}"
            )
        readers = {y for st in self.steps if vid in st.inputs for y in st.outputs if y is not None}
        with self._lock:
            old.copy_(new)
            for key in [k for k, p in self._plans.items() if readers & p.folded]:
                del self._plans[key]

    def _vid(self, v: Value) -> int:
        vid = self._ids.get(id(v))
        if vid is None:
            vid = self._ids[id(v)] = len(self.values)
            self.values.append(v)
        return vid

    # -- running -----------------------------------------------------------------------------
    def run(self, feeds: Sequence[torch.Tensor], key: Any = None) -> list[torch.Tensor]:
        """Run on tensors given in graph-input order (already checked by the session).

        `key` identifies the signature (input shapes and dtypes); the session passes one it built
        cheaply from its inputs. No autograd state is touched: no tensor here requires grad.
        """
        if key is None:
            key = tuple(tuple(t.shape) for t in feeds)
            if self._untyped_inputs:  # the session does not pin these dtypes: they join the key
                key = (*key, *(t.dtype for t in feeds))
        with self._lock:
            plan = self._plans.get(key)
            if plan is not None:
                return plan(feeds)
            _, sig = self._trace(feeds)
            plan = self._plans[key] = self._plan(sig, feeds)
            if len(self._plans) > _MAX_SIGNATURES:
                self._plans.popitem(last=False)
            # Answer from the compiled plan, not the trace: it may use other kernels (rounding
            # differently), and every later run of this shape will be the plan's.
            return plan(feeds)

    def _plan(self, sig: _Signature, feeds: Sequence[torch.Tensor]) -> Plan:
        """The plan for a new signature. Where the tuner gave some conv oneDNN's channels-last path, a
        plan with NCHW kernels only is built too and the two are timed on `feeds` (each op was timed
        alone, so the layout changes between them were not); the faster is kept, the choice cached."""
        records = self.tuner.records
        start = len(records)
        plan = Plan(self, sig)
        if self.reference or not any(r.winner == nn_ops.ONEDNN for r in records[start:]):
            return plan
        mixed = records[start:]
        del records[start:]
        token = nn_ops.NCHW_ONLY.set(True)
        try:
            alt = Plan(self, sig)
        finally:
            nn_ops.NCHW_ONLY.reset(token)
        nchw = records[start:]
        del records[start:]
        key = {
            "kind": "layout",
            "device": fingerprint(),
            "plans": [[(r.node, r.op, list(r.input_shape), r.winner) for r in rs] for rs in (mixed, nchw)],
        }
        cache = self.tuner.cache
        entry = cache.get(key) if cache is not None else None
        choice = entry.get("choice") if entry is not None else None
        if choice not in ("mixed", "nchw"):
            times = _time_plans([plan, alt], feeds)
            choice = "nchw" if times[1] < times[0] else "mixed"
            if cache is not None:
                cache.put(key, {"choice": choice, "ms": [round(t * 1e3, 3) for t in times]})
        records.extend(nchw if choice == "nchw" else mixed)
        return alt if choice == "nchw" else plan

    def plan_for(self, feeds: Sequence[torch.Tensor]) -> Plan | None:
        for key, plan in self._plans.items():
            if all(k == tuple(t.shape) for k, t in zip(key, feeds)):
                return plan
        return None

    def _trace(self, feeds: Sequence[torch.Tensor]) -> tuple[list[torch.Tensor], _Signature]:
        """Interpret the graph once, recording shapes and which values this signature fixes."""
        env: dict[int, torch.Tensor] = dict(self.consts)
        sig = _Signature()
        static_shape: set[int] = set(self.consts)
        for vid, t in zip(self.input_ids, feeds):
            env[vid] = t
            static_shape.add(vid)
            sig.shapes[vid] = tuple(t.shape)
            sig.dtypes[vid] = t.dtype
        known: dict[int, torch.Tensor] = dict(self.consts)
        for st in self.steps:
            res = _execute(st, env)
            tensor_ins = [v for p, v in enumerate(st.inputs) if v is not None and p not in st.static]
            static_ins = [v for p, v in enumerate(st.inputs) if v is not None and p in st.static]
            shape_ok = all(v in static_shape for v in tensor_ins) and all(v in known for v in static_ins)
            is_shape_op = st.node.op_type in ("Shape", "Size") and st.node.domain == ""
            fold = st.foldable and (
                (is_shape_op and all(v in static_shape for v in tensor_ins))
                or all(v in known for p, v in enumerate(st.inputs) if v is not None)
            )
            for vid, r in zip(st.outputs, res):
                if vid is None:
                    continue
                if not isinstance(r, torch.Tensor):
                    raise ModelError(f"{st.node.describe()}: op returned {type(r).__name__}, not a tensor")
                env[vid] = r
                sig.shapes[vid] = tuple(r.shape)
                sig.dtypes[vid] = r.dtype
                if shape_ok or fold:
                    static_shape.add(vid)
                if fold:
                    known[vid] = r
        sig.known = {k: v for k, v in known.items() if k not in self.consts}
        return [env[v] for v in self.output_ids], sig


def _execute(st: Step, env: Mapping[int, torch.Tensor]) -> list[Any]:
    """One step on its generic function, inputs from `env`; returns its outputs."""
    args = []
    for pos, vid in enumerate(st.inputs):
        if vid is None:
            args.append(None)
        else:
            args.append(_py(env[vid]) if pos in st.static else env[vid])
    try:
        res, st.tuple_result = _call(st.opdef, st.fn, st.node, args, st.attrs)
    except ZeroskipError:
        raise
    except Exception as e:
        raise _node_error(st, e, env) from e
    return res


class Stepper:
    """The program's steps run one at a time on their generic functions, in graph order, so a caller can
    stop once a value is computed, change constants (`Program.replace_constant`), and go on from
    there: what runs after sees the new constants. Values no later step reads are freed as it goes."""

    def __init__(self, prog: Program, feeds: Sequence[torch.Tensor]):
        self.prog = prog
        self.env: dict[int, torch.Tensor] = dict(prog.consts)
        for vid, t in zip(prog.input_ids, feeds):
            self.env[vid] = t
        self.pos = 0
        last: dict[int, int] = {}
        for st in prog.steps:
            for v in st.inputs:
                if v is not None and v not in prog.consts:
                    last[v] = st.index
        keep = set(prog.output_ids) | set(prog.input_ids)
        self._free_after: dict[int, list[int]] = {}
        for v, i in last.items():
            if v not in keep:
                self._free_after.setdefault(i, []).append(v)
        self._names = {v.name: vid for vid, v in enumerate(prog.values) if v.name}

    def value(self, name: str) -> torch.Tensor:
        """Value `name`, running steps until it is computed (a graph input or constant at once)."""
        vid = self._names.get(name)
        if vid is None:
            raise InputError(f"the model has no value named '{name}'")
        steps = self.prog.steps
        with torch.inference_mode():
            while vid not in self.env:
                if self.pos >= len(steps):
                    raise InputError(f"value '{name}' was freed or is never computed")
                st = steps[self.pos]
                for v, r in zip(st.outputs, _execute(st, self.env)):
                    if v is not None:
                        self.env[v] = r
                for v in self._free_after.get(self.pos, ()):
                    if v != vid:
                        self.env.pop(v, None)
                self.pos += 1
        return self.env[vid]


def _node_error(st: Step, e: Exception, env: Mapping[int, Any]) -> ZeroskipError:
    shapes = []
    for vid in st.inputs:
        t = env.get(vid) if vid is not None else None
        shapes.append("None" if t is None else f"{tuple(t.shape)} {str(t.dtype).replace('torch.', '')}")
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    where = f" on inputs [{', '.join(shapes)}]" if env else ""
    return InputError(
        f"{st.node.describe()} failed{where}: {msg}. "
        "Check that the model's inputs have the shapes and dtypes it was exported for."
    )


def _prepared(st: Step, sig: _Signature, prog: Program, known: Mapping[int, torch.Tensor]) -> Any:
    """The op's own specialisation for this signature, if it has one (see ops.register); when the op
    offers several paths (an `Offer`), the one the tuner measures fastest."""
    d = st.opdef
    if d.prepare is None or st.fn is not d.fn or prog.reference:
        return None
    shapes, consts = [], []
    for v in st.inputs:
        c = None if v is None else prog.consts.get(v, known.get(v))
        consts.append(c)
        shapes.append(None if v is None else sig.shapes.get(v, tuple(c.shape) if c is not None else None))
    extra = {"_noutputs": len(st.node.outputs)} if d.wants_noutputs else {}
    try:
        spec = d.prepare(shapes, consts, **st.attrs, **extra)
    except ZeroskipError:
        raise
    except Exception:  # the generic function already ran on this signature
        return None
    if isinstance(spec, Offer):
        fn = prog.tuner.choose(st.node, spec)
        return spec.finish(fn) if fn is not None and spec.finish is not None else fn
    return spec


def _chain_sparse_linears(steps: list[Step], special: dict[int, Any], outputs: set[int]) -> None:
    """Relay chains of sparse Linears (see cpu_kernels.SparseLinear): where one sparse Linear's output
    is read by nothing but the next sparse Linear of the same batch size, it is passed transposed."""
    producer: dict[int, Step] = {}
    readers: dict[int, int] = {}
    for st in steps:
        for y in st.outputs:
            if y is not None:
                producer[y] = st
        for x in st.inputs:
            if x is not None:
                readers[x] = readers.get(x, 0) + 1
    for b in steps:
        rb = special.get(b.index)
        x = b.inputs[0] if b.inputs else None
        if not isinstance(rb, cpu_kernels.SparseLinear) or rb.m < 2 or x is None or x in outputs:
            continue
        a = producer.get(x)
        ra = None if a is None else special.get(a.index)
        if not isinstance(ra, cpu_kernels.SparseLinear) or ra.m != rb.m or readers.get(x) != 1:
            continue
        special[a.index] = ra.relaid(ra.x_t, True)
        special[b.index] = rb.relaid(True, rb.y_t)


def _pooled_special(st: Step, spec: Any, sig: _Signature) -> bool:
    """Whether a prepared runner writes into a pooled buffer: it has a `run_out(out, *inputs)` (see
    cpu_kernels._with_out) for a float32 output of the value's size. Any size: the buffer's torch
    and numpy views are made once, where a fresh output costs a few microseconds every run."""
    if spec is None or getattr(spec, "run_out", None) is None or len(st.outputs) != 1:
        return False
    y = st.outputs[0]
    if y is None or y not in sig.shapes or sig.dtypes.get(y) is not torch.float32:
        return False
    return math.prod(sig.shapes[y]) == math.prod(spec.out_shape)


# Ops that return a view of their first input when its strides allow (torch's reshape, permute, ...).
_VIEW_OPS = frozenset({"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Identity"})


def _fixed_view(st: Step, args: list[str], fixed: Mapping[int, str], ns: Mapping[str, Any]) -> Any:
    """A view step of a value that is the same tensor every run (a pooled buffer, or a view of one) with
    only constant other inputs gives the same view every run: that view, made now, or None. Only a
    result that shares the buffer's memory qualifies (a reshape that had to copy would go stale)."""
    if st.node.op_type not in _VIEW_OPS or st.node.domain not in ("", "ai.onnx") or len(st.outputs) != 1:
        return None
    if st.outputs[0] is None or not st.inputs or st.inputs[0] not in fixed:
        return None
    if any(a != "None" and not a.startswith(f"s{st.index}_") for a in args[1:]):
        return None  # a shape known only at run time
    base = ns[fixed[st.inputs[0]]]
    extra = {"_noutputs": 1} if st.opdef.wants_noutputs else {}
    try:
        r = ns[f"f{st.index}"](base, *(None if a == "None" else ns[a] for a in args[1:]), **st.attrs, **extra)
    except Exception:
        return None
    if not isinstance(r, torch.Tensor) or r.untyped_storage().data_ptr() != base.untyped_storage().data_ptr():
        return None
    return r


def _bind_native(spec: Any, st: Step, out: torch.Tensor, fixed: dict[int, str], ns: dict[str, Any]) -> Any:
    """The step's kernel call bound to its buffers (see cpu_kernels._native), or None: when the runner
    has no such call, or an input is not one of the plan's fixed, contiguous float32 tensors (a feed,
    a value made anew each run), or the kernel refuses the operands (r overlapping out...)."""
    native = getattr(spec, "native", None)
    if native is None:
        return None
    positions, bind = native
    tensors = [out]
    for p in positions:
        v = st.inputs[p] if p < len(st.inputs) else None
        t = ns[fixed[v]] if v is not None and v in fixed else None
        if not isinstance(t, torch.Tensor) or t.dtype != torch.float32 or not t.is_contiguous():
            return None
        tensors.append(t)
    if out.dtype != torch.float32 or not out.is_contiguous():
        return None
    try:
        return bind(*(t.numpy() for t in tensors))
    except (ValueError, TypeError, RuntimeError):
        return None


def _time_plans(plans: Sequence[Plan], feeds: Sequence[torch.Tensor], budget: float = 1.0) -> list[float]:
    """Median seconds per run of each plan on `feeds`: one warm-up run each, then rounds that alternate
    their order, at least 3 and up to 7, while `budget` seconds last."""
    pc = time.perf_counter
    for p in plans:
        p(feeds)
    samples: list[list[float]] = [[] for _ in plans]
    start = pc()
    for rnd in range(7):
        for i in range(len(plans)) if rnd % 2 == 0 else reversed(range(len(plans))):
            t0 = pc()
            plans[i](feeds)
            samples[i].append(pc() - t0)
        if rnd >= 2 and pc() - start > budget:
            break
    return [float(np.median(s)) for s in samples]


def _nbytes(sig: _Signature, vid: int) -> int:
    return int(np.prod(sig.shapes[vid], dtype=np.int64)) * sig.dtypes[vid].itemsize


class Plan:
    """Straight-line code for one signature; `source` shows it."""

    _counter = 0

    def __init__(self, prog: Program, sig: _Signature):
        self.prog = prog
        known = sig.known
        self.folded = frozenset(known)  # values this plan computed once, at plan time
        ns: dict[str, Any] = {"_py": _py}
        lines = ["def _plan(feeds):"]
        line_step: dict[int, Step] = {}

        def name(vid: int) -> str:
            if vid in prog.consts or vid in known:
                k = f"k{vid}"
                ns[k] = prog.consts[vid] if vid in prog.consts else known[vid]
                return k
            return f"v{vid}"

        ins = [name(v) for v in prog.input_ids]
        if ins:
            lines.append(f"    {', '.join(ins)}{',' if len(ins) == 1 else ''} = feeds")
        live_steps = [st for st in prog.steps if not all(v is None or v in known for v in st.outputs)]

        # Liveness over alias groups (a view keeps its base alive).
        parent: dict[int, int] = {}

        def find(x: int) -> int:
            while parent.get(x, x) != x:
                x = parent[x]
            return x

        def union(a: int, b: int) -> None:
            ra, rb = find(a), find(b)
            if ra != rb:
                parent[ra] = rb

        outputs = set(prog.output_ids)
        # A step writes into a pooled buffer when its op has an out= variant, the scheduler did not
        # replace it, and nothing that may alias its output is a graph output. Aliasing depends on
        # which steps use buffers, so settle both together.
        # Ops that specialise themselves for this signature (see ops.register's `prepare`).
        prog.tuner.begin(sum(st.opdef.prepare is not None for st in live_steps))
        try:
            special = {st.index: _prepared(st, sig, prog, known) for st in live_steps}
        finally:
            prog.tuner.end()
        _chain_sparse_linears(live_steps, special, set(prog.output_ids))
        uses_out = {
            st.index: (
                special[st.index] is None
                and len(st.outputs) == 1
                and st.outputs[0] is not None
                and st.opdef.out_fn is not None
                and st.fn is st.opdef.fn
                and st.outputs[0] in sig.shapes
                and _nbytes(sig, st.outputs[0]) >= prog.min_buffer_bytes
            )
            or _pooled_special(st, special[st.index], sig)
            for st in live_steps
        }
        while True:
            parent.clear()
            for st in live_steps:
                if uses_out[st.index] or st.opdef.fresh:
                    continue
                for p, x in enumerate(st.inputs):
                    if x is not None and p not in st.static:
                        for y2 in st.outputs:
                            if y2 is not None:
                                union(y2, x)
            pinned = {find(v) for v in outputs}
            demote = [st for st in live_steps if uses_out[st.index] and find(st.outputs[0]) in pinned]
            if not demote:
                break
            for st in demote:
                uses_out[st.index] = False
        last: dict[int, int] = {}
        for i, st in enumerate(live_steps):
            for x in st.inputs:
                if x is not None:
                    last[find(x)] = i
            for y in st.outputs:
                if y is not None:
                    last[find(y)] = max(last.get(find(y), i), i)
        dies_at: dict[int, list[int]] = {}
        for gid, li in last.items():
            if gid not in pinned:
                dies_at.setdefault(li, []).append(gid)
        end = len(live_steps)
        external = set(prog.input_ids) | set(prog.consts) | set(known)
        tainted = {find(v) for v in external}  # outputs aliasing these must be copied

        free: dict[tuple[torch.dtype, int], list[torch.Tensor]] = {}
        held: dict[int, list[tuple[tuple[torch.dtype, int], torch.Tensor]]] = {}
        fixed: dict[int, str] = {}  # values that are the same tensor object every run -> its name in ns
        self.buffers = 0
        self.buffer_bytes = 0
        # Consecutive kernel steps that read and write only the plan's own buffers run as one chain
        # (cpu_kernels.chain), called on the first one's line (the others' lines only name their
        # outputs): one Python call and one GIL release for the run, not one per step. `plain`
        # keeps each step's own call, line for line, for profile().
        chain: list[Any] = []
        chain_name = ""
        plain: dict[int, str] = {}

        def close_chain() -> None:
            nonlocal chain
            if chain:
                ns[chain_name] = cpu_kernels.chain(chain)
            chain = []

        for i, st in enumerate(live_steps):
            joined = False
            args = []
            for p, x in enumerate(st.inputs):
                if x is None:
                    args.append("None")
                elif p in st.static:
                    if x in prog.consts or x in known:
                        k = f"s{st.index}_{p}"
                        ns[k] = _py(prog.consts[x] if x in prog.consts else known[x])
                        args.append(k)
                    else:
                        args.append(f"_py({name(x)})")
                else:
                    args.append(name(x))
            kws = []
            for k, v in st.attrs.items():
                an = f"a{st.index}_{k}"
                ns[an] = v
                kws.append(f"{k}={an}")
            if st.opdef.wants_noutputs:
                kws.append(f"_noutputs={len(st.outputs)}")
            fn = f"f{st.index}"
            outs = [name(y) if y is not None else "_" for y in st.outputs]
            if uses_out[st.index]:
                y = st.outputs[0]
                key = (sig.dtypes[y], int(np.prod(sig.shapes[y], dtype=np.int64)))
                pool = free.get(key)
                if pool:
                    buf = pool.pop()
                else:
                    buf = torch.empty(key[1], dtype=key[0])
                    self.buffers += 1
                    self.buffer_bytes += buf.element_size() * buf.numel()
                held.setdefault(find(y), []).append((key, buf))
                bn = f"b{y}"
                spec = special[st.index]
                # A runner may lay its output out otherwise (out_view: the value as a view of the buffer).
                out_view = getattr(spec, "out_view", None)
                ns[bn] = out_view(buf) if out_view is not None else buf.view(sig.shapes[y])
                fixed[y] = bn
                if spec is not None:  # a prepared runner's run_out (see _pooled_special)
                    ns[fn] = spec.run_out
                    line = f"    {fn}({', '.join([bn, *args])}); {outs[0]} = {bn}"
                    bound = _bind_native(spec, st, ns[bn], fixed, ns)
                    if bound is None:
                        lines.append(line)
                    else:
                        if not chain:
                            chain_name = f"_chain{st.index}"
                            lines.append(f"    {chain_name}(); {outs[0]} = {bn}")
                        else:
                            lines.append(f"    {outs[0]} = {bn}")
                        plain[len(lines)] = line
                        chain.append(bound)
                        joined = True
                else:
                    ns[fn] = st.opdef.out_fn
                    lines.append(f"    {fn}({', '.join([bn, *args, *kws])}); {outs[0]} = {bn}")
            else:
                spec = special[st.index]
                ns[fn] = spec or st.fn
                call = f"{fn}({', '.join(args if spec else args + kws)})"
                n_out = len(st.outputs)
                view = None if spec else _fixed_view(st, args, fixed, ns)
                if view is not None:
                    # The same view of the same buffer every run: made here, once.
                    y = st.outputs[0]
                    fixed[y] = f"c{y}"
                    ns[fixed[y]] = view
                    lines.append(f"    {outs[0]} = {fixed[y]}")
                elif n_out == 1 and not st.tuple_result:
                    lines.append(f"    {outs[0]} = {call}")
                elif n_out == 1:
                    lines.append(f"    {outs[0]} = {call}[0]")
                else:
                    lines.append(f"    {', '.join(outs)}, *_r = {call}")
            line_step[len(lines)] = st
            if not joined:
                close_chain()
            # Free what dies here: buffers go back to the pool, other values are dropped.
            for gid in dies_at.get(i, ()):
                for key, buf in held.pop(gid, ()):
                    free.setdefault(key, []).append(buf)
            drop = [
                f"v{x}"
                for x in {*(v for v in st.inputs if v is not None), *(v for v in st.outputs if v is not None)}
                if x not in external
                and x not in outputs
                and last.get(find(x), end) == i
                and find(x) not in pinned
            ]
            if drop:
                lines.append(f"    del {', '.join(sorted(drop))}")
        close_chain()
        rets = []
        self.copied_outputs = [find(v) in tainted or v in external for v in prog.output_ids]
        for v, copy in zip(prog.output_ids, self.copied_outputs):
            rets.append(f"{name(v)}.clone()" if copy else name(v))
        lines.append(f"    return [{', '.join(rets)}]")
        self.source = "\n".join(lines) + "\n"
        self.chained = len(plain)  # steps run inside a chain
        self._plain_source = "\n".join(plain.get(k, line) for k, line in enumerate(lines, start=1)) + "\n"
        Plan._counter += 1
        filename = f"<zeroskip plan {Plan._counter}>"
        linecache.cache[filename] = (len(self.source), None, self.source.splitlines(True), filename)
        exec(compile(self.source, filename, "exec"), ns)
        self._fn = ns["_plan"]
        self._filename = filename
        self._line_step = line_step
        self.steps = len(live_steps)
        self._ns = ns
        self._profiled: Any = None

    def profile(self, feeds: Sequence[torch.Tensor], repeat: int = 10) -> list[tuple[Node, float]]:
        """Median seconds per step over `repeat` runs of an instrumented copy of the plan."""
        if self._profiled is None:
            out = []
            marks = 0
            for k, line in enumerate(self._plain_source.splitlines(), start=1):
                out.append(line)
                if k == 1:
                    out.append("    _t = [_pc()]")
                elif k in self._line_step:
                    out.append("    _t.append(_pc())")
                    marks += 1
            out[-1] = out[-1].replace("    return [", "    return _t, [", 1)
            ns = dict(self._ns, _pc=time.perf_counter)
            exec(compile("\n".join(out) + "\n", self._filename + " (profiled)", "exec"), ns)
            self._profiled = ns["_plan"]
        order = [self._line_step[k] for k in sorted(self._line_step)]
        samples: list[list[float]] = [[] for _ in order]
        for _ in range(repeat):
            t, _ = self._profiled(feeds)
            for j in range(len(order)):
                samples[j].append(t[j + 1] - t[j])
        return [(st.node, float(np.median(s))) for st, s in zip(order, samples)]

    def __call__(self, feeds: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        try:
            return self._fn(feeds)
        except ZeroskipError:
            raise
        except Exception as e:
            tb = sys.exc_info()[2]
            st = None
            while tb is not None:
                if tb.tb_frame.f_code.co_filename == self._filename:
                    st = self._line_step.get(tb.tb_lineno)
                tb = tb.tb_next
            if st is None:
                raise
            raise _node_error(st, e, {}) from e
