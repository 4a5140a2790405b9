"""The runtime's own small graph IR (numpy only) and the passes over it."""

from __future__ import annotations

from zeroskip.ir.graph import Graph, Node, Value
from zeroskip.ir.passes import fold_batchnorm, fold_constants, remove_dead_nodes

__all__ = ["Graph", "Node", "Value", "fold_batchnorm", "fold_constants", "remove_dead_nodes"]
