"""Graph / Node / Value: what the importer builds and the planner consumes.

Values are SSA: one producer (a node, a graph input, or a constant). A constant holds a numpy array
(`const`), or a 2-D float32 sparse initializer kept in CSR (`sparse`) until someone needs it dense.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from zeroskip.errors import ModelError

__all__ = ["Graph", "Node", "Value"]


@dataclass(eq=False)
class Value:
    name: str
    dtype: int | None = None  # ONNX element type code
    shape: tuple[int | str | None, ...] | None = None
    const: np.ndarray | None = None
    sparse: Any = None  # zeroskip.formats.CSR for a sparse initializer
    producer: Node | None = None

    @property
    def is_const(self) -> bool:
        return self.const is not None or self.sparse is not None

    def dense(self) -> np.ndarray:
        if self.const is None:
            if self.sparse is None:
                raise ValueError(f"value '{self.name}' is not a constant")
            self.const = self.sparse.to_dense()
        return self.const

    def __repr__(self) -> str:
        const = ", const" if self.is_const else ""
        return f"Value({self.name!r}, dtype={self.dtype}, shape={self.shape}{const})"


@dataclass(eq=False)
class Node:
    name: str
    op_type: str
    domain: str
    inputs: list[Value | None]
    outputs: list[Value | None]
    attrs: dict[str, Any] = field(default_factory=dict)
    fused_from: list[str] = field(default_factory=list)  # op types a fusion replaced with this node

    def describe(self) -> str:
        if self.fused_from:
            return f"node '{self.name}' ({'+'.join(self.fused_from)}, fused into {self.op_type})"
        return f"node '{self.name}' ({self.op_type})"


@dataclass(eq=False)
class Graph:
    name: str
    inputs: list[Value]
    outputs: list[Value]
    nodes: list[Node]
    opset: dict[str, int]

    def consumers(self) -> dict[int, list[Node]]:
        """id(value) -> nodes reading it."""
        out: dict[int, list[Node]] = {}
        for n in self.nodes:
            for v in n.inputs:
                if v is not None:
                    out.setdefault(id(v), []).append(n)
        return out

    def toposort(self) -> None:
        """Order nodes so that every value is produced before it is read; raise on cycles."""
        ready = {id(v) for v in self.inputs}
        for n in self.nodes:
            for v in n.inputs:
                if v is not None and v.producer is None:
                    ready.add(id(v))
        pending = list(self.nodes)
        ordered: list[Node] = []
        while pending:
            rest = []
            for n in pending:
                if all(v is None or id(v) in ready for v in n.inputs):
                    ordered.append(n)
                    ready.update(id(v) for v in n.outputs if v is not None)
                else:
                    rest.append(n)
            if len(rest) == len(pending):
                names = ", ".join(n.describe() for n in rest[:5])
                raise ModelError(
                    f"the graph has a cycle or reads values nothing produces: {names}"
                    f"{' ...' if len(rest) > 5 else ''}; the model file is malformed"
                )
            pending = rest
        self.nodes = ordered

    def opset_for(self, domain: str) -> int:
        return self.opset.get("" if domain in ("", "ai.onnx") else domain, 0)
