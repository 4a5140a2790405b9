"""Whole-model latency: zeroskip against onnxruntime and torch eager on the model zoo (models/zoo.py).

    python bench/models.py                   # every model at batch 1 and 8 (seq 128 for the transformers)
    python bench/models.py --quick           # smoke run: mlp, cnn, bert, few iterations (< 1 minute)
    python bench/models.py --models bert,gpt2 --batch 1 --threads 1 --json out.json

Each model is exported once (seeded random weights) and run by three engines with the same thread count:
zeroskip (`zeroskip.load(path, threads=T)`), onnxruntime's CPU provider (intra-op threads T, inter-op 1,
default graph optimizations) and the torch module itself (eager, `torch.set_num_threads(T)`, under
`torch.inference_mode()`). After a warm-up, the engines of a case are interleaved round by round, the
starting engine rotated each round, so machine noise hits them alike; a round runs each engine for a
burst of about 20 ms (one call at least) and every call is timed on its own. p50 / p90 are per-call
latency percentiles; zs/ort is zeroskip's p50 over onnxruntime's (below 1: zeroskip is faster).
zeroskip's outputs are checked against onnxruntime's before and after timing (relerr: max |diff| over
max |onnxruntime|, worst output).

On a busy machine, threads that spin at the end of a parallel call (libgomp's default for torch and
zeroskip, onnxruntime's own pool alike) can hold the core another thread needs; OMP_WAIT_POLICY=passive
makes the OpenMP ones sleep instead, and --no-ort-spinning onnxruntime's (which costs it some latency
between ops). The environment and load average are printed with the results.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnxruntime as ort
import torch
import zeroskip
from zeroskip import benchmark

ROOT = Path(__file__).resolve().parents[1]
ENGINES = ("zeroskip", "onnxruntime", "torch")
QUICK_MODELS = ["mlp", "cnn", "bert"]
REL_TOL = 1e-3


def load_zoo() -> Any:
    """models/zoo.py, by path: this file is itself named models.py, so `import models` would find it."""
    name = "_zeroskip_models_zoo"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "models" / "zoo.py")
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {ROOT / 'models' / 'zoo.py'}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


zoo = load_zoo()


def make_engines(
    name: str, path: str, feeds: dict[str, np.ndarray], threads: int, spinning: bool
) -> list[benchmark.Engine]:
    zs = zeroskip.load(path, threads=threads)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    if not spinning:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    ref = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in ref.get_outputs()]

    def run_zeroskip() -> list[np.ndarray]:
        out = zs.run(feeds)
        return [out[n] for n in names]

    model = zoo.build(name)
    tfeeds = [torch.from_numpy(v) for v in feeds.values()]

    def run_torch() -> list[np.ndarray]:
        with torch.inference_mode():
            out = model(*tfeeds)
        return [t.numpy() for t in (out if isinstance(out, tuple) else (out,))]

    return [
        benchmark.local("zeroskip", run_zeroskip),
        benchmark.local("onnxruntime", lambda: ref.run(None, feeds)),
        benchmark.local("torch", run_torch),
    ]


def run_case(
    name: str, path: str, batch: int, seq: int | None, args: argparse.Namespace
) -> list[dict[str, Any]]:
    feeds = zoo.sample_inputs(name, batch, seq, seed=args.seed)
    t0 = time.perf_counter()
    engines = make_engines(name, path, feeds, args.threads, not args.no_ort_spinning)
    load_s = time.perf_counter() - t0  # zeroskip's load dominates: it plans and picks kernels
    errs, rounds = benchmark.measure(
        engines,
        engines[1],  # onnxruntime
        args.warmup,
        budget=args.budget,
        min_rounds=args.min_rounds,
        max_rounds=args.max_rounds,
        settle=args.settle,
        max_burst=100,
    )

    p50 = {e.name: e.pct(50) for e in engines}
    rows = []
    for e in engines:
        rows.append(
            {
                "model": name,
                "batch": batch,
                "seq": seq,
                "engine": e.name,
                "p50_ms": p50[e.name] * 1e3,
                "p90_ms": e.pct(90) * 1e3,
                "min_ms": min(e.samples) * 1e3,
                "calls": len(e.samples),
                "rounds": rounds,
                "vs_ort": p50[e.name] / p50["onnxruntime"],  # p50 over onnxruntime's p50
                "rel_err": errs[e.name],
                "bad": errs[e.name] > REL_TOL,
                "load_s": load_s if e.name == "zeroskip" else None,
            }
        )
    return rows


def _fmt_ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}" if v < 1 else f"{v:.2f}" if v < 100 else f"{v:.1f}"


HEAD = (
    f"{'model':<13} {'batch':>5} {'seq':>4}  {'zs p50':>8} {'zs p90':>8}  {'ort p50':>8} {'ort p90':>8}  "
    f"{'tch p50':>8} {'tch p90':>8}  {'zs/ort':>6} {'zs/torch':>8} {'relerr':>8} {'load s':>6}"
)


def print_case(rows: list[dict[str, Any]]) -> None:
    by = {r["engine"]: r for r in rows}
    zs, rt, tc = by["zeroskip"], by["onnxruntime"], by["torch"]
    flag = "  WRONG" if zs["bad"] else ""
    seq = "-" if zs["seq"] is None else str(zs["seq"])
    times = "  ".join(f"{_fmt_ms(r['p50_ms']):>8} {_fmt_ms(r['p90_ms']):>8}" for r in (zs, rt, tc))
    print(
        f"{zs['model']:<13} {zs['batch']:>5} {seq:>4}  {times}  {zs['vs_ort']:>6.2f} "
        f"{zs['p50_ms'] / tc['p50_ms']:>8.2f} {zs['rel_err']:>8.1e} {zs['load_s']:>6.2f}{flag}",
        flush=True,
    )


def _csv(text: str | None, cast: Callable[[str], Any]) -> list[Any] | None:
    return [cast(v.strip()) for v in text.split(",") if v.strip()] if text else None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help=f"{','.join(QUICK_MODELS)} only, short timing")
    p.add_argument("--models", help=f"comma list from {','.join(zoo.NAMES)} (default all; quick: a few)")
    p.add_argument("--batch", default="1,8", help="comma list of batch sizes (default 1,8)")
    p.add_argument("--seq", type=int, default=128, help="sequence length for the transformers (default 128)")
    p.add_argument("--threads", type=int, default=2, help="threads for every engine (default 2)")
    p.add_argument("--budget", type=float, help="seconds of timed rounds per case (default 3, quick 0.3)")
    p.add_argument("--warmup", type=int, help="untimed calls per engine before timing (default 5, quick 2)")
    p.add_argument("--min-rounds", type=int, help="rounds per case at least (default 10, quick 3)")
    p.add_argument("--max-rounds", type=int, default=1000, help="rounds per case at most (default 1000)")
    p.add_argument(
        "--model-dir", help="keep the exported .onnx files here and reuse them (default: a temp dir)"
    )
    p.add_argument(
        "--no-ort-spinning",
        action="store_true",
        help="onnxruntime's idle workers sleep instead of spinning (session.intra_op.allow_spinning=0)",
    )
    p.add_argument(
        "--settle",
        type=float,
        default=0.1,
        help="seconds to sleep before each engine's burst so the previous engine's workers stop spinning "
        "(onnxruntime's spin for 20-100 ms after a run; default 0.1)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed for the inputs")
    p.add_argument("--json", metavar="PATH", help="also write machine info and every row here")
    args = p.parse_args(argv)
    args.models = _csv(args.models, str) or (QUICK_MODELS if args.quick else list(zoo.NAMES))
    unknown = [m for m in args.models if m not in zoo.MODELS]
    if unknown:
        p.error(f"unknown model(s) {unknown}; choose from {zoo.NAMES}")
    args.batch = _csv(args.batch, int)
    if args.budget is None:
        args.budget = 0.3 if args.quick else 3.0
    if args.warmup is None:
        args.warmup = 2 if args.quick else 5
    if args.min_rounds is None:
        args.min_rounds = 3 if args.quick else 10
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    info = benchmark.machine_info(args.threads)
    print(
        f"cpu: {info['cpu']} ({info['cores']} cores) | threads: {args.threads} per engine | torch "
        f"{info['torch']} | onnxruntime {info['onnxruntime']} | zeroskip {info['zeroskip']}"
    )
    env = " ".join(f"{k}={'unset' if v is None else v}" for k, v in info["env"].items())
    print(f"env: {env} | load average at start: {info['loadavg']}")
    load = info["loadavg"]
    if load and info["cores"] and load[0] > 0.5 * info["cores"]:
        print("warning: the machine is busy with other work; multi-threaded times will be noisy")
    print(
        "ms per call (p50 / p90 over interleaved rounds); zs/ort, zs/torch: zeroskip's p50 over theirs "
        "(< 1: zeroskip faster);\nrelerr: zeroskip vs onnxruntime, max|diff| / max|ort|; load s: "
        "seconds to load the model into all three engines (mostly zeroskip's planning)"
    )
    print(HEAD)

    rows: list[dict[str, Any]] = []
    failures: list[str] = []
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.model_dir or tmp)
        for name in args.models:
            path = folder / f"{name}.onnx"
            if not (args.model_dir and path.exists()):
                zoo.export(name, path)
            seq = args.seq if zoo.MODELS[name].is_transformer else None
            for batch in args.batch:
                try:
                    case = run_case(name, str(path), batch, seq, args)
                except Exception as exc:  # report and go on with the other models
                    failures.append(f"{name} batch={batch}: {type(exc).__name__}: {exc}")
                    print(f"{name:<13} {batch:>5} {seq or '-':>4}  FAILED: {type(exc).__name__}: {exc}")
                    traceback.print_exc(limit=3)
                    continue
                print_case(case)
                rows.extend(case)
                gc.collect()
    elapsed = time.perf_counter() - t_start

    bad = [r for r in rows if r["bad"]]
    if bad:
        print(f"WRONG RESULTS (relerr > {REL_TOL:g}):")
        for r in bad:
            print(f"  {r['model']} batch={r['batch']} {r['engine']}: relerr {r['rel_err']:.2e}")
    if failures:
        print("FAILED:")
        for f in failures:
            print(f"  {f}")
    info["loadavg_end"] = benchmark.loadavg()
    print(
        f"\n{len(rows) // len(ENGINES)} cases in {elapsed:.0f} s; load average at end: {info['loadavg_end']}"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "args": vars(args), "rows": rows, "failures": failures}, f, indent=1)
        print(f"wrote {args.json}")
    return 1 if bad or failures else 0


if __name__ == "__main__":
    sys.exit(main())
