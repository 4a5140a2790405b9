"""The command line: demo, bench, sparsify, inspect, --version; errors are one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("torch")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import zeroskip  # noqa: E402
from zeroskip import cli, demo  # noqa: E402

FAST = ["--time", "0.05", "--warmup", "1", "--settle", "0", "--threads", "1"]


def _zoo():
    from models import zoo

    return zoo


def test_version_and_help() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "zeroskip", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == f"zeroskip {zeroskip.__version__}"
    out = subprocess.run(
        [sys.executable, "-m", "zeroskip", "--help"], capture_output=True, text=True, check=True
    )
    for cmd in ("demo", "bench", "inspect", "sparsify"):
        assert cmd in out.stdout
    for cmd in ("demo", "bench", "inspect", "sparsify"):
        sub = subprocess.run(
            [sys.executable, "-m", "zeroskip", cmd, "--help"], capture_output=True, text=True, check=True
        )
        assert "--threads" in sub.stdout


def test_bench_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    zoo = _zoo()
    path, _ = zoo.export("mlp", tmp_path / "mlp.onnx", sparsity=0.9)
    out = tmp_path / "b.json"
    rc = cli.main(["bench", str(path), "--batch", "4", *FAST, "--no-cache", "--json", str(out)])
    text = capsys.readouterr().out
    assert rc == 0, text
    data = json.loads(out.read_text())
    engines = [r["engine"] for r in data["rows"]]
    assert engines[0] == "zeroskip"
    assert set(engines) >= {"zeroskip", "zeroskip-dense", "torch"}
    assert data["inputs"]["input"]["shape"] == [4, 256]
    for r in data["rows"]:
        assert 0 < r["min_ms"] <= r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"]
        assert r["calls"] >= 3
        assert r["max_rel_err"] <= 1e-3
        assert r["throughput"] == pytest.approx(4 / (r["p50_ms"] / 1e3))
    assert data["rows"][0]["speedup"] == 1.0
    for r in data["rows"][1:]:
        assert r["speedup"] == pytest.approx(r["p50_ms"] / data["rows"][0]["p50_ms"])
        assert f"than {r['engine']} at p50" in text
    assert data["machine"]["threads"] == 1
    assert data["report"], "the per-op report is in the JSON"
    assert "p99 ms" in text


def test_bench_iterations_and_transformer_inputs(tmp_path: Path) -> None:
    zoo = _zoo()
    path, _ = zoo.export("bert", tmp_path / "bert.onnx")
    out = tmp_path / "b.json"
    args = ["bench", str(path), "--seq", "16", "--iterations", "7", "--warmup", "1", "--settle", "0"]
    assert cli.main([*args, "--baseline", "dense", "--threads", "1", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert [r["engine"] for r in data["rows"]] == ["zeroskip", "zeroskip-dense"]
    assert all(r["calls"] >= 7 for r in data["rows"])
    assert data["inputs"]["input_ids"]["shape"] == [1, 16]


def test_bench_plot(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    path, _ = _zoo().export("mlp", tmp_path / "mlp.onnx")
    png = tmp_path / "p.png"
    assert cli.main(["bench", str(path), *FAST, "--baseline", "dense", "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["bench", "{missing}"], "no such file"),
        (["bench", "{mlp}", "--baseline", "ort,tensorrt"], "unknown baseline"),
        (["bench", "{mlp}", "--shape", "nope=1,2"], "unknown input"),
        (["bench", "{mlp}", "--device", "tpu"], "device 'tpu'"),
        (["inspect", "{garbage}"], "not an ONNX model"),
        (
            ["sparsify", "{mlp}", "-o", "{out}", "--method", "sparsegpt", "--calib", "{missing}"],
            "cannot read",
        ),
        (["sparsify", "{mlp}", "-o", "{out}", "--ops", "Relu"], "cannot prune"),
    ],
)
def test_errors_are_one_line(tmp_path: Path, argv: list[str], message: str) -> None:
    path, _ = _zoo().export("mlp", tmp_path / "mlp.onnx")
    (tmp_path / "garbage.onnx").write_bytes(b"\x00\x01 not a model")
    names = {
        "mlp": str(path),
        "missing": str(tmp_path / "missing.onnx"),
        "garbage": str(tmp_path / "garbage.onnx"),
        "out": str(tmp_path / "out.onnx"),
    }
    argv = [a.format(**names) for a in argv]
    r = subprocess.run([sys.executable, "-m", "zeroskip", *argv, *FAST[-2:]], capture_output=True, text=True)
    assert r.returncode == 1, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("zeroskip: error: ")
    assert message in lines[0]
    assert "Traceback" not in r.stderr
    if argv[0] == "bench" and "missing" in argv[1]:  # --debug shows the traceback (one case is enough)
        r = subprocess.run(
            [sys.executable, "-m", "zeroskip", *argv, *FAST[-2:], "--debug"], capture_output=True, text=True
        )
        assert r.returncode != 0
        assert "Traceback" in r.stderr


def test_bad_pattern_is_a_usage_error(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "zeroskip", "sparsify", "m.onnx", "-o", "x.onnx", "--pattern", "5:4"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2
    assert "N:M" in r.stderr


def test_sparsify_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    zoo = _zoo()
    path, _ = zoo.export("bert", tmp_path / "bert.onnx")
    calib = zoo.sample_inputs("bert", 8, 16, seed=3)
    np.savez(tmp_path / "calib.npz", **calib)
    out, js = tmp_path / "b24.onnx", tmp_path / "s.json"
    argv = ["sparsify", str(path), "-o", str(out), "--pattern", "2:4", "--method", "sparsegpt"]
    rc = cli.main([*argv, "--calib", str(tmp_path / "calib.npz"), "--skip", "last", "--json", str(js)])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "output drift vs the dense model on the 8 samples of" in text
    assert "--skip last" in text
    data = json.loads(js.read_text())
    pruned = [r for r in data["layers"] if r["skipped"] is None]
    assert pruned
    assert all(r["after"] == pytest.approx(0.5, abs=0.01) for r in pruned)
    d = data["drift"]["last_hidden_state"]
    assert 0 < d["rel_l2"] < 1
    assert 0 < d["cosine_min"] <= d["cosine_mean"] <= 1
    onnx.checker.check_model(str(out), full_check=True)
    # the written model runs, and as onnxruntime runs it
    ort = pytest.importorskip("onnxruntime")
    feeds = zoo.sample_inputs("bert", 2, 16)
    want = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, feeds)
    got = zeroskip.load(str(out), options={"cache": False}).run(feeds)
    for w, g in zip(want, got.values()):
        np.testing.assert_allclose(g, w, rtol=1e-3, atol=1e-4 * float(np.abs(w).max()))
    # generated calibration inputs (no --calib), magnitude, sparse initializers
    out2 = tmp_path / "m90.onnx"
    rc = cli.main(
        [
            "sparsify",
            str(path),
            "-o",
            str(out2),
            "--calib-samples",
            "4",
            "--seq",
            "8",
            "--sparse-initializers",
        ]
    )
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "4 generated samples" in text
    assert len(onnx.load(str(out2)).graph.sparse_initializer) == len(pruned) + 1


def test_npz_by_name_position_and_groups_and_mismatch(tmp_path: Path) -> None:
    from zeroskip.errors import InputError
    from zeroskip.feeds import load_npz

    zoo = _zoo()
    path, _ = zoo.export("bert", tmp_path / "bert.onnx")
    s = zeroskip.load(path, options={"reference": True, "cache": False})
    f = zoo.sample_inputs("bert", 3, 5)
    np.savez(tmp_path / "pos.npz", *f.values())
    (got,) = load_npz(tmp_path / "pos.npz", s)
    for k in f:
        np.testing.assert_array_equal(got[k], f[k])
    np.savez(tmp_path / "name.npz", **f)
    (got,) = load_npz(tmp_path / "name.npz", s)
    assert list(got) == list(f)
    # groups of other shapes: NAME.0, NAME.1, ...
    g = zoo.sample_inputs("bert", 2, 9)
    np.savez(
        tmp_path / "groups.npz", **{f"{k}.0": v for k, v in f.items()}, **{f"{k}.1": v for k, v in g.items()}
    )
    got = load_npz(tmp_path / "groups.npz", s)
    assert [x["input_ids"].shape for x in got] == [(3, 5), (2, 9)]
    np.savez(
        tmp_path / "partial.npz", **{f"{k}.0": v for k, v in f.items()}, **{"input_ids.1": g["input_ids"]}
    )
    with pytest.raises(InputError, match=r"input_ids\.1"):
        load_npz(tmp_path / "partial.npz", s)
    np.savez(tmp_path / "bad.npz", x=np.zeros((3, 5)))
    with pytest.raises(InputError, match="input_ids"):
        load_npz(tmp_path / "bad.npz", s)
    np.savez(tmp_path / "ragged.npz", **{**f, "input_ids": f["input_ids"][:2]})
    with pytest.raises(InputError, match="first"):
        load_npz(tmp_path / "ragged.npz", s)
    np.savez(tmp_path / "float.npz", **{**f, "input_ids": f["input_ids"].astype(np.float32)})
    with pytest.raises(InputError, match="int64"):
        load_npz(tmp_path / "float.npz", s)


def test_demo_models_are_sparse_and_valid() -> None:
    from onnx import numpy_helper

    for _, proto, feeds in demo.models():
        onnx.checker.check_model(proto, full_check=True)
        weights = [numpy_helper.to_array(t) for t in proto.graph.initializer if len(t.dims) >= 2]
        assert weights
        for w in weights:
            assert (w == 0).mean() == pytest.approx(0.9, abs=0.01)
        s = zeroskip.load(proto, options={"reference": True, "cache": False})
        assert set(s.run(feeds)) == {"output"}


def test_demo_runs(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["demo", *FAST]) == 0
    text = capsys.readouterr().out
    assert text.count("zeroskip is ") >= 2
    assert "candidates (median" in text
    assert "WRONG" not in text
