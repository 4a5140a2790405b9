"""What a weight-bearing op offers the scheduler for one input shape.

An op's `prepare` hook (see ops.register) returns an `Offer` instead of a callable when it has more
than one way to run: the dense paths it has (torch first: it is the reference every other path is
checked against), and, when its weight can be multiplied as a sparse matrix, that matrix and a
function binding a packed sparse copy of it to a runner. The planner hands the offer to
`zeroskip.tuning`, which converts the weight, checks and times every candidate on the real shape,
and keeps the fastest (caching the choice on disk).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Offer"]


@dataclass
class Offer:
    # Shape of the op's first input for this signature: candidates are checked and timed on it.
    probe_shape: tuple[int, ...]
    # (name, runner) pairs; runner(x) takes the op's first input and returns its output. The first is
    # the reference (torch).
    dense: Sequence[tuple[str, Callable[..., Any]]]
    # Op-specific identity of what the runners compute besides the weight (geometry, activation...).
    config: Hashable = ()
    # The weight as the sparse kernels see it: (outputs, reduction), float32. None: dense only.
    weight: np.ndarray | None = None
    # bind_sparse(packed weight, kernel name) -> runner, for formats of `weight`.
    bind_sparse: Callable[[Any, str], Callable[..., Any]] | None = None
    # finish(runner) -> the step's runner: what the op does after the candidates' common part (a
    # fused residual Add and activation), applied to the chosen runner. None: the runner itself.
    finish: Callable[[Callable[..., Any]], Callable[..., Any]] | None = None
