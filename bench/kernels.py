"""SpMM kernel benchmark: every runnable zeroskip kernel against torch dense, torch CSR and numpy.

    python bench/kernels.py                  # full run (a few minutes on 2 cores)
    python bench/kernels.py --quick          # smoke run over a few cases (< 1 minute)
    python bench/kernels.py --json out.json  # also write every row as JSON
    python bench/kernels.py --only ops       # only the Linear / Conv2d section

y = A @ x with A the pruned M x K float32 weight and x a dense K x N float32 row-major matrix. All
engines of a case are timed in the same process, interleaved round by round (A, B, C, A, B, C, ...)
(numpy apart, after them: its OpenBLAS thread pool spins and would stall the others),
so machine noise hits them alike and the speedup ratios compare like with like; each engine's time
is the median over rounds. Every engine writes into a preallocated output, so allocation is not timed.

The ops section times the graph runner's entry points, kernels.linear (y = x @ W.T + b, x: M x K) and
kernels.conv2d (NCHW), with the default (fastest-ISA) kernel against torch.nn.functional.linear /
conv2d on the same pruned weight, interleaved the same way (torch allocates its output there, as in
a model).

On a busy machine, OpenMP threads that spin at the end of a parallel call (libgomp's default, shared
by torch and zeroskip) can hold the core the other thread needs, costing a whole scheduler period per
call; OMP_WAIT_POLICY=passive (set before starting python) makes them sleep instead.
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import gc
import json
import math
import os
import platform
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from zeroskip import kernels, prune
from zeroskip.formats import BSR, CSR, NM

# torch warns once that sparse CSR is "beta"; it is noise in the table.
warnings.filterwarnings("ignore", message=".*Sparse CSR tensor support is in beta.*")

# (label, M, K, is_conv). Conv rows are ResNet-50 1x1 convolutions: out_channels x in_channels,
# with N = H * W spatial positions (7x7, 14x14, 28x28) instead of the generic batch sizes.
SHAPES: list[tuple[str, int, int, bool]] = [
    ("4096x4096", 4096, 4096, False),
    ("bert 768x3072", 768, 3072, False),
    ("bert 3072x768", 3072, 768, False),
    ("minilm 384x1536", 384, 1536, False),
    ("minilm 1536x384", 1536, 384, False),
    ("r50 256x64", 256, 64, True),
    ("r50 64x256", 64, 256, True),
    ("r50 512x128", 512, 128, True),
    ("r50 2048x512", 2048, 512, True),
]
# Format keys: unstructured sparsity in percent, the 2:4 pattern, 4x1 blocks at 90%.
FORMATS = ["50", "80", "90", "95", "2:4", "4x1"]
# --quick: (shape, format keys, Ns or None for the shape's defaults); covers both targets' cases.
QUICK = [
    ("4096x4096", ["90", "2:4"], None),
    ("bert 768x3072", ["90", "4x1"], [1, 128]),
    ("r50 512x128", ["90"], [196]),
]
REL_TOL = 1e-3

# Ops section: (label, format key, M) for Linear on a 2048x2048 weight; (label, format key, Cin, Cout,
# kernel size, H = W, pad) for Conv2d, batch 1, stride 1.
LINEAR_OPS = [("linear 2048x2048", fmt, m) for fmt in ("90", "4x1") for m in (1, 8, 64)]
CONV_OPS = [
    (f"conv {c}->{co} {k}x{k} {h}x{h}", fmt, c, co, k, h, pad)
    for c, co, k, h, pad in ((64, 64, 3, 56, 1), (256, 256, 1, 14, 0))
    for fmt in ("90", "4x1")
]
QUICK_LINEAR_OPS = [("linear 2048x2048", "90", 1), ("linear 2048x2048", "90", 64)]
QUICK_CONV_OPS = [("conv 64->64 3x3 56x56", "90", 64, 64, 3, 56, 1)]


@dataclass
class Engine:
    name: str
    kind: str  # "zeroskip" | "torch dense" | "torch csr" | "numpy"
    fn: Callable[[], Any]  # one y = A @ x, returns y (numpy array or torch tensor)
    weight_bytes: int  # bytes of the weight as this engine stores it
    est: float = 0.0  # calibrated seconds per call
    inner: int = 1  # calls per timed sample
    samples: list[float] = field(default_factory=list)
    rel_err: float = 0.0

    @property
    def median(self) -> float:
        return float(np.median(self.samples))

    @property
    def best(self) -> float:
        return float(np.min(self.samples))

    @property
    def spread(self) -> float:
        """Interquartile range relative to the median: how noisy this engine's samples were."""
        q1, q3 = np.percentile(self.samples, [25, 75])
        return float((q3 - q1) / self.median) if self.median > 0 else 0.0


def _per_call(fn: Callable[[], Any], at_least: float = 0.002) -> float:
    """Seconds per call of an already warmed-up fn, from enough calls to fill `at_least` seconds."""
    n = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        dt = time.perf_counter() - t0
        if dt >= at_least or n >= 1 << 16:
            return dt / n
        n = min(1 << 16, max(2 * n, math.ceil(n * at_least / max(dt, 1e-9) * 1.2)))


def _rel_err(y: Any, ref: np.ndarray) -> float:
    """max |y - ref| / max |ref|: a per-element relative error blows up at the many near-zero outputs."""
    y = y.numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    return float(np.max(np.abs(y.astype(np.float64) - ref))) / max(scale, 1e-30) if ref.size else 0.0


def measure(engines: list[Engine], budget: float, min_rounds: int, max_rounds: int) -> int:
    """Interleaved rounds; returns the number of rounds. Assumes every engine is calibrated."""
    # Samples of ~2 ms keep perf_counter and loop overhead negligible and still give many rounds.
    for e in engines:
        e.inner = max(1, min(10_000, round(0.002 / max(e.est, 1e-9))))
    per_round = sum(e.inner * e.est for e in engines)
    rounds = max(min_rounds, min(max_rounds, int(budget / max(per_round, 1e-9))))
    gc_was_on = gc.isenabled()
    gc.disable()  # a collection inside one sample would be charged to whichever engine ran it
    try:
        for r in range(rounds):
            # Rotate the start so no engine always runs right after the same neighbour (cache state).
            for j in range(len(engines)):
                e = engines[(r + j) % len(engines)]
                fn, inner = e.fn, e.inner
                t0 = time.perf_counter()
                for _ in range(inner):
                    fn()
                e.samples.append((time.perf_counter() - t0) / inner)
    finally:
        if gc_was_on:
            gc.enable()
    return rounds


def make_weight(fmt: str, w: np.ndarray) -> tuple[np.ndarray, CSR | BSR | NM]:
    """The pruned dense weight and its zeroskip format for a format key."""
    if fmt == "2:4":
        wp = prune.nm_mask(w, 2, 4)
        return wp, NM.from_dense(wp, 2, 4)
    if fmt == "4x1":
        wp = prune.block_magnitude(w, 0.9, (4, 1))
        return wp, BSR.from_dense(wp, block=(4, 1))
    wp = prune.magnitude(w, int(fmt) / 100)
    return wp, CSR.from_dense(wp)


def fmt_label(fmt: str) -> str:
    return {"2:4": "nm 2:4", "4x1": "bsr4x1 90%"}.get(fmt, f"csr {fmt}%")


def pick_torch_csr(wc: torch.Tensor, xt: torch.Tensor, yt: torch.Tensor) -> tuple[str, Callable[[], Any]]:
    """The fastest way torch offers to multiply a CSR tensor, judged on this case (min of 2 tries)."""
    cands: dict[str, Callable[[], Any]] = {
        "mm out=": lambda: torch.mm(wc, xt, out=yt),
        "mm": lambda: torch.mm(wc, xt),
        "sparse.mm": lambda: torch.sparse.mm(wc, xt),
    }
    for fn in cands.values():
        fn()  # warm-up
    best = {name: min(_per_call(fn), _per_call(fn)) for name, fn in cands.items()}
    name = min(best, key=best.__getitem__)
    return name, cands[name]


def run_case(
    label: str,
    fmt: str,
    wp: np.ndarray,
    a: CSR | BSR | NM,
    wc: torch.Tensor,
    n: int,
    zs_kernels: list[kernels.KernelInfo],
    args: argparse.Namespace,
    rng: np.random.Generator,
) -> list[dict[str, Any]]:
    m, k = wp.shape
    x = rng.standard_normal((k, n), dtype=np.float32)
    xt, wt = torch.from_numpy(x), torch.from_numpy(wp)
    outs: dict[str, np.ndarray] = {}

    def out(name: str) -> np.ndarray:
        outs[name] = np.empty((m, n), dtype=np.float32)
        return outs[name]

    engines: list[Engine] = []
    yd = torch.from_numpy(out("torch dense"))
    engines.append(Engine("torch dense", "torch dense", lambda: torch.mm(wt, xt, out=yd), wp.nbytes))
    yc = torch.from_numpy(out("torch csr"))
    csr_how, csr_fn = pick_torch_csr(wc, xt, yc)
    csr_bytes = sum(t.nbytes for t in (wc.values(), wc.col_indices(), wc.crow_indices()))
    engines.append(Engine(f"torch csr [{csr_how}]", "torch csr", csr_fn, csr_bytes))
    yn = out("numpy")
    engines.append(Engine("numpy", "numpy", lambda: np.matmul(wp, x, out=yn), wp.nbytes))
    packed_bytes = kernels.pack(a).nbytes
    for ki in zs_kernels:
        yz = out(ki.name)
        fn = functools.partial(kernels.spmm, a, x, yz, kernel=ki.name)
        engines.append(Engine(ki.name, "zeroskip", fn, packed_bytes))

    # Warm-up (thread pools, caches, lazy init), then the reference and a first correctness check.
    results = {e.name: e.fn() for e in engines}
    ref = outs["torch dense"].astype(np.float64)
    for e in engines:
        e.rel_err = _rel_err(results[e.name], ref)
        e.est = _per_call(e.fn)
    # numpy's OpenBLAS runs its own pthread pool, whose threads busy-wait after each call; interleaved
    # with the OpenMP pool of torch and zeroskip they hold the cores that pool needs, and every 2-thread
    # call behind them stalls for a scheduler period (4096^2 at 90%, N=1: zeroskip 5.7x torch dense with
    # numpy timed apart, 0.8x with numpy interleaved). So numpy is timed on its own, after the others.
    rounds = measure([e for e in engines if e.kind != "numpy"], args.budget, args.min_rounds, args.max_rounds)
    measure([e for e in engines if e.kind == "numpy"], args.budget / 4, args.min_rounds, args.max_rounds)
    # Check again on the last timed call's output: catches results that go wrong only sometimes.
    for e in engines:
        e.rel_err = max(e.rel_err, _rel_err(e.fn(), ref))

    nnz = int(np.count_nonzero(wp))
    t_dense = engines[0].median
    t_csr = engines[1].median
    io_bytes = x.nbytes + m * n * 4
    rows = []
    for e in engines:
        t = e.median
        rows.append(
            {
                "shape": label,
                "M": m,
                "K": k,
                "N": n,
                "format": fmt_label(fmt),
                "format_key": fmt,
                "nnz": nnz,
                "density": nnz / (m * k),
                "engine": e.name,
                "kind": e.kind,
                "time_us": t * 1e6,
                "min_us": e.best * 1e6,
                "spread": e.spread,
                "rounds": rounds,
                "inner": e.inner,
                "gflops": 2 * nnz * n / t / 1e9,
                "eff_gflops": 2 * m * k * n / t / 1e9,
                "vs_torch_dense": t_dense / t,
                "vs_torch_csr": t_csr / t,
                "gbps": (e.weight_bytes + io_bytes) / t / 1e9 if n == 1 else None,
                "weight_bytes": e.weight_bytes,
                "rel_err": e.rel_err,
                "bad": e.rel_err > REL_TOL,
            }
        )
    return rows


HEAD = (
    f"{'shape':<16} {'format':<10} {'N':>4}  {'engine':<27} {'time us':>10} {'min us':>10} {'+-%':>4} "
    f"{'GF/s':>7} {'effGF/s':>8} {'xdense':>7} {'xcsr':>6} {'GB/s':>6} {'relerr':>8}"
)


def print_row(r: dict[str, Any]) -> None:
    gbps = f"{r['gbps']:6.1f}" if r["gbps"] is not None else f"{'':6}"
    flag = "  WRONG" if r["bad"] else ""
    mark = "*" if r.get("best") else " "
    print(
        f"{r['shape']:<16} {r['format']:<10} {r['N']:>4} {mark}{r['engine']:<27} {r['time_us']:>10.1f} "
        f"{r['min_us']:>10.1f} {100 * r['spread']:>4.0f} {r['gflops']:>7.2f} {r['eff_gflops']:>8.2f} "
        f"{r['vs_torch_dense']:>7.2f} {r['vs_torch_csr']:>6.2f} {gbps} {r['rel_err']:>8.1e}{flag}",
        flush=True,
    )


def run_op_case(
    label: str,
    fmt: str,
    batch: int,
    engines: list[Engine],
    macs: int,
    args: argparse.Namespace,
) -> list[dict[str, Any]]:
    """Times torch dense (engines[0]) against zeroskip for one Linear / Conv2d case."""
    results = [e.fn() for e in engines]  # warm-up; torch dense is the reference
    ref = (results[0].numpy() if isinstance(results[0], torch.Tensor) else results[0]).astype(np.float64)
    for e in engines:
        e.est = _per_call(e.fn)
    rounds = measure(engines, args.budget, args.min_rounds, args.max_rounds)
    for e in engines:
        e.rel_err = max(_rel_err(e.fn(), ref), 0.0)
    t_dense = engines[0].median
    return [
        {
            "op": label,
            "format": fmt_label(fmt),
            "batch": batch,
            "engine": e.name,
            "kind": e.kind,
            "time_us": e.median * 1e6,
            "min_us": e.best * 1e6,
            "spread": e.spread,
            "rounds": rounds,
            "eff_gflops": 2 * macs / e.median / 1e9,
            "vs_torch_dense": t_dense / e.median,
            "weight_bytes": e.weight_bytes,
            "rel_err": e.rel_err,
            "bad": e.rel_err > REL_TOL,
        }
        for e in engines
    ]


def linear_case(label: str, fmt: str, m: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    n_out, k = 2048, 2048
    w = np.random.default_rng([args.seed, n_out, k]).standard_normal((n_out, k), dtype=np.float32)
    wp, a = make_weight(fmt, w)
    rng = np.random.default_rng([args.seed, m, k])
    x = rng.standard_normal((m, k), dtype=np.float32)
    b = rng.standard_normal(n_out, dtype=np.float32)
    y = np.empty((m, n_out), dtype=np.float32)
    xt, wt, bt = torch.from_numpy(x), torch.from_numpy(wp), torch.from_numpy(b)
    name = f"zeroskip {kernels.default_kernel(a)}"
    engines = [
        Engine("torch F.linear", "torch dense", lambda: torch.nn.functional.linear(xt, wt, bt), wp.nbytes),
        Engine(name, "zeroskip", functools.partial(kernels.linear, a, x, y, bias=b), kernels.pack(a).nbytes),
    ]
    return run_op_case(label, fmt, m, engines, m * n_out * k, args)


def conv_case(
    label: str, fmt: str, c: int, co: int, ks: int, h: int, pad: int, args: argparse.Namespace
) -> list[dict[str, Any]]:
    w = np.random.default_rng([args.seed, co, c, ks]).standard_normal((co, c * ks * ks), dtype=np.float32)
    wp, a = make_weight(fmt, w)
    rng = np.random.default_rng([args.seed, c, h])
    x = rng.standard_normal((1, c, h, h), dtype=np.float32)
    b = rng.standard_normal(co, dtype=np.float32)
    y = np.empty((1, co, h, h), dtype=np.float32)  # stride 1, "same" padding
    xt, bt = torch.from_numpy(x), torch.from_numpy(b)
    wt = torch.from_numpy(wp.reshape(co, c, ks, ks))
    name = f"zeroskip {kernels.default_kernel(a)}"
    pads = (pad, pad, pad, pad)
    engines = [
        Engine(
            "torch F.conv2d", "torch dense", lambda: torch.nn.functional.conv2d(xt, wt, bt, 1, pad), wp.nbytes
        ),
        Engine(
            name,
            "zeroskip",
            functools.partial(kernels.conv2d, a, x, (ks, ks), (1, 1), pads, (1, 1), y, bias=b),
            kernels.pack(a).nbytes,
        ),
    ]
    return run_op_case(label, fmt, 1, engines, co * c * ks * ks * h * h, args)


OP_HEAD = (
    f"{'op':<24} {'format':<10} {'M':>4}  {'engine':<36} {'time us':>10} {'min us':>10} {'+-%':>4} "
    f"{'effGF/s':>8} {'xdense':>7} {'relerr':>8}"
)


def run_ops(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Linear and Conv2d with sparse weights against torch dense; prints and returns the rows."""
    print("\nops: kernels.linear / kernels.conv2d (default kernel) vs torch F.linear / F.conv2d, with bias")
    print(f"(M: batch rows for Linear, images for Conv; effGF/s: dense-equivalent)\n{OP_HEAD}")
    rows: list[dict[str, Any]] = []
    cases: list[Callable[[], list[dict[str, Any]]]] = [
        functools.partial(linear_case, *c, args) for c in (QUICK_LINEAR_OPS if args.quick else LINEAR_OPS)
    ]
    cases += [functools.partial(conv_case, *c, args) for c in (QUICK_CONV_OPS if args.quick else CONV_OPS)]
    for case in cases:
        for r in case():
            flag = "  WRONG" if r["bad"] else ""
            print(
                f"{r['op']:<24} {r['format']:<10} {r['batch']:>4}  {r['engine']:<36} {r['time_us']:>10.1f} "
                f"{r['min_us']:>10.1f} {100 * r['spread']:>4.0f} {r['eff_gflops']:>8.2f} "
                f"{r['vs_torch_dense']:>7.2f} {r['rel_err']:>8.1e}{flag}",
                flush=True,
            )
            rows.append(r)
        gc.collect()
    return rows


def plan(args: argparse.Namespace) -> list[tuple[str, int, int, list[str], list[int]]]:
    """(label, M, K, format keys, Ns) per shape, after --quick / --shapes / --formats."""
    ns = [int(v) for v in args.n.split(",") if v.strip()]
    conv_ns = [int(v) for v in args.conv_n.split(",") if v.strip()]
    want_fmt = [f.strip() for f in args.formats.split(",")] if args.formats else FORMATS
    bad = [f for f in want_fmt if f not in FORMATS]
    if bad:
        sys.exit(f"unknown format key(s) {bad}; choose from {FORMATS}")
    want_shape = [s.strip() for s in args.shapes.split(",")] if args.shapes else None
    out = []
    if args.quick:
        by_label = {s[0]: s for s in SHAPES}
        for label, fmts, qns in QUICK:
            _, m, k, conv = by_label[label]
            fmts = [f for f in fmts if f in want_fmt]
            if fmts and (not want_shape or any(s in label for s in want_shape)):
                out.append((label, m, k, fmts, qns or (conv_ns if conv else ns)))
        return out
    for label, m, k, conv in SHAPES:
        if want_shape and not any(s in label for s in want_shape):
            continue
        out.append((label, m, k, want_fmt, conv_ns if conv else ns))
    return out


def targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's targets, each on the fastest zeroskip kernel of its case."""
    best: dict[tuple[str, str, int], dict[str, Any]] = {}
    for r in rows:
        if r["kind"] == "zeroskip" and not r["bad"]:
            key = (r["shape"], r["format_key"], r["N"])
            if key not in best or r["time_us"] < best[key]["time_us"]:
                best[key] = r
    ns_90 = sorted({r["N"] for r in rows if r["shape"] == "4096x4096" and r["format_key"] == "90"})
    ns_90 = ns_90 or [1, 8, 128]
    specs = [("a", "90", 1, "vs_torch_dense", 6.0), ("a", "90", 128, "vs_torch_dense", 5.0)]
    specs += [("a", "90", n, "vs_torch_csr", 2.0) for n in ns_90]
    specs.append(("b", "2:4", 1, "vs_torch_dense", 1.3))
    out = []
    for tag, fmt, n, metric, goal in specs:
        r = best.get(("4096x4096", fmt, n))
        out.append(
            {
                "target": tag,
                "case": f"4096x4096 {fmt_label(fmt)} N={n}",
                "metric": metric,
                "goal": goal,
                "measured": r[metric] if r else None,
                "kernel": r["engine"] if r else None,
                "status": ("PASS" if r[metric] >= goal else "SHORT") if r else "NOT RUN",
            }
        )
    return out


ENV_VARS = (
    "OPENBLAS_CORETYPE",
    "OPENBLAS_NUM_THREADS",
    "OMP_NUM_THREADS",
    "OMP_WAIT_POLICY",
    "GOMP_SPINCOUNT",
    "ZEROSKIP_NUM_THREADS",
)


def _loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def _openblas_info() -> dict[str, Any]:
    """Core type and threads numpy's OpenBLAS runs with, asked from the loaded library (best effort).

    The core type is what OPENBLAS_CORETYPE overrides; a wrong guess on a virtual CPU can cost numpy a
    lot, so it is worth seeing next to the numbers.
    """
    try:
        with open("/proc/self/maps") as f:
            path = next(p for p in (ln.split()[-1] for ln in f) if "openblas" in os.path.basename(p))
        lib = ctypes.CDLL(path)
    except (OSError, StopIteration, IndexError):
        return {}
    for prefix in ("scipy_openblas", "openblas"):
        for suffix in ("64_", "_", ""):
            core = getattr(lib, f"{prefix}_get_corename{suffix}", None)
            nthreads = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
            if core is not None and nthreads is not None:
                core.restype, nthreads.restype = ctypes.c_char_p, ctypes.c_int
                return {"core": core().decode(), "threads": int(nthreads())}
    return {}


def machine_info(threads: int) -> dict[str, Any]:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        numpy_blas = f"{blas.get('name')} {blas.get('version')}"
    except Exception:  # numpy < 1.26 has no mode="dicts"; the name is only informative
        numpy_blas = "unknown"
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "threads": threads,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numpy_blas": numpy_blas,
        "openblas": _openblas_info(),
        "torch": torch.__version__,
        "torch_mkl": torch.backends.mkl.is_available(),
        # numpy's OpenBLAS picks its kernels and threads from OPENBLAS_*, not from --threads; the OpenMP
        # wait policy decides how a 2-thread barrier behaves when other processes hold the cores.
        "env": {v: os.environ.get(v) for v in ENV_VARS},
        "loadavg": _loadavg(),
        "zeroskip_kernels": [k.name for k in kernels.available() if k.runnable],
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a few cases only, shorter timing (smoke run)")
    p.add_argument("--n", default="1,8,128", help="N (columns of x), generic shapes (default 1,8,128)")
    p.add_argument("--conv-n", default="49,196,784", help="N = H*W, ResNet-50 1x1 convs (default 49,196,784)")
    p.add_argument("--shapes", help="comma list of substrings of shape labels to keep, e.g. 4096,bert")
    p.add_argument("--formats", help=f"comma list of format keys to keep, from {','.join(FORMATS)}")
    p.add_argument("--kernels", help="only zeroskip kernels whose name contains this substring")
    p.add_argument("--threads", type=int, help="threads for zeroskip and torch (default: zeroskip's default)")
    p.add_argument("--budget", type=float, help="seconds of timed rounds per case (default 0.3, quick 0.1)")
    p.add_argument("--min-rounds", type=int, help="rounds per case at least (default 5, quick 3)")
    p.add_argument("--max-rounds", type=int, default=200, help="rounds per case at most (default 200)")
    p.add_argument("--seed", type=int, default=0, help="seed for weights and inputs")
    p.add_argument("--json", metavar="PATH", help="also write machine info, every row and the targets here")
    p.add_argument(
        "--only", choices=("spmm", "ops"), help="only the SpMM table, or only the Linear / Conv2d section"
    )
    args = p.parse_args(argv)
    if args.budget is None:
        args.budget = 0.1 if args.quick else 0.3
    if args.min_rounds is None:
        args.min_rounds = 3 if args.quick else 5
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads is not None:
        kernels.set_num_threads(args.threads)
    threads = kernels.num_threads()
    torch.set_num_threads(threads)  # same thread count on both sides, or the ratios mean little
    info = machine_info(threads)
    print(
        f"cpu: {info['cpu']} ({info['cores']} cores) | threads: zeroskip {threads}, "
        f"torch {info['torch_threads']} | torch {info['torch']} (mkl {info['torch_mkl']}) | "
        f"numpy {info['numpy']} ({info['numpy_blas']}, core {info['openblas'].get('core', '?')}, "
        f"{info['openblas'].get('threads', '?')} threads)"
    )
    env = " ".join(f"{k}={'unset' if v is None else v}" for k, v in info["env"].items())
    print(f"env: {env} | load average at start: {info['loadavg']}")
    load = info["loadavg"]
    if load and info["cores"] and load[0] > 0.5 * info["cores"]:
        # With every core asked for, one descheduled thread stalls a whole parallel call for a scheduler
        # tick or more (multiples of 4 ms on the 2-core VM this was written on); +-% shows how noisy.
        print(
            "warning: the machine is busy with other work; multi-threaded times will be noisy "
            "(OMP_WAIT_POLICY=passive makes OpenMP threads sleep instead of spin, which helps here)"
        )
    print(
        "time: median over interleaved rounds (min: fastest round); +-%: IQR/median; GF/s: 2*nnz*N/t; "
        "effGF/s: 2*M*K*N/t;\nxdense/xcsr: torch dense/CSR time over this time; GB/s (N=1): weight bytes "
        "as stored + x + y, over t;\nrelerr: max|y - y_torch_dense| / max|y_torch_dense|; "
        "*: fastest zeroskip kernel of the case"
    )
    zs_all = [k for k in kernels.available() if k.runnable and (not args.kernels or args.kernels in k.name)]
    rows: list[dict[str, Any]] = []
    t_start = time.perf_counter()
    if args.only != "ops":
        print(HEAD)
    for label, m, k, fmts, ns in plan(args) if args.only != "ops" else []:
        # One seeded standard-normal weight per shape; every format prunes the same one.
        w = np.random.default_rng([args.seed, m, k]).standard_normal((m, k), dtype=np.float32)
        for fmt in fmts:
            wp, a = make_weight(fmt, w)
            zs = [ki for ki in zs_all if ki.supports(a)]
            wc = torch.from_numpy(wp).to_sparse_csr()
            for n in ns:
                rng = np.random.default_rng([args.seed, m, k, n])
                case = run_case(label, fmt, wp, a, wc, n, zs, args, rng)
                zrows = [r for r in case if r["kind"] == "zeroskip" and not r["bad"]]
                if zrows:
                    min(zrows, key=lambda r: r["time_us"])["best"] = True
                for r in case:
                    print_row(r)
                print()
                rows.extend(case)
            del wp, a, wc
            gc.collect()  # large weights: free this format's copies before pruning the next one
    op_rows = run_ops(args) if args.only != "spmm" else []
    elapsed = time.perf_counter() - t_start

    bad = [r for r in rows if r["bad"]]
    bad_ops = [r for r in op_rows if r["bad"]]
    if bad or bad_ops:
        print(f"WRONG RESULTS (relerr > {REL_TOL:g}):")
        for r in bad:
            print(f"  {r['shape']} {r['format']} N={r['N']} {r['engine']}: relerr {r['rel_err']:.2e}")
        for r in bad_ops:
            print(f"  {r['op']} {r['format']} M={r['batch']} {r['engine']}: relerr {r['rel_err']:.2e}")
    slow = [r for r in rows if r.get("best") and r["vs_torch_dense"] < 1.0]
    if slow:
        print(f"cases where the fastest zeroskip kernel is slower than torch dense: {len(slow)}")
        for r in sorted(slow, key=lambda r: r["vs_torch_dense"])[:12]:
            print(f"  {r['shape']} {r['format']} N={r['N']}: {r['engine']} {r['vs_torch_dense']:.2f}x")

    tg = targets(rows) if rows else []
    if tg:
        print("\ntargets (fastest zeroskip kernel per case, ratios from the same interleaved run):")
    for t in tg:
        meas = f"{t['measured']:.2f}x" if t["measured"] is not None else "-"
        line = f"  ({t['target']}) {t['case']:<32} {t['metric']:<15} >= {t['goal']:.1f}x: {meas:>7}  "
        print((line + f"{t['status']:<7} {t['kernel'] or ''}").rstrip())
    info["loadavg_end"] = _loadavg()
    print(f"\n{len(rows) + len(op_rows)} rows in {elapsed:.0f} s; load average at end: {info['loadavg_end']}")

    if args.json:
        with open(args.json, "w") as f:
            out = {"machine": info, "args": vars(args), "rows": rows, "op_rows": op_rows, "targets": tg}
            json.dump(out, f, indent=1)
        print(f"wrote {args.json}")
    return 1 if bad or bad_ops else 0


if __name__ == "__main__":
    sys.exit(main())
