"""Choosing between implementations of one op for one input shape: the op-level choice a plan makes
once per signature (torch vs a zeroskip kernel). Issue-4 tuning will take this over and cache it."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

__all__ = ["fastest"]


def fastest(reference: Callable[..., Any], others: Sequence[Callable[..., Any]], shape: Sequence[int]) -> Any:
    """The fastest of `reference` and those of `others` whose output on a random input of `shape`
    matches the reference's (rtol 1e-4, atol 1e-5 of its largest magnitude): a fast wrong kernel is
    never picked. Each is timed by its median over a few calls after a warm-up."""
    if not others:
        return reference
    probe = torch.randn(tuple(shape))
    want = reference(probe)
    atol = 1e-5 * float(want.abs().max()) + 1e-30
    agree = [reference]
    for fn in others:
        try:
            got = fn(probe)
        except RuntimeError:
            continue
        if got.shape == want.shape and torch.allclose(got, want, rtol=1e-4, atol=atol):
            agree.append(fn)
    return min(agree, key=lambda fn: _median_seconds(fn, probe))


def _median_seconds(fn: Callable[..., Any], x: torch.Tensor, repeat: int = 5) -> float:
    fn(x)
    fn(x)
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn(x)
        samples.append(time.perf_counter() - t0)
    return sorted(samples)[repeat // 2]
