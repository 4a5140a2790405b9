"""The command line (also `python -m zeroskip`):

    zeroskip demo                                     # a small 90%-sparse model built in memory, timed
    zeroskip bench model.onnx --batch 8 --json out.json --plot out.png
    zeroskip inspect model.onnx --shape input_ids=1,32 --shape attention_mask=1,32
    zeroskip sparsify model.onnx -o pruned.onnx --pattern 2:4 --method sparsegpt --calib data.npz

Errors are one line with what to do; --debug shows the traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from zeroskip.errors import InputError, ZeroskipError
from zeroskip.feeds import load_npz, sample_feeds

__all__ = ["main"]


def _shape_arg(text: str) -> tuple[str, list[int]]:
    name, sep, dims = text.rpartition("=")
    try:
        if not sep or not name:
            raise ValueError
        return name, [int(d) for d in dims.replace("x", ",").split(",") if d.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NAME=D1,D2,... got {text!r}") from None


def _inspect(args: argparse.Namespace) -> int:
    from zeroskip.session import load

    opts: dict[str, Any] = {"sparse": args.sparse}
    if args.no_cache:
        opts["cache"] = False
    session = load(args.model, threads=args.threads, options=opts)
    feeds = sample_feeds(session, args.batch, args.seq, dict(args.shape or []))
    session.run(feeds)
    print(f"{args.model}")
    for kind, infos in (("input", session.inputs), ("output", session.outputs)):
        for i in infos:
            dims = ", ".join(str(d) for d in i.shape) if i.shape is not None else "?"
            print(f"  {kind:<6} {i.name}: {i.dtype} [{dims}]")
    print(f"  planned for: {', '.join(f'{k} {list(v.shape)}' for k, v in feeds.items())}")
    if session.stats:
        print("  load passes: " + ", ".join(f"{k} {v}" for k, v in session.stats.items() if v))
    print()
    report = session.report()
    print(report)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            f.write(report.to_json())
        print(f"\nwrote {args.json}")
    return 0


BASELINES = ("ort", "dense", "torch")
_ENGINE = {"ort": "onnxruntime", "dense": "zeroskip-dense", "torch": "torch"}


def _ort_session(path: Any, threads: int) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads, opts.log_severity_level = threads, 1, 3
    model = path if isinstance(path, (str, bytes)) else str(path)
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


def _engines(
    model: Any,
    feeds: dict[str, np.ndarray],
    threads: int,
    baselines: Sequence[str],
    device: str,
    zs_options: Mapping[str, Any],
) -> tuple[list[Any], list[str], Any, list[str]]:
    """(engines, output names, the zeroskip session, notes): zeroskip first, then the baselines."""
    from zeroskip import benchmark
    from zeroskip.session import load

    notes: list[str] = []
    zs = load(model, device=device, threads=threads, options=dict(zs_options), sample_inputs=feeds)
    names = [o.name for o in zs.outputs]

    def runner(s: Any) -> Any:
        def run() -> list[np.ndarray]:
            out = s.run(feeds)
            return [np.asarray(out[n]) for n in names]

        return run

    engines = [benchmark.local("zeroskip", runner(zs))]
    for b in baselines:
        if b == "ort":
            try:
                sess = _ort_session(model, threads)
            except ImportError:
                notes.append("onnxruntime is not installed (pip install onnxruntime): no ort baseline")
                continue
            engines.append(benchmark.local(_ENGINE[b], lambda s=sess: s.run(names, feeds)))
        elif b == "dense":
            opts = {**zs_options, "sparse": "off"}
            engines.append(benchmark.local(_ENGINE[b], runner(load(model, threads=threads, options=opts))))
        else:
            opts = {"cache": False, "reference": True, "progress": False}
            engines.append(benchmark.local(_ENGINE[b], runner(load(model, threads=threads, options=opts))))
    return engines, names, zs, notes


def _time_engines(engines: list[Any], args: argparse.Namespace) -> tuple[dict[str, float], int]:
    """Warm up, check every engine's outputs against the reference (onnxruntime if there, else torch,
    else zeroskip), time interleaved, check again. Returns (max relative error per engine, rounds)."""
    from zeroskip import benchmark

    by = {e.name: e for e in engines}
    ref = by.get("onnxruntime") or by.get("torch") or engines[0]
    errs, rounds = benchmark.measure(
        engines,
        ref,
        args.warmup,
        budget=args.time,
        calls=args.iterations,
        min_rounds=3,
        settle=args.settle,
        seed=args.seed,
    )
    print(f"(outputs compared with {ref.name}'s)")
    return errs, rounds


def _rows(engines: list[Any], errs: Mapping[str, float], batch: int) -> list[dict[str, Any]]:
    """One summary per engine, with its speedup: that engine's p50 over zeroskip's (> 1: zeroskip is
    faster)."""
    from zeroskip import benchmark

    p50 = engines[0].pct(50)
    rows = []
    for e in engines:
        row = benchmark.summary(e, batch)
        row["speedup"] = e.pct(50) / p50
        row["max_rel_err"] = errs[e.name]
        rows.append(row)
    return rows


def _table(rows: list[dict[str, Any]], errs: Mapping[str, float]) -> str:
    head = (
        f"{'engine':<16} {'p50 ms':>9} {'p90 ms':>9} {'p99 ms':>9} {'inf/s':>9} {'calls':>6} "
        f"{'speedup':>8}  max rel err"
    )
    lines = [head]
    for r in rows:
        sp = "-" if r["engine"] == "zeroskip" else f"{r['speedup']:.2f}x"
        lines.append(
            f"{r['engine']:<16} {r['p50_ms']:>9.3f} {r['p90_ms']:>9.3f} {r['p99_ms']:>9.3f} "
            f"{r['throughput']:>9.1f} {r['calls']:>6} {sp:>8}  {errs[r['engine']]:.1e}"
        )
    return "\n".join(lines)


def _verdicts(rows: list[dict[str, Any]]) -> None:
    for r in rows[1:]:
        word = "faster" if r["speedup"] >= 1 else "slower"
        f = r["speedup"] if r["speedup"] >= 1 else 1 / r["speedup"]
        print(f"zeroskip is {f:.2f}x {word} than {r['engine']} at p50")


def _matplotlib() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise InputError("--plot needs matplotlib: pip install matplotlib (or zeroskip[plot])") from None
    return matplotlib


def _plot(engines: list[Any], path: str, title: str) -> None:
    _matplotlib().use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.8 * len(engines)))
    data = [np.asarray(e.samples) * 1e3 for e in engines]
    try:
        ax.violinplot(data, orientation="horizontal", showmedians=True, showextrema=False)
    except TypeError:  # matplotlib < 3.10
        ax.violinplot(data, vert=False, showmedians=True, showextrema=False)
    for i, d in enumerate(data, start=1):
        ax.plot(np.percentile(d, [90, 99]), [i, i], "|", color="k", markersize=12)
    ax.set_yticks(range(1, len(engines) + 1), [e.name for e in engines])
    ax.set_xscale("log")
    ax.set_xlabel("latency per call, ms (log scale; bars: median, ticks: p90, p99)")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _bench(args: argparse.Namespace) -> int:
    import json

    import torch

    from zeroskip import benchmark
    from zeroskip.session import load

    threads = args.threads or torch.get_num_threads()
    baselines = [b.strip() for b in args.baseline.split(",") if b.strip()]
    bad = sorted(set(baselines) - set(BASELINES))
    if bad:
        raise InputError(f"unknown baseline(s) {bad}; choose from {list(BASELINES)}")
    if args.plot:
        _matplotlib()  # before the timing, not after
    zs_options: dict[str, Any] = {"sparse": args.sparse, "progress": args.progress}
    if args.no_cache:
        zs_options["cache"] = False
    probe = load(args.model, threads=threads, options={"reference": True, "cache": False})
    feeds = sample_feeds(probe, args.batch, args.seq, dict(args.shape or []), seed=args.seed)
    del probe
    batch = next((v.shape[0] for v in feeds.values() if v.ndim), 1)
    engines, _, zs, notes = _engines(args.model, feeds, threads, baselines, args.device, zs_options)
    info = benchmark.machine_info(threads)
    shapes = ", ".join(f"{k} {list(v.shape)}" for k, v in feeds.items())
    print(f"{args.model} | {shapes} | {threads} threads | {info['cpu']} ({', '.join(info['isas'])})")
    for n in notes:
        print(f"note: {n}")
    errs, rounds = _time_engines(engines, args)
    rows = _rows(engines, errs, batch)
    print(_table(rows, errs))
    _verdicts(rows)
    print(
        f"({rounds} interleaved rounds; each engine's calls timed one by one; speedup = that engine's p50 / "
        "zeroskip's p50)"
    )
    wrong = [n for n, v in errs.items() if v > args.tolerance]
    if wrong:
        print(f"WRONG RESULTS: {wrong} differ from the reference by more than {args.tolerance:g}")
    if args.json:
        out = {
            "model": str(args.model),
            "inputs": {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in feeds.items()},
            "threads": threads,
            "machine": info,
            "rounds": rounds,
            "rows": rows,
            "report": zs.report().rows,
            "notes": notes,
        }
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(out, f, indent=1, default=str)
        print(f"wrote {args.json}")
    if args.plot:
        _plot(engines, args.plot, f"{args.model} | {shapes} | {threads} threads")
        print(f"wrote {args.plot}")
    return 1 if wrong else 0


def _sparsify(args: argparse.Namespace) -> int:
    import json

    import onnx

    from zeroskip.session import load
    from zeroskip.sparsify import drift, sparsify

    probe = load(args.model, threads=args.threads, options={"reference": True, "cache": False})
    if args.calib:
        calib: Any = load_npz(args.calib, probe)
        count = sum(next(iter(g.values())).shape[0] for g in calib)
        where = f"the {count} samples of {args.calib}"
    else:
        calib = sample_feeds(probe, args.calib_samples, args.seq, dict(args.shape or []), seed=args.seed)
        where = (
            f"{args.calib_samples} generated samples (random in-range inputs; give real ones with --calib)"
        )
    del probe
    ops = [o.strip() for o in args.ops.split(",") if o.strip()]
    skip = [t.strip() for t in (args.skip or "").split(",") if t.strip()]
    res = sparsify(
        args.model,
        pattern=args.pattern,
        sparsity=args.sparsity,
        method=args.method,
        ops=ops,
        skip=skip,
        calib=calib,
        damp=args.damp,
        sparse_initializers=args.sparse_initializers,
        threads=args.threads,
        progress=sys.stderr.isatty(),
    )
    print(res.table())
    onnx.save(res.model, args.output)
    report = drift(args.model, res.model, calib, threads=args.threads)
    print(f"\noutput drift vs the dense model on {where}:")
    for name, d in report.items():
        print(
            f"  {name}: relative L2 error {d['rel_l2']:.4f}, cosine similarity per sample mean "
            f"{d['cosine_mean']:.4f} min {d['cosine_min']:.4f}"
        )
    print(f"wrote {args.output} ({args.method}, {args.pattern}, {res.seconds:.1f} s)")
    if args.json:
        rows = [
            {k: getattr(r, k) for k in ("node", "op", "weight", "shape", "before", "after", "skipped")}
            for r in res.layers
        ]
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"layers": rows, "drift": report, "calibration": where}, f, indent=1)
        print(f"wrote {args.json}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    import torch

    from zeroskip import demo

    threads = args.threads or torch.get_num_threads()
    print(f"zeroskip demo: {demo.DESCRIPTION}")
    print(f"building the models in memory (90% of each weight zero), {threads} threads ...")
    rc = 0
    for name, proto, feeds in demo.models():
        print(f"\n== {name}: {', '.join(f'{k} {list(v.shape)}' for k, v in feeds.items())}")
        data = proto.SerializeToString()
        engines, _, zs, notes = _engines(data, feeds, threads, ["dense", "ort"], "cpu", {"progress": False})
        for n in notes:
            print(f"note: {n}")
        print(zs.report())
        errs, _ = _time_engines(engines, args)
        rows = _rows(engines, errs, next(iter(feeds.values())).shape[0])
        print(_table(rows, errs))
        _verdicts(rows)
        wrong = [n for n, v in errs.items() if v > args.tolerance]
        if wrong:
            print(f"WRONG RESULTS: {wrong} differ from the reference by more than {args.tolerance:g}")
            rc = 1
    return rc


def _common(sp: argparse.ArgumentParser, *, shapes: bool = True) -> None:
    if shapes:
        sp.add_argument("--batch", type=int, default=1, help="size of a symbolic first input dim (default 1)")
        sp.add_argument(
            "--seq", type=int, default=128, help="size of other symbolic input dims (default 128)"
        )
        sp.add_argument(
            "--shape", type=_shape_arg, action="append", metavar="NAME=D1,D2", help="an input's shape"
        )
    sp.add_argument("--threads", type=int, default=None, help="intra-op threads (default: all cores)")
    sp.add_argument("--debug", action="store_true", help="show tracebacks")


def _timing(sp: argparse.ArgumentParser, time_s: float) -> None:
    sp.add_argument("--warmup", type=int, default=5, help="untimed calls per engine first (default 5)")
    g = sp.add_mutually_exclusive_group()
    g.add_argument("--time", type=float, default=time_s, help=f"seconds of timed calls (default {time_s:g})")
    g.add_argument("--iterations", type=int, default=None, help="timed calls per engine (instead of --time)")
    sp.add_argument(
        "--settle",
        type=float,
        default=0.05,
        help="seconds of sleep before each engine's burst, so the previous engine's idle workers stop "
        "spinning (default 0.05)",
    )
    sp.add_argument("--seed", type=int, default=0, help="seed for generated inputs and the round order")
    sp.add_argument(
        "--tolerance", type=float, default=1e-3, help="max |diff| / max |reference| allowed (default 1e-3)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    from zeroskip import __version__
    from zeroskip.prune import parse_pattern
    from zeroskip.sparsify import METHODS, OPS
    from zeroskip.tuning import MODES

    raw = argparse.RawDescriptionHelpFormatter
    p = argparse.ArgumentParser(prog="zeroskip", description=__doc__, formatter_class=raw)
    p.add_argument("--version", action="version", version=f"zeroskip {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser(
        "demo",
        help="build a small sparse model in memory, load it, show the per-op report and the speedups",
        description="Builds a 90%-sparse MLP and a 1x1-conv block in memory (nothing is downloaded), "
        "loads them, prints zeroskip's per-op report and the latency against zeroskip's own dense plan "
        "and onnxruntime (when installed), measured interleaved in one run.",
    )
    _common(demo, shapes=False)
    _timing(demo, 2.0)

    bench = sub.add_parser(
        "bench",
        help="latency of a model: p50/p90/p99 against onnxruntime, torch and the dense plan",
        description="Times MODEL in zeroskip and each baseline, interleaved in one run, on inputs "
        "generated from the model's input specs (token ids in range of the embedding they index). "
        "Baselines: ort (onnxruntime CPU), dense (zeroskip with sparse kernels off), torch (every op "
        "on its plain torch function, no graph passes, no zeroskip kernels). Exits 1 when an engine's "
        "outputs differ from the reference (onnxruntime, else torch).",
    )
    bench.add_argument("model", help="an .onnx file")
    _common(bench)
    bench.add_argument("--device", default="cpu", help="zeroskip's device (default cpu)")
    _timing(bench, 10.0)
    bench.add_argument(
        "--baseline", default="ort,dense,torch", help="comma list of ort, dense, torch (default all)"
    )
    bench.add_argument("--sparse", choices=MODES, default="auto", help="zeroskip's kernel choice")
    bench.add_argument("--no-cache", action="store_true", help="tune again; keep nothing on disk")
    bench.add_argument("--progress", action="store_true", default=None, help="show tuning progress")
    bench.add_argument("--json", metavar="PATH", help="write the table, machine info and report as JSON")
    bench.add_argument("--plot", metavar="PNG", help="draw the latency distributions (needs matplotlib)")

    ins = sub.add_parser(
        "inspect",
        help="load a model, plan one input shape, and show per op what runs and why",
        description="Loads MODEL, plans (and tunes) one input shape and prints, per weight-bearing op, "
        "the weight's sparsity and structure, every candidate kernel's time, the one chosen and why.",
    )
    ins.add_argument("model", help="an .onnx file")
    _common(ins)
    ins.add_argument("--sparse", choices=MODES, default="auto", help="kernel choice (default auto: measured)")
    ins.add_argument("--no-cache", action="store_true", help="measure again; keep nothing on disk")
    ins.add_argument("--json", metavar="PATH", help="also write the report rows as JSON")

    spz = sub.add_parser(
        "sparsify",
        help="prune a model's weights (magnitude, Wanda or SparseGPT) and write a new .onnx",
        description="Prunes the constant weights of MatMul, Gemm and group-1 Conv nodes and writes a "
        "valid ONNX model; prints per-layer sparsity and the output drift against the dense model on "
        "the calibration inputs. wanda and sparsegpt are one-shot methods that need calibration "
        "inputs: an .npz (--calib) with one array per model input, the first dim the samples (or groups "
        "NAME.0, NAME.1, ... of other shapes, e.g. one per sequence length), or "
        "generated in-range inputs.",
    )
    spz.add_argument("model", help="an .onnx file")
    spz.add_argument("-o", "--output", required=True, help="where to write the pruned .onnx")
    spz.add_argument(
        "--pattern", default="unstructured", type=str, help="unstructured | N:M (2:4) | RxC block (4x1)"
    )
    spz.add_argument(
        "--sparsity", type=float, default=0.9, help="fraction zeroed (default 0.9; N:M ignores it)"
    )
    spz.add_argument("--method", choices=METHODS, default="magnitude", help="default magnitude")
    spz.add_argument("--ops", default=",".join(OPS), help=f"op types to prune (default {','.join(OPS)})")
    spz.add_argument("--skip", help="comma list: first, last, or shell patterns of node/weight names")
    spz.add_argument("--calib", metavar="NPZ", help="calibration inputs (default: generated)")
    spz.add_argument("--damp", type=float, default=0.1, help="SparseGPT dampening of H (default 0.1)")
    spz.add_argument(
        "--calib-samples", type=int, default=16, help="generated calibration samples (default 16)"
    )
    spz.add_argument("--seq", type=int, default=128, help="length of generated sequences (default 128)")
    spz.add_argument(
        "--shape", type=_shape_arg, action="append", metavar="NAME=D1,D2", help="generated shape"
    )
    spz.add_argument(
        "--sparse-initializers", action="store_true", help="store pruned weights as ONNX sparse_initializers"
    )
    spz.add_argument("--seed", type=int, default=0, help="seed for generated calibration inputs")
    spz.add_argument("--json", metavar="PATH", help="also write the per-layer rows and drift as JSON")
    spz.add_argument("--threads", type=int, default=None, help="intra-op threads (default: all cores)")
    spz.add_argument("--debug", action="store_true", help="show tracebacks")

    args = p.parse_args(argv)
    if args.command is None:
        p.print_help()
        return 2
    if args.command == "sparsify":
        try:
            parse_pattern(args.pattern)
        except ZeroskipError as e:
            p.error(str(e))
    run = {"demo": _demo, "bench": _bench, "inspect": _inspect, "sparsify": _sparsify}[args.command]
    try:
        return run(args)
    except (ZeroskipError, OSError) as e:
        if getattr(args, "debug", False):
            raise
        print(f"zeroskip: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
