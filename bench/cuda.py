"""CUDA kernel benchmark: zeroskip's 2:4 sparse tensor-core GEMM and CSR SpMM/SpMV against torch.

    python bench/cuda.py                  # full run
    python bench/cuda.py --quick          # a few cases
    python bench/cuda.py --json out.json  # also write every row as JSON

Needs a CUDA GPU, a CUDA build of zeroskip and a CUDA build of torch. Without them it prints why and
exits with code 0 (nothing to measure is not a failure); it exits 1 if a zeroskip kernel's output
differs from torch's dense result by more than the tolerance, 2 on bad arguments.

All ops are y = x @ W.T (torch.nn.functional.linear without bias), W the M x K weight, x (N, K).
2:4 section: float16, W pruned 2:4; zeroskip.cuda.gemm_sp24 against torch dense F.linear and, when it
works on this machine, torch.sparse.to_sparse_semi_structured. CSR section: W at 90% unstructured
sparsity, N <= 16, zeroskip.cuda.spmm_csr against dense F.linear; the achieved GB/s counts the bytes
each engine must read and write once (weight as it stores it, x, y).

Timing: CUDA events around `inner` back-to-back calls on the current stream; engines are interleaved
round by round (A, B, C, A, B, C, ...) so clock and thermal drift hit them alike; each engine's time
is the median over rounds. Ratios are torch's time over zeroskip's (> 1: zeroskip is faster).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

SP24_SHAPES = [(4096, 4096), (4096, 11008), (11008, 4096)]
SP24_NS = [1, 16, 128, 1024, 4096]
CSR_SHAPES = [(4096, 4096), (4096, 11008), (11008, 4096)]
CSR_NS = [1, 4, 16]
QUICK = {"sp24": ([(4096, 4096)], [1, 128]), "csr": ([(4096, 4096)], [1, 16])}
# fp16 output rounding plus fp32 accumulation over K of O(1) terms, relative to max |y|.
REL_TOL = 2e-2


@dataclass
class Engine:
    name: str
    fn: Callable[[], Any]
    nbytes: int  # bytes read and written once per call
    inner: int = 1
    samples: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return float(np.median(self.samples))


def _time_once(torch: Any, e: Engine) -> float:
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(e.inner):
        e.fn()
    stop.record()
    stop.synchronize()
    return start.elapsed_time(stop) / 1e3 / e.inner


def measure(torch: Any, engines: list[Engine], rounds: int) -> None:
    for e in engines:  # warm up, then size `inner` so one sample lasts about a millisecond
        for _ in range(3):
            e.fn()
        t = _time_once(torch, e)
        e.inner = int(min(1000, max(1, 1e-3 / max(t, 1e-7))))
    for _ in range(rounds):
        for e in engines:
            e.samples.append(_time_once(torch, e))


def _rel_err(torch: Any, y: Any, ref: Any) -> float:
    scale = float(ref.abs().max()) or 1.0
    return float((y.float() - ref.float()).abs().max()) / scale


def sp24_case(torch: Any, cuda: Any, prune: Any, m: int, k: int, n: int, rounds: int) -> dict[str, Any]:
    import torch.nn.functional as F

    gen = torch.Generator().manual_seed(m * 7 + k * 3 + n)
    w = prune.nm_mask(torch.randn(m, k, generator=gen).numpy(), 2, 4).astype(np.float16)
    packed = cuda.pack_sp24(w, "float16")
    wd = torch.from_numpy(w).cuda()
    x = torch.randn(n, k, generator=gen).half().cuda()
    y = torch.empty(n, m, dtype=torch.float16, device="cuda")
    packed.to_device(x.device)
    io = (n * k + n * m) * 2
    engines = [
        Engine(
            "zeroskip 2:4",
            lambda: cuda.gemm_sp24(packed, x, out=y),
            packed.values.nbytes + packed.meta.nbytes + io,
        ),
        Engine("torch dense", lambda: F.linear(x, wd), wd.numel() * 2 + io),
    ]
    note = ""
    try:
        from torch.sparse import to_sparse_semi_structured

        ws = to_sparse_semi_structured(wd)
        ys = F.linear(x, ws)
        torch.cuda.synchronize()
        if _rel_err(torch, ys, F.linear(x, wd)) > REL_TOL:
            raise RuntimeError("its result differs from dense")
        engines.append(Engine("torch semi-structured", lambda: F.linear(x, ws), wd.numel() + io))
    except Exception as e:  # any backend failure means "not available here", reported in the row
        note = f"torch semi-structured unavailable: {type(e).__name__}: {str(e).splitlines()[0][:80]}"
    err = _rel_err(torch, cuda.gemm_sp24(packed, x), F.linear(x, wd))
    measure(torch, engines, rounds)
    return _row("2:4 fp16", m, k, n, engines, err, note)


def csr_case(torch: Any, cuda: Any, m: int, k: int, n: int, rounds: int) -> dict[str, Any]:
    import torch.nn.functional as F

    gen = torch.Generator().manual_seed(m * 5 + k + n)
    w = torch.randn(m, k, generator=gen)
    w[torch.rand(m, k, generator=gen) < 0.9] = 0.0
    w = w.half().numpy()
    packed = cuda.pack_csr(w, "float16")
    wd = torch.from_numpy(w).cuda()
    x = torch.randn(n, k, generator=gen).half().cuda()
    y = torch.empty(n, m, dtype=torch.float16, device="cuda")
    packed.to_device(x.device)
    io = (n * k + n * m) * 2
    stored = sum(a.nbytes for a in (packed.values, packed.indices, packed.row_start, packed.row_end))
    engines = [
        Engine(
            "zeroskip csr", lambda: cuda.spmm_csr(packed, x, out=y), stored + packed.row_order.nbytes + io
        ),
        Engine("torch dense", lambda: F.linear(x, wd), wd.numel() * 2 + io),
    ]
    err = _rel_err(torch, cuda.spmm_csr(packed, x), F.linear(x, wd))
    measure(torch, engines, rounds)
    return _row("csr 90% fp16", m, k, n, engines, err, "")


def _row(op: str, m: int, k: int, n: int, engines: list[Engine], err: float, note: str) -> dict[str, Any]:
    z = engines[0]
    return {
        "op": op,
        "m": m,
        "k": k,
        "n": n,
        "rel_err": err,
        "note": note,
        "engines": {
            e.name: {
                "median_us": e.median * 1e6,
                "gb_s": e.nbytes / e.median / 1e9,
                "dense_tflop_s": 2 * m * n * k / e.median / 1e12,
                "vs_zeroskip": e.median / z.median,
            }
            for e in engines
        },
    }


def _print(row: dict[str, Any]) -> None:
    head = f"{row['op']:<13} {row['m']:>5}x{row['k']:<5} N={row['n']:<5}"
    parts = [
        f"{name}: {e['median_us']:9.1f} us {e['gb_s']:7.1f} GB/s {e['dense_tflop_s']:6.1f} TF/s"
        + ("" if name.startswith("zeroskip") else f" (x{e['vs_zeroskip']:.2f})")
        for name, e in row["engines"].items()
    ]
    print(head, " | ".join(parts), f"| err {row['rel_err']:.1e}", row["note"], flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a few cases only")
    ap.add_argument("--rounds", type=int, default=15, help="timed samples per engine (median reported)")
    ap.add_argument("--json", help="write every row to this file")
    args = ap.parse_args(argv)
    if args.rounds < 1:
        ap.error("--rounds must be >= 1")

    from zeroskip import cuda, prune

    if not cuda.compiled():
        print("bench/cuda.py: zeroskip was built without CUDA (no nvcc at build time); nothing to measure")
        return 0
    if not cuda.is_available():
        print("bench/cuda.py: no CUDA GPU found (zeroskip.cuda.is_available() is False); nothing to measure")
        return 0
    import torch

    if not torch.cuda.is_available():
        print(f"bench/cuda.py: this torch ({torch.__version__}) has no CUDA; nothing to measure")
        return 0

    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}, rounds {args.rounds}")
    sp24_shapes, sp24_ns = QUICK["sp24"] if args.quick else (SP24_SHAPES, SP24_NS)
    csr_shapes, csr_ns = QUICK["csr"] if args.quick else (CSR_SHAPES, CSR_NS)
    rows = []
    for m, k in sp24_shapes:
        for n in sp24_ns:
            rows.append(sp24_case(torch, cuda, prune, m, k, n, args.rounds))
            _print(rows[-1])
    for m, k in csr_shapes:
        for n in csr_ns:
            rows.append(csr_case(torch, cuda, m, k, n, args.rounds))
            _print(rows[-1])
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(), "rows": rows}, f, indent=1)
    bad = [r for r in rows if not r["rel_err"] <= REL_TOL]
    for r in bad:
        print(f"MISMATCH: {r['op']} {r['m']}x{r['k']} N={r['n']}: max error {r['rel_err']:.2e} of max |y|")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
