"""A DeepSparse engine in its own process, driven over stdin/stdout by bench/sparse.py.

DeepSparse 1.8 pins old onnx and numpy, so it lives in its own virtual environment; bench/sparse.py
starts this file with that environment's Python. One JSON request per line, one JSON reply per line:

    {"op": "load", "model": PATH, "inputs": NPZ, "threads": T}  -> {"ok": true, "load_s": ...}
    {"op": "run", "calls": N}                                    -> {"ok": true, "seconds": [...]}
    {"op": "outputs"}                                            -> {"ok": true, "npz": PATH}
    {"op": "quit"}

The model file is copied first: compile_model rewrites the file it is given. Input shapes are fixed
from the inputs (DeepSparse only accelerates static shapes).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time

os.environ.setdefault("NM_DISABLE_ANALYTICS", "1")


def main() -> int:
    import numpy as np
    from deepsparse import compile_model

    engine = None
    feeds: list = []
    tmp = tempfile.mkdtemp(prefix="zs-deepsparse-")
    out = sys.stdout
    sys.stdout = sys.stderr  # the engine's own prints must not mix with replies
    try:
        for line in sys.stdin:
            req = json.loads(line)
            try:
                if req["op"] == "load":
                    copy = os.path.join(tmp, "model.onnx")
                    shutil.copy(req["model"], copy)
                    data = np.load(req["inputs"])
                    feeds = [data[k] for k in data.files]
                    t0 = time.perf_counter()
                    engine = compile_model(
                        copy,
                        batch_size=int(feeds[0].shape[0]),
                        num_cores=int(req["threads"]),
                        input_shapes=[list(f.shape) for f in feeds],
                    )
                    reply = {"ok": True, "load_s": time.perf_counter() - t0}
                elif req["op"] == "run":
                    secs = []
                    for _ in range(int(req["calls"])):
                        t0 = time.perf_counter()
                        engine(feeds)
                        secs.append(time.perf_counter() - t0)
                    reply = {"ok": True, "seconds": secs}
                elif req["op"] == "outputs":
                    path = os.path.join(tmp, "outputs.npz")
                    np.savez(path, *engine(feeds))
                    reply = {"ok": True, "npz": path}
                elif req["op"] == "quit":
                    break
                else:
                    reply = {"ok": False, "error": f"unknown op {req['op']!r}"}
            except Exception as e:  # reported to the driver, which skips DeepSparse for the case
                reply = {"ok": False, "error": f"{type(e).__name__}: {e}"}
            out.write(json.dumps(reply) + "\n")
            out.flush()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
