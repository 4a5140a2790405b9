"""Latency measurement shared by `zeroskip bench` and the scripts in bench/.

Engines are timed interleaved: each round runs every engine's burst once, in a fresh random order, after
a short sleep (`settle`) that lets the previous engine's idle worker threads stop spinning (libgomp and
onnxruntime both spin for a while after a parallel region and would steal the cores the next engine
needs). Every call is timed on its own, with the garbage collector off during rounds. Compare engines by
the ratio of their medians from the same run.
"""

from __future__ import annotations

import gc
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

__all__ = [
    "Engine",
    "interleave",
    "loadavg",
    "local",
    "machine_info",
    "measure",
    "rel_err",
    "summary",
    "warm_up",
]


@dataclass
class Engine:
    name: str
    burst: Callable[[int], list[float]]  # runs n calls, returns each call's seconds
    outputs: Callable[[], list[np.ndarray]]  # one call's outputs, in the reference's order
    est: float = 0.0  # seconds per call, from the warm-up
    samples: list[float] = field(default_factory=list)

    def pct(self, q: float) -> float:
        return float(np.percentile(self.samples, q))


def local(name: str, fn: Callable[[], list[np.ndarray]]) -> Engine:
    """An engine in this process: `fn` runs one inference and returns its outputs."""

    def burst(n: int) -> list[float]:
        out = []
        pc = time.perf_counter
        for _ in range(n):
            t0 = pc()
            fn()
            out.append(pc() - t0)
        return out

    return Engine(name, burst, fn)


def warm_up(engines: Sequence[Engine], calls: int) -> None:
    """`calls` untimed calls per engine (at least 1); sets each engine's per-call estimate."""
    for e in engines:
        e.est = float(np.median(e.burst(max(1, calls))))


def interleave(
    engines: Sequence[Engine],
    *,
    budget: float = 3.0,
    calls: int | None = None,
    min_rounds: int = 3,
    max_rounds: int = 100_000,
    settle: float = 0.1,
    burst_s: float = 0.02,
    max_burst: int = 50,
    seed: int = 0,
) -> int:
    """Timed rounds until `budget` seconds of calls have run (estimated from `warm_up`), or, with
    `calls`, until every engine has that many samples; returns the number of rounds."""
    if not engines:
        return 0
    bursts = [max(1, min(max_burst, round(burst_s / max(e.est, 1e-9)))) for e in engines]
    if calls is not None:
        bursts = [min(b, max(1, calls)) for b in bursts]
        rounds = max(-(-calls // b) for b in bursts)
    else:
        per_round = sum(b * e.est for b, e in zip(bursts, engines))
        rounds = int(budget / max(per_round, 1e-9))
    rounds = max(min_rounds, min(max_rounds, rounds))
    order = np.random.default_rng(seed)
    gc_was_on = gc.isenabled()
    gc.disable()  # a collection inside one call would be charged to whichever engine ran it
    try:
        for _ in range(rounds):
            for j in order.permutation(len(engines)):
                if settle:
                    time.sleep(settle)
                engines[j].samples.extend(engines[j].burst(bursts[j]))
    finally:
        if gc_was_on:
            gc.enable()
    return rounds


def measure(
    engines: Sequence[Engine], reference: Engine, warmup: int = 5, **timing: Any
) -> tuple[dict[str, float], int]:
    """Check every engine's outputs against `reference`'s, warm up, time interleaved (`timing` goes to
    `interleave`), and check again (catches results that go wrong only sometimes). Returns (max
    relative error per engine, rounds)."""
    want = reference.outputs()
    errs = {e.name: rel_err(e.outputs(), want) for e in engines}
    warm_up(engines, warmup)
    rounds = interleave(engines, **timing)
    want = reference.outputs()
    for e in engines:
        errs[e.name] = max(errs[e.name], rel_err(e.outputs(), want))
    errs[reference.name] = 0.0
    return errs, rounds


def summary(e: Engine, batch: int = 1) -> dict[str, Any]:
    """Latency percentiles (ms) and throughput (inferences/s at the median) of one engine's samples."""
    s = np.asarray(e.samples)
    p50 = float(np.percentile(s, 50))
    return {
        "engine": e.name,
        "p50_ms": p50 * 1e3,
        "p90_ms": float(np.percentile(s, 90)) * 1e3,
        "p99_ms": float(np.percentile(s, 99)) * 1e3,
        "mean_ms": float(s.mean()) * 1e3,
        "min_ms": float(s.min()) * 1e3,
        "calls": int(s.size),
        "throughput": batch / p50 if p50 > 0 else float("inf"),
    }


def rel_err(got: Sequence[np.ndarray], ref: Sequence[np.ndarray]) -> float:
    """max |got - ref| / max |ref| over the outputs (inf when the counts or shapes differ)."""
    if len(got) != len(ref):
        return float("inf")
    worst = 0.0
    for g, r in zip(got, ref):
        g, r = np.asarray(g), np.asarray(r)
        if g.shape != r.shape:
            return float("inf")
        if not r.size:
            continue
        if r.dtype.kind not in "fc":
            worst = max(worst, float(np.any(g != r)))
            continue
        scale = float(np.max(np.abs(r)))
        diff = float(np.max(np.abs(g.astype(np.float64) - r)))
        worst = max(worst, diff / max(scale, 1e-30))
    return worst


def loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


ENV_VARS = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "ZEROSKIP_NUM_THREADS")


def machine_info(threads: int | None) -> dict[str, Any]:
    """CPU, ISAs, threads and library versions (the tuning cache's fingerprint), plus onnxruntime's
    version when it is installed, the thread-related environment and the load average."""
    from zeroskip.tuning import fingerprint

    info: dict[str, Any] = dict(fingerprint(threads))
    info.pop("schema", None)
    info["cores"] = os.cpu_count()
    info["python"] = platform.python_version()
    info["numpy"] = np.__version__
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        info["onnxruntime"] = None
    info["env"] = {v: os.environ.get(v) for v in ENV_VARS}
    info["loadavg"] = loadavg()
    return info
