"""The command line: `zeroskip inspect MODEL` (also `python -m zeroskip`).

    zeroskip inspect model.onnx                       # plan batch 1 (seq 128), print what runs where
    zeroskip inspect model.onnx --batch 8 --seq 64 --sparse off --json report.json
    zeroskip inspect model.onnx --shape input_ids=1,32 --shape attention_mask=1,32

Errors are one line with what to do; --debug shows the traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from zeroskip.errors import InputError, ZeroskipError

__all__ = ["main", "sample_feeds"]


def _vocab_sizes(session: Any) -> dict[str, int]:
    """Graph input name -> rows of the constant table it indexes through a Gather (token ids)."""
    sizes: dict[str, int] = {}
    names = {id(v): v.name for v in session.graph.inputs}
    for n in session.graph.nodes:
        if (
            n.op_type == "Gather"
            and len(n.inputs) > 1
            and n.inputs[0] is not None
            and n.inputs[1] is not None
        ):
            data, idx = n.inputs
            if id(idx) in names and data.is_const and data.shape:
                sizes[names[id(idx)]] = min(sizes.get(names[id(idx)], 1 << 62), int(data.shape[0]))
    return sizes


def sample_feeds(
    session: Any,
    batch: int = 1,
    seq: int = 128,
    shapes: Mapping[str, Sequence[int]] | None = None,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Inputs for `session` from its input specs: a symbolic first dim is `batch`, other symbolic dims
    `seq` (or the shape given in `shapes`); token ids in range of the embedding they index, masks all
    ones, other integers 0/1, floats uniform in [-1, 1)."""
    rng = np.random.default_rng(seed)
    vocab = _vocab_sizes(session)
    shapes = dict(shapes or {})
    unknown = sorted(set(shapes) - {i.name for i in session.inputs})
    if unknown:
        raise InputError(
            f"--shape names unknown input(s) {unknown}; the model takes {[i.name for i in session.inputs]}"
        )
    feeds = {}
    for info in session.inputs:
        if info.dtype is None or info.shape is None:
            raise InputError(f"input '{info.name}' has no declared dtype/shape; give it with --shape")
        if info.name in shapes:
            shape = tuple(int(d) for d in shapes[info.name])
        else:
            shape = tuple(
                d if isinstance(d, int) else (batch if i == 0 else seq) for i, d in enumerate(info.shape)
            )
        dt = info.dtype
        if dt.kind == "f" or dt.name == "bfloat16":
            feeds[info.name] = rng.uniform(-1, 1, size=shape).astype(dt)
        elif dt.kind == "b":
            feeds[info.name] = np.ones(shape, dtype=dt)
        elif info.name in vocab:
            feeds[info.name] = rng.integers(0, vocab[info.name], size=shape).astype(dt)
        elif "mask" in info.name.lower():
            feeds[info.name] = np.ones(shape, dtype=dt)
        else:
            feeds[info.name] = rng.integers(0, 2, size=shape).astype(dt)
    return feeds


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


def main(argv: Sequence[str] | None = None) -> int:
    from zeroskip import __version__
    from zeroskip.tuning import MODES

    p = argparse.ArgumentParser(prog="zeroskip", description="zeroskip: a sparse inference runtime.")
    p.add_argument("--version", action="version", version=f"zeroskip {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    ins = sub.add_parser(
        "inspect",
        help="load a model, plan one input shape, and show per op what runs and why",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ins.add_argument("model", help="an .onnx file")
    ins.add_argument("--batch", type=int, default=1, help="size of a symbolic first input dim (default 1)")
    ins.add_argument("--seq", type=int, default=128, help="size of other symbolic input dims (default 128)")
    ins.add_argument(
        "--shape", type=_shape_arg, action="append", metavar="NAME=D1,D2", help="an input's shape"
    )
    ins.add_argument("--threads", type=int, default=None, help="intra-op threads (default: all cores)")
    ins.add_argument("--sparse", choices=MODES, default="auto", help="kernel choice (default auto: measured)")
    ins.add_argument("--no-cache", action="store_true", help="measure again; keep nothing on disk")
    ins.add_argument("--json", metavar="PATH", help="also write the report rows as JSON")
    ins.add_argument("--debug", action="store_true", help="show tracebacks")
    args = p.parse_args(argv)
    if args.command is None:
        p.print_help()
        return 2
    try:
        return _inspect(args)
    except (ZeroskipError, OSError) as e:
        if getattr(args, "debug", False):
            raise
        print(f"zeroskip: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
