"""Measured scheduling: for each weight-bearing op, the fastest of its dense paths and every sparse
kernel that can run its weight, timed on the op's real input shape, checked against the dense result,
and cached on disk.

For one op and input shape (`Tuner.choose`):

1. The weight is analysed (`analyze`): sparsity, whether it is 2:4 along the reduction dim, and how
   full the nonzero blocks of each BSR block shape are.
2. Candidates: the op's dense paths (torch first), then, unless the sparsity is below the floor
   measured on this machine (`sparsity_floor`), CSR, BSR for every block shape whose blocks are
   mostly full, and N:M for a 2:4 weight, each with every kernel this CPU runs.
3. Correctness gate: each candidate runs once on a random input of the real shape and its output is
   compared with torch's dense result; a mismatch (or an error) rejects it and is reported.
4. Timing: round-robin over the survivors (so machine noise hits all alike), warm-up first, median of
   the repeats; a candidate far slower than the best on its first two calls is not timed further.
5. The winner, every timing and the reason go to the report and to an on-disk cache keyed by the
   device fingerprint, library versions, op configuration, input shape, weight digest and mode, so
   the next load of the same model measures nothing.

Cache: `$ZEROSKIP_CACHE_DIR`, else `$XDG_CACHE_HOME/zeroskip`, else `~/.cache/zeroskip`; one JSON file
per entry, written atomically; an unreadable or mismatched entry is ignored and rewritten.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
import platform
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from zeroskip import kernels
from zeroskip.errors import InputError, ZeroskipError
from zeroskip.formats import BSR, CSR, NM

__all__ = [
    "BLOCKS",
    "MODES",
    "Record",
    "Report",
    "Tuner",
    "TuningCache",
    "WeightStats",
    "analyze",
    "cache_dir",
    "fingerprint",
    "sparsity_floor",
]

log = logging.getLogger("zeroskip.tuning")

# Bumped when what a measurement means changes, so older entries are not reused (2: a candidate is
# skipped only when its first two calls were slow; entries written under 1 may hold a skip that a
# one-off slow first call caused).
CACHE_SCHEMA = 2
# "auto": fastest measured; "off": dense only; "force-*": that sparse format whatever the timings
# (still gated), for comparisons.
MODES = ("auto", "off", "force-csr", "force-bsr", "force-nm")
# Block shapes (rows x cols of the weight, rows = outputs) BSR is tried with.
BLOCKS: tuple[tuple[int, int], ...] = ((1, 4), (4, 1), (8, 1), (16, 1))
# A block shape is worth timing when at least this fraction of the values its nonzero blocks store
# are real nonzeros (the rest are stored zeros the kernel multiplies for nothing).
USEFUL_FILL = 0.6
# Gate: |sparse - dense| <= GATE_RTOL |dense| + GATE_ATOL max |dense| (float32, any summation order).
GATE_RTOL, GATE_ATOL = 1e-3, 1e-4
# Timing: at least MIN_ROUNDS rounds, then until BUDGET_S seconds or MAX_ROUNDS; a candidate whose first
# two calls each took SKIP_FACTOR x the best first call is not timed further.
MIN_ROUNDS, MAX_ROUNDS, BUDGET_S, SKIP_FACTOR = 5, 30, 0.08, 8.0

# Test hook: when set, every sparse runner the tuner builds is passed through it (name, runner) ->
# runner, e.g. to break one and check that the correctness gate rejects it.
_candidate_hook: Callable[[str, Callable[..., Any]], Callable[..., Any]] | None = None


# ------------------------------------------------------------------------------------------------
# Weight analysis


@dataclass(frozen=True)
class WeightStats:
    shape: tuple[int, int]  # (outputs, reduction)
    sparsity: float  # fraction of exact zeros
    nm24: bool  # every group of 4 consecutive reduction entries holds at most 2 nonzeros
    block_fill: dict[str, float]  # "4x1" -> nonzeros / values stored by BSR with that block

    def useful_blocks(self) -> list[tuple[int, int]]:
        return [b for b in BLOCKS if self.block_fill.get(_bname(b), 0.0) >= USEFUL_FILL]

    def structure(self) -> str:
        if self.sparsity == 0.0:
            return "dense"
        parts = []
        if self.nm24:
            parts.append("2:4")
        best = max(BLOCKS, key=lambda b: (self.block_fill.get(_bname(b), 0.0), b[0] * b[1]))
        fill = self.block_fill.get(_bname(best), 0.0)
        if fill >= USEFUL_FILL and best != (1, 1):
            parts.append(f"{_bname(best)} blocks {fill:.0%} full")
        return ", ".join(parts) or "unstructured"


def _bname(b: tuple[int, int]) -> str:
    return f"{b[0]}x{b[1]}"


def analyze(w: np.ndarray) -> WeightStats:
    """Sparsity and structure of a 2-D weight (outputs x reduction)."""
    nz = w != 0
    rows, cols = w.shape
    nnz = int(np.count_nonzero(nz))
    size = max(w.size, 1)
    nm24 = cols % 4 == 0 and cols > 0 and bool((nz.reshape(rows, cols // 4, 4).sum(axis=2) <= 2).all())
    fill = {}
    for r, c in BLOCKS:
        pr, pc = -(-rows // r) * r, -(-cols // c) * c
        padded = nz if (pr, pc) == (rows, cols) else np.pad(nz, ((0, pr - rows), (0, pc - cols)))
        blocks = int(np.count_nonzero(padded.reshape(pr // r, r, pc // c, c).any(axis=(1, 3))))
        fill[_bname((r, c))] = nnz / (blocks * r * c) if blocks else 1.0
    return WeightStats((rows, cols), 1.0 - nnz / size, nm24, fill)


# ------------------------------------------------------------------------------------------------
# Device fingerprint, cache


@functools.cache
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            info = f.read()
    except OSError:
        info = ""
    fields = {}
    for line in info.splitlines():
        k, _, v = line.partition(":")
        k = k.strip()
        if (
            k in ("model name", "cpu family", "model", "stepping", "CPU part", "CPU implementer")
            and k not in fields
        ):
            fields[k] = v.strip()
    desc = " ".join(f"{k}={v}" for k, v in sorted(fields.items()))
    return desc or platform.processor() or platform.machine()


@functools.cache
def _isas() -> tuple[str, ...]:
    return tuple(sorted({k.isa for k in kernels.available() if k.runnable}))


def fingerprint(threads: int | None = None) -> dict[str, Any]:
    """What a timing depends on besides the op: CPU, ISAs, threads and library versions."""
    import torch

    from zeroskip import __version__

    return {
        "cpu": _cpu_model(),
        "machine": platform.machine(),
        "isas": list(_isas()),
        "threads": int(threads if threads is not None else torch.get_num_threads()),
        "zeroskip": __version__,
        "torch": torch.__version__,
        "schema": CACHE_SCHEMA,
    }


def cache_dir() -> Path:
    env = os.environ.get("ZEROSKIP_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "zeroskip"


class TuningCache:
    """JSON entries under `root/tuning-v{schema}/`, one file per key; atomic writes (temp + rename), so
    concurrent writers never leave a torn file; an unreadable entry reads as missing."""

    def __init__(self, root: str | os.PathLike[str] | None = None):
        self.root = (Path(root) if root is not None else cache_dir()) / f"tuning-v{CACHE_SCHEMA}"
        self._warned = False

    def _path(self, key: Mapping[str, Any]) -> Path:
        digest = hashlib.sha256(_canonical(key).encode()).hexdigest()[:40]
        return self.root / f"{digest}.json"

    def get(self, key: Mapping[str, Any]) -> dict[str, Any] | None:
        path = self._path(key)
        try:
            with open(path, encoding="utf-8") as f:
                entry = json.load(f)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, UnicodeDecodeError) as e:
            log.warning(
                "zeroskip: ignoring unreadable tuning cache entry %s (%s); it will be rewritten", path, e
            )
            return None
        if not isinstance(entry, dict) or _canonical(entry.get("key")) != _canonical(key):
            log.warning("zeroskip: ignoring tuning cache entry %s: it is for another key", path)
            return None
        return entry

    def put(self, key: Mapping[str, Any], value: Mapping[str, Any]) -> None:
        path = self._path(key)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".tmp-", suffix=".json")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    json.dump({"key": key, **value}, f, sort_keys=True)
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as e:
            if not self._warned:
                log.warning(
                    "zeroskip: cannot write the tuning cache under %s (%s); choices are not kept",
                    self.root,
                    e,
                )
                self._warned = True


def _canonical(x: Any) -> str:
    return json.dumps(x, sort_keys=True, separators=(",", ":"))


# ------------------------------------------------------------------------------------------------
# The sparsity floor: below it no sparse kernel is timed


# Sparsities the calibration tries, and the shape it runs (a square weight, batch-1 and batch rows).
_FLOOR_GRID = (0.3, 0.5, 0.6, 0.7, 0.8, 0.9)
_FLOOR_SHAPE, _FLOOR_ROWS = 512, (1, 32)
# The floor is this far below the lowest sparsity at which CSR beat dense in the calibration: other
# shapes cross over elsewhere, and a weight just under the floor still gets every candidate timed.
_FLOOR_MARGIN = 0.2
_floors: dict[str, float] = {}
_floor_lock = threading.Lock()


def sparsity_floor(cache: TuningCache | None = None) -> float:
    """Sparsity below which a weight gets no sparse candidates, measured once per machine and thread
    count (and kept in the cache): dense and the default CSR kernel are timed on a 512 x 512 weight at
    rising sparsity, batch 1 and 32; the floor is `_FLOOR_MARGIN` below the first sparsity where CSR
    wins at either batch (0.7 if it never does)."""
    fp = fingerprint()
    key = {"kind": "sparsity-floor", "device": fp}
    memo = _canonical(key)
    with _floor_lock:
        if memo in _floors:
            return _floors[memo]
        entry = cache.get(key) if cache is not None else None
        floor = entry.get("floor") if entry else None
        if not isinstance(floor, (int, float)) or not 0.0 <= floor <= 1.0:
            floor, timings = _calibrate_floor()
            if cache is not None:
                cache.put(key, {"floor": floor, "timings_us": timings})
        _floors[memo] = float(floor)
        return float(floor)


def _calibrate_floor() -> tuple[float, dict[str, float]]:
    import torch

    rng = np.random.default_rng(1)
    w = rng.standard_normal((_FLOOR_SHAPE, _FLOOR_SHAPE)).astype(np.float32)
    order = np.argsort(np.abs(w), axis=None)
    timings: dict[str, float] = {}
    for s in _FLOOR_GRID:
        ws = w.copy().reshape(-1)
        ws[order[: int(s * w.size)]] = 0
        ws = ws.reshape(w.shape)
        csr = CSR.from_dense(ws)
        wst = torch.from_numpy(ws)
        for m in _FLOOR_ROWS:
            xn = rng.standard_normal((m, _FLOOR_SHAPE)).astype(np.float32)
            x, y = torch.from_numpy(xn), np.empty((m, _FLOOR_SHAPE), np.float32)

            def sparse(_: Any, csr: CSR = csr, xn: np.ndarray = xn, y: np.ndarray = y) -> None:
                kernels.linear(csr, xn, y)

            def dense(_: Any, wst: Any = wst, x: Any = x) -> None:
                torch.nn.functional.linear(x, wst)

            t = _measure({"dense": dense, "csr": sparse}, None)
            timings[f"s{s}/m{m}/dense"] = round(t["dense"] * 1e6, 2)
            timings[f"s{s}/m{m}/csr"] = round(t["csr"] * 1e6, 2)
            if t["csr"] < t["dense"]:
                return max(0.0, round(s - _FLOOR_MARGIN, 2)), timings
    return 0.7, timings


# ------------------------------------------------------------------------------------------------
# Timing


def _median(xs: Sequence[float]) -> float:
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


def _as_in_plan(fn: Callable[..., Any]) -> Callable[[Any], Any]:
    """The call a plan makes of a candidate: a kernel that can write into a given buffer
    (`run_out`, see ops.cpu_kernels._with_out) gets one, as the plan's pooled buffers are, so its
    timing does not count fresh pages it would not touch in the plan (a 1x1 conv writing 4.8 MB:
    0.3 ms into a buffer, 1 ms into new memory)."""
    run_out = getattr(fn, "run_out", None)
    if run_out is None:
        return fn
    import torch

    out = torch.empty(fn.out_shape, dtype=torch.float32)
    return lambda x: run_out(out, x)


def _measure(fns: Mapping[str, Callable[[Any], Any]], x: Any) -> dict[str, float]:
    """Median seconds per candidate: one warm-up call each, then round-robin rounds."""
    pc = time.perf_counter
    for fn in fns.values():
        fn(x)
    samples: dict[str, list[float]] = {n: [] for n in fns}
    start = pc()
    rounds = 0
    while True:
        for name, fn in fns.items():
            t0 = pc()
            fn(x)
            samples[name].append(pc() - t0)
        rounds += 1
        if rounds >= MAX_ROUNDS or (rounds >= MIN_ROUNDS and pc() - start > BUDGET_S):
            break
    return {n: _median(s) for n, s in samples.items()}


# ------------------------------------------------------------------------------------------------
# Choosing


@dataclass
class Record:
    """One op's choice for one input shape: what `Session.report()` shows."""

    node: str
    op: str
    input_shape: tuple[int, ...]
    weight_shape: tuple[int, int] | None
    sparsity: float | None
    structure: str
    winner: str
    timings_us: dict[str, float] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)
    reason: str = ""
    source: str = "measured"  # "measured" | "cache" | "single"

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_shape"] = list(self.input_shape)
        d["weight_shape"] = list(self.weight_shape) if self.weight_shape else None
        return d


@dataclass
class _Node:
    stats: WeightStats | None
    digest: str | None
    formats: dict[str, Any] = field(default_factory=dict)  # "csr" / "bsr4x1" / "nm2:4" -> packed


class Tuner:
    """Per session: the mode, the cache, the records for the report, and per-node weight analysis and
    converted formats (made once, shared by every input shape)."""

    def __init__(self, mode: str = "auto", cache: TuningCache | None = None, progress: bool | None = None):
        if mode not in MODES:
            raise InputError(f"options['sparse'] must be one of {list(MODES)}, got {mode!r}")
        self.mode = mode
        self.cache = cache
        self.records: list[Record] = []
        self._nodes: dict[int, _Node] = {}
        self._progress = sys.stderr.isatty() if progress is None else progress
        self._pending = 0
        self._done = 0
        self._shown = False

    # The planner announces how many ops of a plan may be tuned, for the progress line.
    def begin(self, count: int) -> None:
        self._pending, self._done, self._shown = count, 0, False

    def end(self) -> None:
        if self._shown:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
        self._pending = 0

    def _show(self, label: str) -> None:
        self._done += 1
        if not self._progress or not self._pending:
            return
        width = 24
        filled = width * self._done // max(self._pending, 1)
        bar = "#" * filled + "." * (width - filled)
        sys.stderr.write(f"\r\033[Kzeroskip: tuning [{bar}] {self._done}/{self._pending} {label[:60]}")
        sys.stderr.flush()
        self._shown = True

    def choose(self, node: Any, offer: Any) -> Callable[..., Any] | None:
        """The runner to use for `node` on `offer.probe_shape` (see the module docstring), or None when
        that is the reference (torch) path: the planner then runs the op's own function, which may
        write into a pooled buffer."""
        info = self._node(node, offer)
        stats = info.stats
        builders = self._candidates(offer, info)
        ref = next(iter(builders))
        if len(builders) == 1:
            reason = self._pick({ref: 1.0}, stats, {})[1] if stats else "only one path"
            self.records.append(self._record(node, offer, stats, ref, {}, {}, reason, "single"))
            return None
        key = self._key(node, offer, info, list(builders))
        entry = self.cache.get(key) if self.cache is not None else None
        found = self._from_cache(node, offer, stats, entry, builders) if entry is not None else None
        if found is None:
            self._show(node.describe() if hasattr(node, "describe") else str(node))
            found = self._tune(node, offer, stats, key, builders)
        name, fn = found
        # Converted copies of the weight that lost are dropped (the winner's runner holds its own);
        # another input shape converts again if it needs them.
        keep = name.partition("/")[0]
        for fmt in [f for f in info.formats if f != keep]:
            del info.formats[fmt]
        return None if name == ref else fn

    # -- pieces ------------------------------------------------------------------------------------

    def _node(self, node: Any, offer: Any) -> _Node:
        info = self._nodes.get(id(node))
        if info is None:
            w = offer.weight
            if w is None or offer.bind_sparse is None:
                info = _Node(None, None)
            else:
                w = np.ascontiguousarray(w, dtype=np.float32)
                offer.weight = w
                digest = hashlib.blake2b(w.tobytes(), digest_size=16)
                digest.update(repr(w.shape).encode())
                info = _Node(self._stats(w, digest.hexdigest()), digest.hexdigest())
            self._nodes[id(node)] = info
        return info

    def _stats(self, w: np.ndarray, digest: str) -> WeightStats:
        """analyze(w), kept in the cache by the weight's digest: a warm load reads it instead."""
        key = {"kind": "weight", "digest": digest}
        entry = self.cache.get(key) if self.cache is not None else None
        if entry is not None:
            try:
                fill = {str(k): float(v) for k, v in entry["block_fill"].items()}
                stats = WeightStats(
                    (int(entry["shape"][0]), int(entry["shape"][1])),
                    float(entry["sparsity"]),
                    entry["nm24"],
                    fill,
                )
                if (
                    stats.shape == w.shape
                    and isinstance(stats.nm24, bool)
                    and isinstance(entry["sparsity"], (int, float))
                    and 0.0 <= stats.sparsity <= 1.0
                    and set(fill) >= {_bname(b) for b in BLOCKS}
                    and all(0.0 <= v <= 1.0 for v in fill.values())
                ):
                    return stats
            except (KeyError, TypeError, ValueError, IndexError):
                pass
            log.warning(
                "zeroskip: ignoring a malformed weight entry in the tuning cache; it will be rewritten"
            )
        stats = analyze(w)
        if self.cache is not None:
            value = {"shape": list(stats.shape), "sparsity": stats.sparsity, "nm24": stats.nm24}
            self.cache.put(key, {**value, "block_fill": stats.block_fill})
        return stats

    def _key(self, node: Any, offer: Any, info: _Node, candidates: list[str]) -> dict[str, Any]:
        # The candidates, not the mode: a mode that leaves the same ones (a weight with no zeros under
        # "auto" and "off") shares the measurement, so both plans are the same.
        return {
            "kind": "op",
            "device": fingerprint(),
            "op": f"{getattr(node, 'domain', '')}::{getattr(node, 'op_type', '?')}",
            "config": repr(offer.config),
            "input": list(offer.probe_shape),
            "candidates": candidates,
            "weight": info.digest,
            "forced": self.mode if self.mode.startswith("force-") else None,
        }

    def _candidates(self, offer: Any, info: _Node) -> dict[str, Callable[[], Callable[..., Any]]]:
        """name -> builder of the runner; the dense ones first, the reference (torch) first of all."""
        out: dict[str, Callable[[], Callable[..., Any]]] = {}
        for name, fn in offer.dense:
            out[name] = lambda fn=fn: fn
        stats = info.stats
        if stats is None or self.mode == "off":
            return out
        if self.mode == "auto" and (stats.sparsity == 0.0 or stats.sparsity < sparsity_floor(self.cache)):
            return out
        want = {
            "auto": ("csr", "bsr", "nm"),
            "force-csr": ("csr",),
            "force-bsr": ("bsr",),
            "force-nm": ("nm",),
        }
        fmts: list[tuple[str, Callable[[], Any]]] = []
        w = offer.weight
        if "csr" in want[self.mode]:
            fmts.append(("csr", lambda: CSR.from_dense(w)))
        if "bsr" in want[self.mode]:
            blocks = stats.useful_blocks()
            if not blocks and self.mode == "force-bsr":
                blocks = [max(BLOCKS, key=lambda b: stats.block_fill.get(_bname(b), 0.0))]
            for b in blocks:
                fmts.append((f"bsr{_bname(b)}", lambda b=b: BSR.from_dense(w, b)))
        if "nm" in want[self.mode] and stats.nm24:
            fmts.append(("nm2:4", lambda: NM.from_dense(w, 2, 4)))
        avail = [k for k in kernels.available() if k.runnable]
        for fmt, convert in fmts:
            family = fmt[:3] if fmt.startswith("bsr") else fmt[:2] if fmt.startswith("nm") else "csr"
            for k in avail:
                if k.format != family or (family == "nm" and k.nm not in (None, (2, 4))):
                    continue
                out[f"{fmt}/{k.name}"] = self._sparse_builder(info, offer, fmt, convert, k.name)
        return out

    def _sparse_builder(
        self, info: _Node, offer: Any, fmt: str, convert: Callable[[], Any], kernel: str
    ) -> Callable[[], Callable[..., Any]]:
        def build() -> Callable[..., Any]:
            packed = info.formats.get(fmt)
            if packed is None:
                packed = info.formats[fmt] = kernels.pack(convert())
            fn = offer.bind_sparse(packed, kernel)
            if _candidate_hook is not None:
                fn = _candidate_hook(f"{fmt}/{kernel}", fn)
            return fn

        return build

    def _from_cache(
        self,
        node: Any,
        offer: Any,
        stats: WeightStats | None,
        entry: Mapping[str, Any],
        builders: Mapping[str, Any],
    ) -> tuple[str, Callable[..., Any]] | None:
        winner = entry.get("winner")
        if not isinstance(winner, str) or winner not in builders:
            log.warning("zeroskip: tuning cache entry for %s names no current candidate; re-tuning", node)
            return None
        try:
            fn = builders[winner]()
        except ZeroskipError as e:
            log.warning("zeroskip: cached choice %s for %s cannot be built (%s); re-tuning", winner, node, e)
            return None
        timings = entry.get("timings_us") if isinstance(entry.get("timings_us"), dict) else {}
        rejected = entry.get("rejected") if isinstance(entry.get("rejected"), dict) else {}
        reason = str(entry.get("reason", ""))
        self.records.append(self._record(node, offer, stats, winner, timings, rejected, reason, "cache"))
        return winner, fn

    def _tune(
        self,
        node: Any,
        offer: Any,
        stats: WeightStats | None,
        key: Mapping[str, Any],
        builders: Mapping[str, Callable[[], Callable[..., Any]]],
    ) -> tuple[str, Callable[..., Any]]:
        import torch

        gen = torch.Generator().manual_seed(0)
        x = torch.randn(tuple(offer.probe_shape), generator=gen)
        ref_name = next(iter(builders))
        ref_fn = builders[ref_name]()
        pc = time.perf_counter
        t0 = pc()
        want = ref_fn(x)
        first = {ref_name: pc() - t0}
        scale = float(want.abs().max()) if want.numel() else 0.0
        fns: dict[str, Callable[..., Any]] = {ref_name: ref_fn}
        rejected: dict[str, str] = {}
        for name, build in list(builders.items())[1:]:
            try:
                fn = build()
                t0 = pc()
                got = fn(x)
                first[name] = pc() - t0
            except (ZeroskipError, RuntimeError, ValueError, TypeError) as e:
                rejected[name] = f"error: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
                log.warning("zeroskip: %s: candidate %s rejected: %s", node, name, rejected[name])
                continue
            bad = _mismatch(got, want, scale)
            if bad:
                rejected[name] = bad
                log.warning(
                    "zeroskip: %s: candidate %s rejected by the correctness gate: %s", node, name, bad
                )
                continue
            fns[name] = fn
        calls = {n: _as_in_plan(fn) for n, fn in fns.items()}
        best_first = min(first[n] for n in fns)
        # A slow first call may be a one-off (the kernel threads' start, fresh pages): time a second
        # call before leaving a candidate out.
        for n, fn in calls.items():
            if first[n] > SKIP_FACTOR * best_first:
                t0 = pc()
                fn(x)
                first[n] = min(first[n], pc() - t0)
        best_first = min(first[n] for n in fns)
        timed = {n: f for n, f in calls.items() if first[n] <= SKIP_FACTOR * best_first or n == ref_name}
        skipped = {n: first[n] for n in fns if n not in timed}
        seconds = _measure(timed, x)
        timings = {n: round(s * 1e6, 2) for n, s in seconds.items()}
        for n, s in skipped.items():
            timings[n] = round(s * 1e6, 2)  # one call: too slow to time further
        winner, reason = self._pick(seconds, stats, rejected)
        value = {"winner": winner, "timings_us": timings, "rejected": rejected, "reason": reason}
        if self.cache is not None:
            self.cache.put(key, value)
        self.records.append(self._record(node, offer, stats, winner, timings, rejected, reason, "measured"))
        return winner, fns[winner]

    def _pick(
        self, seconds: Mapping[str, float], stats: WeightStats | None, rejected: Mapping[str, str]
    ) -> tuple[str, str]:
        dense = {n: s for n, s in seconds.items() if n.startswith("dense")}
        sparse = {n: s for n, s in seconds.items() if not n.startswith("dense")}
        best_dense = min(dense, key=dense.__getitem__)
        if self.mode.startswith("force-") and sparse:
            win = min(sparse, key=sparse.__getitem__)
            return win, f"forced {self.mode[6:]}: {_ratio(dense[best_dense], sparse[win])} dense"
        if sparse:
            best_sparse = min(sparse, key=sparse.__getitem__)
            if sparse[best_sparse] < dense[best_dense]:
                return (
                    best_sparse,
                    f"{_label(best_sparse)} {_ratio(dense[best_dense], sparse[best_sparse])} dense",
                )
            return best_dense, (
                f"dense: fastest sparse ({_label(best_sparse)}) is "
                f"{sparse[best_sparse] / dense[best_dense]:.2f}x its time"
            )
        if rejected:
            return best_dense, f"dense: every sparse candidate was rejected ({len(rejected)})"
        if stats is None:
            return best_dense, f"{best_dense} fastest of {len(dense)} dense paths"
        if self.mode == "off":
            return best_dense, "dense: sparse kernels are off"
        if self.mode == "force-nm" and not stats.nm24:
            return best_dense, "dense: weight is not 2:4"
        if stats.sparsity == 0.0:
            return best_dense, "dense: weight has no zeros"
        return (
            best_dense,
            f"dense: sparsity {stats.sparsity:.0%} below the {sparsity_floor(self.cache):.0%} floor",
        )

    def _record(
        self,
        node: Any,
        offer: Any,
        stats: WeightStats | None,
        winner: str,
        timings: Mapping[str, float],
        rejected: Mapping[str, str],
        reason: str,
        source: str,
    ) -> Record:
        return Record(
            node=getattr(node, "name", str(node)),
            op=_op_name(node),
            input_shape=tuple(int(d) for d in offer.probe_shape),
            weight_shape=stats.shape if stats else None,
            sparsity=stats.sparsity if stats else None,
            structure=stats.structure() if stats else "",
            winner=winner,
            timings_us=dict(timings),
            rejected=dict(rejected),
            reason=reason,
            source=source,
        )


def _op_name(node: Any) -> str:
    fused = getattr(node, "fused_from", None)
    op = getattr(node, "op_type", "?")
    return f"{'+'.join(fused)} -> {op}" if fused else op


def _label(name: str) -> str:
    fmt, _, kernel = name.partition("/")
    isa = kernel.rsplit("_", 1)[-1] if kernel else ""
    return f"{fmt.upper()} {isa}".strip()


def _ratio(dense_s: float, sparse_s: float) -> str:
    return f"{dense_s / sparse_s:.2f}x" if sparse_s > 0 else "inf x"


def _mismatch(got: Any, want: Any, scale: float) -> str:
    """Why `got` is not `want` within the gate's tolerance, or ''."""
    import torch

    if not isinstance(got, torch.Tensor) or got.shape != want.shape or got.dtype != want.dtype:
        shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
        return f"output {shape} where the dense path gives {tuple(want.shape)} {want.dtype}"
    diff = (got.double() - want.double()).abs()
    bound = GATE_RTOL * want.double().abs() + GATE_ATOL * scale
    bad = ~(diff <= bound)
    if bool(bad.any()):
        worst = float(diff.max()) if not bool(torch.isnan(diff).any()) else math.nan
        return f"max |error| {worst:.3g} (scale {scale:.3g}) at {int(bad.sum())} of {bad.numel()} outputs"
    return ""


# ------------------------------------------------------------------------------------------------
# The report


class Report:
    """Per tuned op and input shape: what ran and why. `str()` gives a table; `rows` the data."""

    def __init__(self, records: Iterable[Record]):
        latest: dict[tuple[str, tuple[int, ...]], Record] = {}
        for r in records:  # a shape planned again (after its plan was evicted) shows once
            latest.pop((r.node, r.input_shape), None)
            latest[(r.node, r.input_shape)] = r
        self.rows = [r.as_dict() for r in latest.values()]

    def to_json(self) -> str:
        return json.dumps(self.rows, indent=2)

    def __len__(self) -> int:
        return len(self.rows)

    def __str__(self) -> str:
        if not self.rows:
            return "no weight-bearing ops have run yet (the report fills in as shapes are planned)"
        head = ("node", "op", "weight", "sparsity", "structure", "input", "chosen", "µs", "why")
        table = []
        for r in self.rows:
            t = r["timings_us"].get(r["winner"])
            table.append(
                (
                    r["node"],
                    r["op"],
                    "x".join(map(str, r["weight_shape"])) if r["weight_shape"] else "-",
                    f"{r['sparsity']:.0%}" if r["sparsity"] is not None else "-",
                    r["structure"] or "-",
                    "x".join(map(str, r["input_shape"])),
                    r["winner"],
                    f"{t:.1f}" if isinstance(t, (int, float)) else "-",
                    r["reason"] + (" (cached)" if r["source"] == "cache" else ""),
                )
            )
        widths = [max(len(str(row[i])) for row in [head, *table]) for i in range(len(head))]
        lines = ["  ".join(str(c).ljust(w) for c, w in zip(head, widths)).rstrip()]
        lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in table]
        detail = []
        for r in self.rows:
            if len(r["timings_us"]) > 1 or r["rejected"]:
                cands = ", ".join(
                    f"{n} {us:.1f}" for n, us in sorted(r["timings_us"].items(), key=lambda i: i[1])
                )
                rej = "".join(f"; rejected {n}: {why}" for n, why in r["rejected"].items())
                detail.append(f"  {r['node']} {'x'.join(map(str, r['input_shape']))}: {cands}{rej}")
        if detail:
            lines += ["", "candidates (median µs):", *detail]
        return "\n".join(lines)
