"""The models `zeroskip demo` runs: built in memory with onnx.helper, seeded random weights of which 90%
are zero (magnitude-pruned), so the first run needs nothing downloaded."""

from __future__ import annotations

from typing import Any

import numpy as np

from zeroskip import prune

__all__ = ["DESCRIPTION", "models"]

DESCRIPTION = (
    "an MLP (1024 -> 1024 -> 1024 -> 256, ReLU) and a 1x1-conv block (128 -> 256 -> 128 channels on "
    "28x28, residual), 90% sparse"
)
SPARSITY = 0.9


def _weight(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    w = rng.standard_normal((rows, cols)).astype(np.float32) * np.float32(np.sqrt(2.0 / cols))
    return prune.magnitude(w, SPARSITY)


def _model(nodes: list[Any], inits: list[Any], x: Any, y: Any, name: str) -> Any:
    from onnx import helper

    graph = helper.make_graph(nodes, name, [x], [y], inits)
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="zeroskip-demo"
    )


def mlp(batch: int = 1, seed: int = 0) -> tuple[Any, dict[str, np.ndarray]]:
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    dims = [1024, 1024, 1024, 256]
    nodes, inits, prev = [], [], "input"
    for i, (k, n) in enumerate(zip(dims[:-1], dims[1:])):
        w, b = f"fc{i}.weight", f"fc{i}.bias"
        inits.append(numpy_helper.from_array(_weight(rng, n, k), w))  # (out, in): Gemm with transB=1
        inits.append(numpy_helper.from_array(rng.standard_normal(n).astype(np.float32) * 0.1, b))
        out = f"fc{i}" if i < len(dims) - 2 else "output"
        nodes.append(helper.make_node("Gemm", [prev, w, b], [out], name=f"fc{i}", transB=1))
        if i < len(dims) - 2:
            nodes.append(helper.make_node("Relu", [out], [f"relu{i}"], name=f"relu{i}"))
            out = f"relu{i}"
        prev = out
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", dims[0]])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", dims[-1]])
    feeds = {"input": rng.standard_normal((batch, dims[0])).astype(np.float32)}
    return _model(nodes, inits, x, y, "demo_mlp"), feeds


def conv_block(batch: int = 1, seed: int = 1) -> tuple[Any, dict[str, np.ndarray]]:
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    c, mid, hw = 128, 256, 28
    w1 = _weight(rng, mid, c).reshape(mid, c, 1, 1)
    w2 = _weight(rng, c, mid).reshape(c, mid, 1, 1)
    inits = [
        numpy_helper.from_array(w1, "expand.weight"),
        numpy_helper.from_array(rng.standard_normal(mid).astype(np.float32) * 0.1, "expand.bias"),
        numpy_helper.from_array(w2, "project.weight"),
        numpy_helper.from_array(rng.standard_normal(c).astype(np.float32) * 0.1, "project.bias"),
    ]
    nodes = [
        helper.make_node(
            "Conv", ["input", "expand.weight", "expand.bias"], ["e"], name="expand", kernel_shape=[1, 1]
        ),
        helper.make_node("Relu", ["e"], ["e_relu"], name="expand_relu"),
        helper.make_node(
            "Conv", ["e_relu", "project.weight", "project.bias"], ["p"], name="project", kernel_shape=[1, 1]
        ),
        helper.make_node("Add", ["p", "input"], ["s"], name="residual"),
        helper.make_node("Relu", ["s"], ["output"], name="out_relu"),
    ]
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", c, hw, hw])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", c, hw, hw])
    feeds = {"input": rng.standard_normal((batch, c, hw, hw)).astype(np.float32)}
    return _model(nodes, inits, x, y, "demo_conv_block"), feeds


def models() -> list[tuple[str, Any, dict[str, np.ndarray]]]:
    """(name, ModelProto, inputs) for each demo model."""
    return [("mlp, batch 1", *mlp()), ("1x1-conv block, batch 1", *conv_block())]
