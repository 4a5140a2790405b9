"""Graph passes run at load: dead-node removal, constant folding, BatchNormalization folding.

The IR is numpy only; constant folding is handed the function that evaluates a node (the planner
passes one running the registered op), so this layer never imports torch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from zeroskip.ir.graph import Graph, Node

__all__ = ["NONDETERMINISTIC", "fold_batchnorm", "fold_constants", "remove_dead_nodes"]

# Ops whose result is not a function of their inputs: never folded.
NONDETERMINISTIC = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial"}
# Folding these would materialise large tensors that the op makes cheaply at run time.
_MAX_FOLDED_BYTES = 64 << 20


def remove_dead_nodes(g: Graph) -> int:
    """Drop nodes none of whose outputs reach a graph output. Returns how many were removed."""
    live = {id(v) for v in g.outputs}
    kept: list[Node] = []
    for n in reversed(g.nodes):
        if any(v is not None and id(v) in live for v in n.outputs):
            kept.append(n)
            live.update(id(v) for v in n.inputs if v is not None)
    removed = len(g.nodes) - len(kept)
    g.nodes = kept[::-1]
    return removed


def fold_constants(g: Graph, evaluate: Callable[[Node, list[Any]], list[np.ndarray]]) -> int:
    """Evaluate every node whose inputs are all constants; its outputs become constants."""
    kept: list[Node] = []
    folded = 0
    for n in g.nodes:
        if n.op_type in NONDETERMINISTIC or not all(v is None or v.is_const for v in n.inputs):
            kept.append(n)
            continue
        results = evaluate(n, [None if v is None else v.dense() for v in n.inputs])
        if sum(r.nbytes for r in results) > _MAX_FOLDED_BYTES and n.inputs:
            kept.append(n)
            continue
        for v, r in zip(n.outputs, results):
            if v is not None:
                v.const, v.producer = r, None
                v.shape = tuple(r.shape)
        folded += 1
    g.nodes = kept
    return folded


def fold_batchnorm(g: Graph) -> int:
    """Fold an inference BatchNormalization into the Conv feeding it (constant weights only)."""
    users = g.consumers()
    outputs = {id(v) for v in g.outputs}
    dead: set[int] = set()
    for bn in g.nodes:
        if bn.op_type != "BatchNormalization" or bn.domain not in ("", "ai.onnx"):
            continue
        if bn.attrs.get("training_mode", 0) or any(v is not None for v in bn.outputs[1:]):
            continue
        x = bn.inputs[0]
        conv = x.producer if x is not None else None
        if conv is None or conv.op_type != "Conv" or id(x) in outputs or len(users.get(id(x), [])) != 1:
            continue
        params = bn.inputs[1:5]
        w = conv.inputs[1]
        b = conv.inputs[2] if len(conv.inputs) > 2 else None
        if w is None or not w.is_const or (b is not None and not b.is_const):
            continue
        if any(p is None or not p.is_const for p in params):
            continue
        wd = w.dense()
        if wd.dtype not in (np.float32, np.float64):
            continue
        scale, beta, mean, var = (p.dense().astype(np.float64) for p in params)
        k = scale / np.sqrt(var + float(bn.attrs.get("epsilon", 1e-5)))
        bias = b.dense().astype(np.float64) if b is not None else np.zeros_like(mean)
        new_w = (wd.astype(np.float64) * k.reshape((-1,) + (1,) * (wd.ndim - 1))).astype(wd.dtype)
        new_b = ((bias - mean) * k + beta).astype(wd.dtype)
        # The folded weight and bias are new constants; the Conv now writes BN's output.
        w2 = type(w)(name=f"{w.name}.bn_folded", dtype=w.dtype, shape=tuple(new_w.shape), const=new_w)
        b2 = type(w)(name=f"{conv.name}.bn_folded_bias", dtype=w.dtype, shape=tuple(new_b.shape), const=new_b)
        y = bn.outputs[0]
        conv.inputs = [conv.inputs[0], w2, b2]
        conv.outputs = [y]
        y.producer = conv
        dead.add(id(bn))
    g.nodes = [n for n in g.nodes if id(n) not in dead]
    return len(dead)
