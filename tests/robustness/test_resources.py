"""Resources: memory stays flat over many runs and many loads; two processes loading one model with one
fresh tuning cache both succeed and leave valid entries. Each runs in a subprocess of its own, so its
RSS is its own and a crash fails the test instead of pytest."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("onnx")

ROOT = Path(__file__).resolve().parents[2]

_MODEL = """
import os, numpy as np
from onnx import TensorProto, helper, numpy_helper
from zeroskip import prune
rng = np.random.default_rng(0)
w1 = prune.magnitude(rng.standard_normal((256, 128)).astype(np.float32), 0.9)
w2 = rng.standard_normal((64, 256)).astype(np.float32)
inits = [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2"),
         numpy_helper.from_array(np.zeros(256, np.float32), "b1")]
nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], transB=1), helper.make_node("Relu", ["h"], ["r"]),
         helper.make_node("Gemm", ["r", "w2"], ["y"], transB=1)]
g = helper.make_graph(nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 128])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 64])], inits)
model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
x = rng.standard_normal((4, 128)).astype(np.float32)

def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
"""


def _run(code: str, timeout: int = 300, **env: str) -> str:
    import os

    r = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_MODEL) + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, **env},
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads RSS from /proc")
def test_ten_thousand_runs_do_not_grow_memory() -> None:
    out = _run(
        """
        import zeroskip
        s = zeroskip.load(model, threads=1, options={"cache": False})
        want = s.run({"x": x})["y"]
        for _ in range(1000):
            s.run({"x": x})
        before = rss_mb()
        for i in range(10000):
            y = s.run({"x": x})["y"]
        after = rss_mb()
        assert np.array_equal(y, want)
        print(before, after)
        """
    )
    before, after = map(float, out.split())
    print(f"RSS {before:.1f} -> {after:.1f} MiB over 10,000 runs")
    assert after - before < 4.0, f"RSS grew {after - before:.1f} MiB over 10,000 runs"


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads RSS from /proc")
def test_loading_and_dropping_returns_memory() -> None:
    out = _run(
        """
        import gc, zeroskip
        def cycle():
            s = zeroskip.load(model, threads=1, options={"cache": False})
            s.run({"x": x})
            del s
            gc.collect()
        for _ in range(10):
            cycle()
        before = rss_mb()
        for _ in range(100):
            cycle()
        print(before, rss_mb())
        """
    )
    before, after = map(float, out.split())
    print(f"RSS {before:.1f} -> {after:.1f} MiB over 100 load/drop cycles")
    assert after - before < 8.0, f"RSS grew {after - before:.1f} MiB over 100 load/drop cycles"


def test_two_processes_share_one_fresh_cache(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    code = """
        import json, sys, zeroskip
        s = zeroskip.load(model, threads=1, options={"cache": sys.argv[1] if len(sys.argv) > 1 else True})
        y = s.run({"x": x})["y"]
        print(json.dumps({"y": float(np.abs(y).sum()), "sources": [r["source"] for r in s.report().rows]}))
    """
    import os

    env = {**os.environ, "ZEROSKIP_CACHE_DIR": str(cache)}
    prog = textwrap.dedent(_MODEL) + textwrap.dedent(code)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", prog],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=env,
        )
        for _ in range(2)
    ]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
        results.append(json.loads(out))
    assert results[0]["y"] == results[1]["y"]
    entries = list(cache.rglob("*.json"))
    assert entries
    for e in entries:
        json.loads(e.read_text())  # every entry whole: written to a temp file, then renamed
    assert not [p for p in cache.rglob("*") if p.is_file() and p.suffix != ".json"], "temp files left"
    third = json.loads(_run(code, ZEROSKIP_CACHE_DIR=str(cache)))
    assert third["y"] == results[0]["y"]
    assert third["sources"]
    assert all(s != "measured" for s in third["sources"]), third
