"""Pattern fusions at load: fewer, larger steps (ORT does the same in its graph transformers).

- MatMul(x, W) [+ Add(bias)] [+ Relu], with W a constant 2-D weight, and Gemm(x, W, c) [+ Relu]
  become `zeroskip::Linear(x, Wt, bias, activation)`: the weight is stored transposed, N x K, once
  at load: the orientation both torch's linear and the sparse kernels (y^T = Wt x^T) want.
- The exported erf and tanh GELU chains (5 and 9 elementwise nodes) become `zeroskip::Gelu`.
- Attention's score scaling, Div(MatMul(q, k), c), moves into the weights of the Linear that makes q
  (through Reshape/Transpose only), so one elementwise pass over the scores disappears.
- The attention core of float32 graphs, MatMul(Softmax(MatMul(q, kt) [* or / c] [+ mask]), v) with the
  softmax over the last axis, becomes `zeroskip::Attention(q, kt, v, mask, scale, scale_op)`: one
  kernel pass per head, the scores never written out.
- A Linear whose output only a `zeroskip::Gelu` reads takes the GELU as its activation ("gelu" or
  "gelu_tanh"): the sparse kernels apply it to each output block while it is in cache.
- Conv -> Relu / Clip becomes `zeroskip::Conv` with the activation as an attribute; Conv -> Add(r)
  [-> Relu / Clip], r of the conv output's shape (a residual connection), becomes `zeroskip::Conv` with
  r as a fourth input: the conv writes, r is added in its output buffer, the activation follows.
- A residual Add feeding only a LayerNormalization (float32, over the last axis, one output) becomes
  `zeroskip::AddLayerNorm`: the sum is normalised while it is still in cache.

A chain is fused only when its intermediate values feed nothing else and are not graph outputs.
"""

from __future__ import annotations

import math

import numpy as np

from zeroskip.ir.graph import Graph, Node, Value

__all__ = ["DOMAIN", "fuse"]

DOMAIN = "zeroskip"


class _Index:
    def __init__(self, g: Graph):
        self.users: dict[int, list[Node]] = g.consumers()
        self.outputs = {id(v) for v in g.outputs}

    def only_use(self, v: Value | None) -> Node | None:
        """The single node reading `v`, if `v` is a private intermediate."""
        if v is None or id(v) in self.outputs:
            return None
        users = self.users.get(id(v), [])
        return users[0] if len(users) == 1 else None

    def only_value_use(self, v: Value | None) -> Node | None:
        """Like only_use, but Shape/Size readers (which see only the shape) are allowed too."""
        if v is None or id(v) in self.outputs:
            return None
        users = [n for n in self.users.get(id(v), []) if n.op_type not in ("Shape", "Size")]
        return users[0] if len(users) == 1 else None

    def private_producer(self, v: Value | None, op: str) -> Node | None:
        """The node producing `v` if it is an `op` whose output only feeds one node."""
        if v is None or v.producer is None or v.producer.op_type != op or v.producer.domain != "":
            return None
        n = v.producer
        if len(n.outputs) != 1 or self.only_use(v) is None:
            return None
        return n


def _scalar(v: Value | None) -> float | None:
    if v is None or not v.is_const:
        return None
    a = v.dense()
    if a.size != 1 or a.dtype.kind != "f":
        return None
    return float(a.reshape(()))


def _near(a: float | None, b: float) -> bool:
    return a is not None and abs(a - b) <= 1e-4 * abs(b)


def _other(n: Node, v: Value) -> Value | None:
    """The other input of a binary node that reads `v`."""
    a, b = n.inputs[0], n.inputs[1]
    if a is v:
        return b
    if b is v:
        return a
    return None


def _const_other(n: Node, want: float) -> Value | None:
    """If `n` is binary with one constant input equal to `want`, the non-constant input."""
    a, b = n.inputs[0], n.inputs[1]
    if _near(_scalar(b), want):
        return a
    if _near(_scalar(a), want):
        return b
    return None


def fuse(g: Graph) -> dict[str, int]:
    counts = {"linear": 0, "gelu": 0}
    counts["gelu"] = _fuse_gelu(g)
    counts["linear"] = _fuse_linear(g)
    counts["scale_folded"] = _fold_score_scale(g)
    counts["conv_residual"] = _fuse_conv_residual(g)
    counts["conv_act"] = _fuse_conv_activation(g)
    counts["attention"] = _fuse_attention(g)
    counts["add_layernorm"] = _fuse_add_layernorm(g)
    counts["linear_gelu"] = _fuse_linear_gelu(g)
    return counts


def _fuse_linear_gelu(g: Graph) -> int:
    fused = 0
    for gelu in list(g.nodes):
        # zeroskip::Gelu (fused from the exported chains) or ONNX's own Gelu (opset 20).
        if gelu.op_type != "Gelu" or gelu.domain not in (DOMAIN, "") or gelu not in g.nodes:
            continue
        idx = _Index(g)
        x = gelu.inputs[0]
        lin = x.producer if x is not None else None
        if lin is None or lin.op_type != "Linear" or lin.domain != DOMAIN or lin.attrs.get("activation"):
            continue
        if idx.only_use(x) is not gelu:
            continue
        form = gelu.attrs.get("approximate", "none")
        attrs = {**lin.attrs, "activation": "gelu_tanh" if form == "tanh" else "gelu"}
        new = Node(lin.name, "Linear", DOMAIN, list(lin.inputs), [gelu.outputs[0]], attrs)
        new.fused_from = [*(lin.fused_from or ["Linear"]), *(gelu.fused_from or ["Gelu"])]
        _replace(g, [lin, gelu], new)
        fused += 1
    return fused


def _fuse_add_layernorm(g: Graph) -> int:
    fused = 0
    for ln in list(g.nodes):
        if ln.op_type != "LayerNormalization" or ln.domain != "" or ln not in g.nodes or len(ln.outputs) != 1:
            continue
        if ln.attrs.get("stash_type", 1) != 1 or len(ln.inputs) < 2:
            continue
        z = ln.inputs[0]
        shape = z.shape if z is not None else None
        axis = ln.attrs.get("axis", -1)
        if axis != -1 and (shape is None or axis != len(shape) - 1):
            continue
        idx = _Index(g)
        add = idx.private_producer(z, "Add")
        if add is None or z.dtype != _FLOAT or any(v is None for v in add.inputs):
            continue
        attrs = {"epsilon": ln.attrs.get("epsilon", 1e-5)}
        new = Node(ln.name, "AddLayerNorm", DOMAIN, [*add.inputs, *ln.inputs[1:3]], [ln.outputs[0]], attrs)
        new.fused_from = ["Add", "LayerNormalization"]
        _replace(g, [add, ln], new)
        fused += 1
    return fused


_FLOAT = 1  # onnx.TensorProto.FLOAT


def _last_axis_softmax(g: Graph, sm: Node) -> bool:
    """Whether the Softmax normalises over the last axis of its input alone."""
    axis = sm.attrs.get("axis", -1 if g.opset_for(sm.domain) >= 13 else 1)
    if axis == -1:
        return True
    shape = sm.inputs[0].shape if sm.inputs and sm.inputs[0] is not None else None
    return shape is not None and axis == len(shape) - 1


def _fuse_attention(g: Graph) -> int:
    fused = 0
    for sm in list(g.nodes):
        if sm.op_type != "Softmax" or sm.domain != "" or sm not in g.nodes or len(sm.outputs) != 1:
            continue
        idx = _Index(g)
        p = sm.outputs[0]
        pv = idx.only_use(p)
        if (
            pv is None
            or pv.op_type != "MatMul"
            or pv.domain != ""
            or pv.inputs[0] is not p
            or pv.inputs[1] is p
        ):
            continue
        if not _last_axis_softmax(g, sm):
            continue
        chain = _scores_chain(idx, sm.inputs[0])
        if chain is None:
            continue
        mm, scale_node, add, mask = chain
        if mm.outputs[0].dtype != _FLOAT or p.dtype != _FLOAT:
            continue
        attrs: dict[str, object] = {}
        if scale_node is not None:
            attrs["scale"] = _scalar(scale_node.inputs[1])
            attrs["scale_op"] = "div" if scale_node.op_type == "Div" else "mul"
        nodes = [n for n in (mm, scale_node, add, sm, pv) if n is not None]
        new = Node(
            mm.name,
            "Attention",
            DOMAIN,
            [mm.inputs[0], mm.inputs[1], pv.inputs[1], mask],
            [pv.outputs[0]],
            attrs,
        )
        new.fused_from = [n.op_type for n in nodes]
        _replace(g, nodes, new)
        fused += 1
    return fused


def _scores_chain(idx: _Index, x: Value | None) -> tuple[Node, Node | None, Node | None, Value | None] | None:
    """x = MatMul(q, kt) [* or / scalar constant] [+ mask], each step private: (MatMul, scale node, Add,
    mask)."""
    add, mask = None, None
    if x is not None and x.producer is not None and x.producer.op_type == "Add":
        add = idx.private_producer(x, "Add")
        if add is None:
            return None
        for s_in, m_in in ((add.inputs[0], add.inputs[1]), (add.inputs[1], add.inputs[0])):
            if (
                s_in is not None
                and s_in.producer is not None
                and s_in.producer.op_type in ("MatMul", "Mul", "Div")
            ):
                x, mask = s_in, m_in
                break
        else:
            return None
        if mask is None or mask is x:
            return None
    scale_node = None
    for op in ("Mul", "Div"):
        node = idx.private_producer(x, op)
        if node is not None:
            c = _scalar(node.inputs[1])
            if c is None or c == 0.0 or not math.isfinite(c):
                return None
            scale_node, x = node, node.inputs[0]
            break
    mm = idx.private_producer(x, "MatMul")
    if mm is None or mm.inputs[0] is None or mm.inputs[1] is None:
        return None
    return mm, scale_node, add, mask


def _activation_attrs(act: Node | None) -> dict[str, object] | None:
    """zeroskip::Conv's attributes for a Relu, or a Clip with constant float bounds, read after it."""
    if act is None or act.domain != "":
        return None
    if act.op_type == "Relu":
        return {"activation": "relu"}
    if act.op_type != "Clip":
        return None
    if len(act.inputs) > 1:  # opset 11+: optional constant inputs
        given = [*act.inputs[1:3], None][:2]
        if any(v is not None and _scalar(v) is None for v in given):
            return None  # a bound that is not a constant float scalar
        bounds = [None if v is None else _scalar(v) for v in given]
    else:
        bounds = [act.attrs.get("min"), act.attrs.get("max")]
    lo = -math.inf if bounds[0] is None else bounds[0]
    hi = math.inf if bounds[1] is None else bounds[1]
    return {"activation": "clip", "clip_min": float(lo), "clip_max": float(hi)}


def _fuse_conv_activation(g: Graph) -> int:
    """Conv -> Relu / Clip(constant bounds) becomes zeroskip::Conv with the activation as an attribute."""
    fused = 0
    for conv in list(g.nodes):
        if conv.op_type != "Conv" or conv.domain != "" or len(conv.outputs) != 1:
            continue
        idx = _Index(g)
        act = idx.only_use(conv.outputs[0])
        extra = _activation_attrs(act)
        if act is None or extra is None:
            continue
        new = Node(conv.name, "Conv", DOMAIN, list(conv.inputs), [act.outputs[0]], {**conv.attrs, **extra})
        new.fused_from = ["Conv", act.op_type]
        _replace(g, [conv, act], new)
        fused += 1
    return fused


_FLOAT = 1  # ONNX element type float32


def _fuse_conv_residual(g: Graph) -> int:
    """Conv -> Add(r) [-> Relu / Clip], with r of the conv output's own (fully known) shape, becomes
    zeroskip::Conv(X, W, B, r) with residual=1: the sum is formed in the conv's output buffer and the
    activation applied to it there, one step instead of two or three."""
    fused = 0
    for conv in list(g.nodes):
        if conv.op_type != "Conv" or conv.domain != "" or len(conv.outputs) != 1 or len(conv.inputs) < 2:
            continue
        y, idx = conv.outputs[0], _Index(g)
        add = idx.only_use(y)
        if add is None or add.op_type != "Add" or add.domain != "" or len(add.inputs) != 2:
            continue
        r = _other(add, y)
        shape = y.shape
        if (
            r is None
            or r is y
            or shape is None
            or len(shape) != 4
            or any(not isinstance(d, (int, str)) for d in shape)
            or r.shape != shape
            or y.dtype != _FLOAT
            or r.dtype != _FLOAT
        ):
            continue
        act = idx.only_use(add.outputs[0])
        extra = _activation_attrs(act)
        dead = [conv, add] if extra is None else [conv, add, act]
        b = conv.inputs[2] if len(conv.inputs) > 2 else None
        attrs = {**conv.attrs, **(extra or {}), "residual": 1}
        new = Node(
            conv.name, "Conv", DOMAIN, [conv.inputs[0], conv.inputs[1], b, r], [dead[-1].outputs[0]], attrs
        )
        new.fused_from = [n.op_type for n in dead]
        _replace(g, dead, new)
        fused += 1
    return fused


_VIEW_OPS = ("Reshape", "Transpose", "Unsqueeze", "Squeeze", "Flatten")


def _fold_score_scale(g: Graph) -> int:
    folded = 0
    for div in list(g.nodes):
        if div.op_type not in ("Div", "Mul") or div.domain != "" or div not in g.nodes:
            continue
        idx = _Index(g)
        mm = idx.private_producer(div.inputs[0], "MatMul")
        c = _scalar(div.inputs[1])
        if mm is None or c is None or c == 0.0 or not math.isfinite(c):
            continue
        factor = 1.0 / c if div.op_type == "Div" else c
        # Walk q back through private view ops to the Linear that computes it.
        v = mm.inputs[0]
        while v is not None and v.producer is not None and v.producer.op_type in _VIEW_OPS:
            if idx.only_value_use(v) is None:
                v = None
                break
            v = v.producer.inputs[0]
        lin = v.producer if v is not None else None
        if lin is None or lin.op_type != "Linear" or lin.domain != DOMAIN or lin.attrs.get("activation"):
            continue
        if idx.only_value_use(v) is None:
            continue
        w = lin.inputs[1]
        new_w = Value(
            f"{w.name}.scaled",
            dtype=w.dtype,
            shape=w.shape,
            const=(w.dense() * factor).astype(w.dense().dtype),
        )
        if w.sparse is not None:
            new_w.sparse = type(w.sparse).from_dense(new_w.const)
        inputs = [lin.inputs[0], new_w]
        if len(lin.inputs) > 2 and lin.inputs[2] is not None:
            b = lin.inputs[2]
            inputs.append(
                Value(
                    f"{b.name}.scaled",
                    dtype=b.dtype,
                    shape=b.shape,
                    const=(b.dense() * factor).astype(b.dense().dtype),
                )
            )
        lin.inputs = inputs
        # The MatMul now writes what the Div wrote.
        y = div.outputs[0]
        mm.outputs = [y]
        y.producer = mm
        g.nodes = [n for n in g.nodes if n is not div]
        folded += 1
    return folded


def _replace(g: Graph, dead: list[Node], new: Node) -> None:
    """Put `new` where the last of `dead` was; it produces the last node's output."""
    ids = {id(n) for n in dead}
    out: list[Node] = []
    last = dead[-1]
    for n in g.nodes:
        if n is last:
            out.append(new)
        elif id(n) not in ids:
            out.append(n)
    for y in new.outputs:
        if y is not None:
            y.producer = new
    g.nodes = out
    g.opset.setdefault(DOMAIN, 1)


def _fuse_gelu(g: Graph) -> int:
    fused = 0
    for n in list(g.nodes):
        if n.op_type != "Mul" or n.domain != "" or n not in g.nodes:
            continue
        idx = _Index(g)
        chain = _match_gelu_erf(idx, n) or _match_gelu_tanh(idx, n)
        if chain is None:
            continue
        x, approx, nodes = chain
        new = Node(nodes[0].name, "Gelu", DOMAIN, [x], [n.outputs[0]], {"approximate": approx})
        new.fused_from = [m.op_type for m in nodes]
        _replace(g, nodes, new)
        fused += 1
    return fused


def _match_gelu_erf(idx: _Index, last: Node) -> tuple[Value, str, list[Node]] | None:
    # Mul(Mul(x, Add(Erf(Div(x, sqrt2)), 1)), 0.5), any operand order.
    p = _const_other(last, 0.5)
    m1 = idx.private_producer(p, "Mul")
    if m1 is None:
        return None
    for x, a in ((m1.inputs[0], m1.inputs[1]), (m1.inputs[1], m1.inputs[0])):
        add = idx.private_producer(a, "Add")
        e = _const_other(add, 1.0) if add else None
        erf = idx.private_producer(e, "Erf")
        d = idx.private_producer(erf.inputs[0], "Div") if erf else None
        if d is not None and d.inputs[0] is x and _near(_scalar(d.inputs[1]), math.sqrt(2.0)):
            return x, "none", [d, erf, add, m1, last]
        mm = idx.private_producer(erf.inputs[0], "Mul") if erf else None
        if mm is not None and _const_other(mm, 1 / math.sqrt(2.0)) is x:
            return x, "none", [mm, erf, add, m1, last]
    return None


def _match_gelu_tanh(idx: _Index, last: Node) -> tuple[Value, str, list[Node]] | None:
    # Mul(0.5, Mul(x, Add(1, Tanh(Mul(c, Add(x, Mul(0.044715, x^3)))))))
    p = _const_other(last, 0.5)
    m1 = idx.private_producer(p, "Mul")
    if m1 is None:
        return None
    for x, a in ((m1.inputs[0], m1.inputs[1]), (m1.inputs[1], m1.inputs[0])):
        add1 = idx.private_producer(a, "Add")
        t = idx.private_producer(_const_other(add1, 1.0), "Tanh") if add1 else None
        sm = idx.private_producer(t.inputs[0], "Mul") if t else None
        b = idx.private_producer(_const_other(sm, math.sqrt(2 / math.pi)), "Add") if sm else None
        if b is None:
            continue
        cm = idx.private_producer(_other(b, x), "Mul")
        x3v = _const_other(cm, 0.044715) if cm else None
        cube = _cube_of(idx, x3v, x)
        if cube is not None:
            return x, "tanh", [*cube, cm, b, sm, t, add1, m1, last]
    return None


def _cube_of(idx: _Index, v: Value | None, x: Value) -> list[Node] | None:
    pw = idx.private_producer(v, "Pow")
    if pw is not None and pw.inputs[0] is x and _near(_scalar(pw.inputs[1]), 3.0):
        return [pw]
    m = idx.private_producer(v, "Mul")
    if m is None:
        return None
    sq = idx.private_producer(_other(m, x), "Mul")
    if sq is not None and sq.inputs[0] is x and sq.inputs[1] is x:
        return [sq, m]
    return None


def _weight(v: Value | None) -> np.ndarray | None:
    if v is None or not v.is_const:
        return None
    w = v.dense()
    return w if w.ndim == 2 and w.dtype.kind == "f" else None


def _is_bias(b: np.ndarray, n: int) -> bool:
    """A bias that broadcasts along the output features only: shape (n,), (1, n), (1, 1, n)..."""
    return b.size == n and b.shape[-1:] == (n,)


def _fuse_linear(g: Graph) -> int:
    fused = 0
    for n in list(g.nodes):
        if n.domain != "" or n not in g.nodes or n.op_type not in ("MatMul", "Gemm"):
            continue
        idx = _Index(g)
        x, wv = n.inputs[0], n.inputs[1]
        w = _weight(wv)
        if w is None or x is None:
            continue
        nodes = [n]
        bias: np.ndarray | None = None
        if n.op_type == "Gemm":
            a = n.attrs
            if a.get("transA", 0) or a.get("alpha", 1.0) != 1.0:
                continue
            wt = w if a.get("transB", 0) else w.T
            c = n.inputs[2] if len(n.inputs) > 2 else None
            if c is not None:
                if not c.is_const or a.get("beta", 1.0) != 1.0 or not _is_bias(c.dense(), wt.shape[0]):
                    continue
                bias = c.dense()
        else:
            wt = w.T
        y = n.outputs[0]
        n_out = wt.shape[0]
        add = idx.only_use(y)
        if bias is None and add is not None and add.op_type == "Add" and add.domain == "":
            b = _other(add, y)
            if b is not None and b.is_const and b.dense().dtype == w.dtype:
                bd = b.dense()
                if _is_bias(bd, n_out) and (x.shape is None or bd.ndim <= len(x.shape)):
                    bias = bd
                    nodes.append(add)
                    y = add.outputs[0]
        if bias is not None:
            bias = np.ascontiguousarray(bias.astype(w.dtype).reshape(n_out))
        act = ""
        relu = idx.only_use(y)
        if relu is not None and relu.op_type == "Relu" and relu.domain == "":
            act = "relu"
            nodes.append(relu)
            y = relu.outputs[0]
        wt_v = Value(f"{wv.name}.T", dtype=wv.dtype, shape=tuple(wt.shape), const=np.ascontiguousarray(wt))
        if wv.sparse is not None:  # keep a sparse initializer sparse, in the new orientation
            wt_v.sparse = type(wv.sparse).from_dense(wt_v.const)
        inputs: list[Value | None] = [x, wt_v]
        if bias is not None:
            inputs.append(Value(f"{n.name}.bias", dtype=wv.dtype, shape=bias.shape, const=bias))
        new = Node(n.name, "Linear", DOMAIN, inputs, [y], {"activation": act} if act else {})
        new.fused_from = [m.op_type for m in nodes]
        _replace(g, nodes, new)
        fused += 1
    return fused
