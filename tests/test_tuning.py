"""Measured sparse-vs-dense scheduling (zeroskip.tuning): weight analysis, the choice per op, the
correctness gate, the on-disk cache, the report, and pruned models against onnxruntime."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import zeroskip  # noqa: E402
from conftest import MODEL_TOLERANCE  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from zeroskip import prune, tuning  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _zoo() -> Any:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from test_models import zoo

    return zoo


def linear_model(w: np.ndarray, relu: bool = True, batch: str | int = "batch") -> bytes:
    """y = relu(x @ w.T + b) as ONNX MatMul + Add (+ Relu), the weight stored K x N as torch exports it."""
    n, k = w.shape
    b = np.linspace(-0.5, 0.5, n, dtype=np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["xw"], name="fc/MatMul"),
        helper.make_node("Add", ["xw", "b"], ["y0" if relu else "y"], name="fc/Add"),
    ]
    if relu:
        nodes.append(helper.make_node("Relu", ["y0"], ["y"], name="fc/Relu"))
    g = helper.make_graph(
        nodes,
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, n])],
        [numpy_helper.from_array(np.ascontiguousarray(w.T), "W"), numpy_helper.from_array(b, "b")],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def _weight(n: int, k: int, sparsity: float, seed: int = 0) -> np.ndarray:
    w = np.random.default_rng(seed).standard_normal((n, k)).astype(np.float32)
    return prune.magnitude(w, sparsity) if sparsity else w


def _load(model: Any, tmp_path: Path, **options: Any) -> Any:
    # One thread: a 2-thread kernel whose second thread is descheduled by other work on a 2-core
    # machine stalls for a scheduler slice (~8 ms), which would make the timing-based choices flaky.
    return zeroskip.load(
        model, threads=1, options={"cache": str(tmp_path / "cache"), "progress": False, **options}
    )


# ------------------------------------------------------------------------------------------------
# Weight analysis


def test_analyze_unstructured_nm_and_blocks() -> None:
    w = _weight(64, 128, 0.9)
    s = tuning.analyze(w)
    assert s.shape == (64, 128)
    assert s.sparsity == pytest.approx(0.9, abs=1e-3)
    assert not s.nm24
    assert s.useful_blocks() == []
    assert s.structure() == "unstructured"

    nm = prune.nm_mask(_weight(64, 128, 0.0), 2, 4)
    s = tuning.analyze(nm)
    assert s.nm24
    assert s.sparsity == pytest.approx(0.5)
    assert "2:4" in s.structure()

    blk = prune.block_magnitude(_weight(64, 128, 0.0), 0.8, (4, 1))
    s = tuning.analyze(blk)
    assert s.block_fill["4x1"] == pytest.approx(1.0)
    assert (4, 1) in s.useful_blocks()
    assert s.block_fill["16x1"] < 1.0
    assert "4x1 blocks 100% full" in s.structure()

    dense = _weight(8, 12, 0.0)
    assert tuning.analyze(dense).sparsity == 0.0
    assert tuning.analyze(dense).structure() == "dense"
    # Rows and columns that are not multiples of the block: padded, not miscounted.
    odd = np.zeros((5, 7), np.float32)
    odd[4, 6] = 1.0
    s = tuning.analyze(odd)
    assert s.block_fill["4x1"] == pytest.approx(1 / 4)
    assert s.block_fill["1x4"] == pytest.approx(1 / 4)
    assert not s.nm24  # K = 7 is not a multiple of 4


# ------------------------------------------------------------------------------------------------
# Choices


def _rows(sess: Any) -> list[dict[str, Any]]:
    return sess.report().rows


def test_picks_sparse_for_95_percent_and_dense_for_0(tmp_path: Path) -> None:
    x = np.random.default_rng(1).standard_normal((1, 1024)).astype(np.float32)
    w95 = _weight(1024, 1024, 0.95)
    s = _load(linear_model(w95), tmp_path)
    y = s.run({"x": x})["y"]
    np.testing.assert_allclose(
        y, np.maximum(x @ w95.T + np.linspace(-0.5, 0.5, 1024), 0), rtol=1e-4, atol=1e-4
    )
    (row,) = _rows(s)
    assert row["sparsity"] == pytest.approx(0.95, abs=1e-3)
    assert not row["winner"].startswith("dense"), str(s.report())
    assert "dense/torch" in row["timings_us"]
    assert any(n.startswith("csr/") for n in row["timings_us"])
    assert "dense" in row["reason"]  # "CSR avx2 6.1x dense"

    w0 = _weight(1024, 1024, 0.0)
    s = _load(linear_model(w0), tmp_path)
    s.run({"x": x})
    (row,) = _rows(s)
    assert row["winner"].startswith("dense")
    assert row["sparsity"] == 0.0
    assert not any(not n.startswith("dense") for n in row["timings_us"])  # no sparse candidate at all
    assert "no zeros" in row["reason"]


def test_sparse_off_and_forced_formats(tmp_path: Path) -> None:
    w = prune.block_magnitude(prune.nm_mask(_weight(64, 256, 0.0), 2, 4), 0.5, (4, 1))
    model = linear_model(w, relu=False)
    x = np.random.default_rng(2).standard_normal((3, 256)).astype(np.float32)
    want = x @ w.T + np.linspace(-0.5, 0.5, 64, dtype=np.float32)
    for mode, prefix in [
        ("off", "dense"),
        ("force-csr", "csr/"),
        ("force-bsr", "bsr"),
        ("force-nm", "nm2:4/"),
    ]:
        s = _load(model, tmp_path, sparse=mode)
        np.testing.assert_allclose(s.run({"x": x})["y"], want, rtol=1e-4, atol=1e-4, err_msg=mode)
        (row,) = _rows(s)
        assert row["winner"].startswith(prefix), (mode, row)
        if mode == "off":
            assert all(n.startswith("dense") for n in row["timings_us"])
    with pytest.raises(zeroskip.InputError, match="sparse"):
        _load(model, tmp_path, sparse="fastest")
    with pytest.raises(zeroskip.InputError, match="cache"):
        zeroskip.load(model, options={"cache": 3})


def test_force_nm_on_a_weight_that_is_not_2_4_stays_dense(tmp_path: Path) -> None:
    s = _load(linear_model(_weight(32, 64, 0.9)), tmp_path, sparse="force-nm")
    s.run({"x": np.ones((2, 64), np.float32)})
    (row,) = _rows(s)
    assert row["winner"].startswith("dense")
    assert "not 2:4" in row["reason"]


def test_sparsity_below_the_floor_is_not_timed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tuning, "sparsity_floor", lambda cache=None: 0.5)
    s = _load(linear_model(_weight(128, 128, 0.3)), tmp_path)
    s.run({"x": np.ones((1, 128), np.float32)})
    (row,) = _rows(s)
    assert row["winner"].startswith("dense")
    assert all(n.startswith("dense") for n in row["timings_us"])
    assert "below the 50% floor" in row["reason"]


def test_floor_is_measured_once_and_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tuning, "_floors", {})
    cache = tuning.TuningCache(tmp_path)
    floor = tuning.sparsity_floor(cache)
    assert 0.0 <= floor <= 0.9
    files = list((tmp_path / f"tuning-v{tuning.CACHE_SCHEMA}").glob("*.json"))
    assert len(files) == 1
    entry = json.loads(files[0].read_text())
    assert entry["floor"] == floor
    assert entry["timings_us"]  # what it measured is kept
    # A new process (empty memo) reads it back without measuring.
    monkeypatch.setattr(tuning, "_floors", {})
    monkeypatch.setattr(tuning, "_calibrate_floor", _fail("calibrated again"))
    assert tuning.sparsity_floor(cache) == floor


def _fail(what: str) -> Any:
    def f(*a: Any, **k: Any) -> Any:
        raise AssertionError(what)

    return f


# ------------------------------------------------------------------------------------------------
# Correctness gate


def _run_forced_csr(tmp_path: Path, n: int, rows: int, seed: int) -> Any:
    """A 95%-sparse n x n Linear + Relu loaded with CSR forced (the candidates go through
    `_candidate_hook`), run once on `rows` rows and checked against numpy; returns the session."""
    w = _weight(n, n, 0.95)
    s = _load(linear_model(w), tmp_path, sparse="force-csr")
    x = np.random.default_rng(seed).standard_normal((rows, n)).astype(np.float32)
    y = s.run({"x": x})["y"]
    np.testing.assert_allclose(y, np.maximum(x @ w.T + np.linspace(-0.5, 0.5, n), 0), rtol=1e-4, atol=1e-4)
    return s


def test_gate_rejects_a_broken_kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def hook(name: str, fn: Any) -> Any:
        if not name.startswith("csr/"):
            return fn

        def broken(x: Any, *rest: Any) -> Any:
            y = fn(x, *rest)
            y.view(-1)[0] += 1.0
            return y

        return broken

    monkeypatch.setattr(tuning, "_candidate_hook", hook)
    s = _run_forced_csr(tmp_path, 512, rows=1, seed=3)
    (row,) = _rows(s)
    assert row["winner"].startswith("dense")
    assert row["rejected"]
    assert all(n.startswith("csr/") for n in row["rejected"])
    assert all("max |error|" in why for why in row["rejected"].values())
    assert "rejected" in row["reason"]
    assert "rejected csr/" in str(s.report())


def test_gate_rejects_a_kernel_that_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def hook(name: str, fn: Any) -> Any:
        def fails(*_: Any) -> Any:
            raise RuntimeError("kernel exploded")

        return fails

    monkeypatch.setattr(tuning, "_candidate_hook", hook)
    s = _load(linear_model(_weight(256, 256, 0.9)), tmp_path)
    s.run({"x": np.ones((1, 256), np.float32)})
    (row,) = _rows(s)
    assert row["winner"].startswith("dense")
    assert all("kernel exploded" in why for why in row["rejected"].values())


def test_candidates_are_timed_writing_into_a_buffer_as_the_plan_runs_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A kernel that can write into a given buffer is timed that way, as the plan runs it: its fresh
    output pages would otherwise count against it (and not against torch, which allocates in the plan too)."""
    calls: dict[str, list[int]] = {}

    def hook(name: str, fn: Any) -> Any:
        assert hasattr(fn, "run_out")
        seen = calls.setdefault(name, [0, 0])

        def run(x: Any, *rest: Any) -> Any:
            seen[0] += 1
            return fn(x, *rest)

        def run_out(out: Any, x: Any, *rest: Any) -> None:
            assert tuple(out.shape) == fn.out_shape
            assert out.dtype == torch.float32
            seen[1] += 1
            fn.run_out(out, x, *rest)

        run.run_out, run.out_shape = run_out, fn.out_shape
        return run

    monkeypatch.setattr(tuning, "_candidate_hook", hook)
    _run_forced_csr(tmp_path, 256, rows=3, seed=5)
    assert calls
    for name, (fresh, into) in calls.items():
        assert fresh <= 2, name  # the correctness gate's call, and a second look at a slow first call
        assert into >= tuning.MIN_ROUNDS, name


# ------------------------------------------------------------------------------------------------
# Cache


def _cache_files(tmp_path: Path) -> list[Path]:
    """The per-op entries (not the machine's sparsity floor)."""
    files = sorted((tmp_path / "cache" / f"tuning-v{tuning.CACHE_SCHEMA}").glob("*.json"))
    return [f for f in files if json.loads(f.read_text())["key"]["kind"] == "op"]


def test_second_load_hits_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    w = _weight(512, 512, 0.9)
    x = np.random.default_rng(4).standard_normal((4, 512)).astype(np.float32)
    first = _load(linear_model(w), tmp_path)
    y1 = first.run({"x": x})["y"]
    (row1,) = _rows(first)
    assert row1["source"] == "measured"
    assert _cache_files(tmp_path)

    monkeypatch.setattr(tuning, "_measure", _fail("timed on a warm load"))
    monkeypatch.setattr(tuning, "_calibrate_floor", _fail("calibrated on a warm load"))
    second = _load(linear_model(w), tmp_path)
    y2 = second.run({"x": x})["y"]
    (row2,) = _rows(second)
    assert row2["source"] == "cache"
    assert row2["winner"] == row1["winner"]
    assert row2["timings_us"] == row1["timings_us"]
    np.testing.assert_array_equal(y1, y2)
    assert "(cached)" in str(second.report())


def _weight_files(tmp_path: Path) -> list[Path]:
    files = sorted((tmp_path / "cache" / f"tuning-v{tuning.CACHE_SCHEMA}").glob("*.json"))
    return [f for f in files if json.loads(f.read_text())["key"]["kind"] == "weight"]


@pytest.mark.parametrize("damage", [None, "garbage", "fields", "types"])
def test_weight_analysis_is_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: str | None
) -> None:
    """A warm load reads each weight's analysis from the cache (by the weight's digest) instead of
    analysing it again; a damaged entry is analysed again and rewritten."""
    w = _weight(256, 128, 0.9)
    x = np.ones((3, 128), np.float32)
    first = _load(linear_model(w), tmp_path)
    first.run({"x": x})
    (entry,) = _weight_files(tmp_path)
    good = json.loads(entry.read_text())
    assert good["sparsity"] == pytest.approx(0.9, abs=0.01)
    if damage == "garbage":
        entry.write_text("{not json")
    elif damage == "fields":
        entry.write_text(json.dumps({**good, "shape": [1, 2]}))
    elif damage == "types":
        entry.write_text(json.dumps({**good, "nm24": "false", "sparsity": "0.9"}))
    else:
        monkeypatch.setattr(tuning, "analyze", _fail("analysed on a warm load"))
    second = _load(linear_model(w), tmp_path)
    second.run({"x": x})
    assert [r["source"] for r in _rows(second)] == ["cache"]
    assert _rows(second)[0]["sparsity"] == _rows(first)[0]["sparsity"]
    assert json.loads(entry.read_text()) == good


def test_cache_key_covers_shape_weight_mode_and_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = _weight(256, 256, 0.9)
    _load(linear_model(w), tmp_path).run({"x": np.ones((1, 256), np.float32)})
    n = len(_cache_files(tmp_path))

    def sources(model: bytes, rows: int, **opts: Any) -> list[str]:
        s = _load(model, tmp_path, **opts)
        s.run({"x": np.ones((rows, 256), np.float32)})
        return [r["source"] for r in _rows(s)]

    assert sources(linear_model(w), 1) == ["cache"]
    assert sources(linear_model(w), 2) == ["measured"]  # another input shape
    w2 = w.copy()
    w2[0, np.flatnonzero(w2[0])[0]] = 0.0
    assert sources(linear_model(w2), 1) == ["measured"]  # another weight
    assert sources(linear_model(w), 1, sparse="force-csr") == ["measured"]  # another mode
    monkeypatch.setattr(zeroskip, "__version__", "0.0.0-other")
    assert sources(linear_model(w), 1) == ["measured"]  # another library version
    assert len(_cache_files(tmp_path)) == n + 4


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty", "wrong-key", "unknown-winner"])
def test_corrupt_cache_entry_is_ignored_and_rewritten(tmp_path: Path, damage: str) -> None:
    w = _weight(256, 256, 0.9)
    x = np.ones((1, 256), np.float32)
    _load(linear_model(w), tmp_path).run({"x": x})
    (entry,) = _cache_files(tmp_path)
    good = json.loads(entry.read_text())
    if damage == "garbage":
        entry.write_bytes(b"\x00\xffnot json")
    elif damage == "truncated":
        entry.write_text(entry.read_text()[:40])
    elif damage == "empty":
        entry.write_text("")
    elif damage == "wrong-key":
        entry.write_text(json.dumps({**good, "key": {"other": 1}}))
    else:
        entry.write_text(json.dumps({**good, "winner": "csr/no_such_kernel"}))
    s = _load(linear_model(w), tmp_path)
    s.run({"x": x})
    (row,) = _rows(s)
    assert row["source"] == "measured"
    rewritten = json.loads(entry.read_text())
    assert rewritten["key"] == good["key"]
    assert rewritten["winner"] == row["winner"]


def test_unwritable_cache_dir_still_runs(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    s = zeroskip.load(
        linear_model(_weight(128, 128, 0.9)), options={"cache": str(blocker), "progress": False}
    )
    s.run({"x": np.ones((1, 128), np.float32)})
    assert len(s.report()) == 1


def test_cache_dir_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZEROSKIP_CACHE_DIR", str(tmp_path / "env"))
    assert tuning.cache_dir() == tmp_path / "env"
    monkeypatch.delenv("ZEROSKIP_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert tuning.cache_dir() == tmp_path / "xdg" / "zeroskip"


# ------------------------------------------------------------------------------------------------
# Report, sample inputs


def test_sample_inputs_tune_at_load_and_report_renders(tmp_path: Path) -> None:
    w = _weight(256, 512, 0.9)
    x = np.ones((2, 512), np.float32)
    s = zeroskip.load(
        linear_model(w), options={"cache": str(tmp_path), "progress": False}, sample_inputs={"x": x}
    )
    (row,) = _rows(s)  # before any run()
    assert row["input_shape"] == [2, 512]
    assert row["weight_shape"] == [256, 512]
    assert row["op"] == "MatMul+Add+Relu -> Linear"
    assert row["node"] == "fc/MatMul"
    text = str(s.report())
    assert "fc/MatMul" in text
    assert "90%" in text
    assert json.loads(s.report().to_json())[0]["winner"] == row["winner"]
    empty = zeroskip.load(linear_model(w), options={"cache": False})
    assert "no weight-bearing ops" in str(empty.report())


# ------------------------------------------------------------------------------------------------
# Pruned models against onnxruntime

PRUNED = [
    (name, pattern, sparsity)
    for name in ("mlp", "cnn", "bert")
    for pattern, sparsity in [
        ("unstructured", 0.5),
        ("unstructured", 0.8),
        ("unstructured", 0.9),
        ("unstructured", 0.95),
        ("2:4", 0.5),
        ("4x1", 0.9),
    ]
]
FORCED = {"unstructured": "force-csr", "2:4": "force-nm", "4x1": "force-bsr"}


@pytest.fixture(scope="module")
def pruned_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pruned")


@pytest.mark.parametrize(("name", "pattern", "sparsity"), PRUNED, ids=lambda v: str(v))
def test_pruned_models_match_onnxruntime(
    name: str, pattern: str, sparsity: float, pruned_dir: Path, tmp_path: Path
) -> None:
    zoo = _zoo()
    path, _ = zoo.export(
        name, pruned_dir / f"{name}-{pattern}-{sparsity}.onnx", sparsity=sparsity, pattern=pattern
    )
    feeds = zoo.sample_inputs(name, batch=2)
    want = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, feeds)
    tol = MODEL_TOLERANCE[np.float32]
    for mode in ("auto", FORCED[pattern]):
        s = _load(path, tmp_path, sparse=mode)
        got = s.run(feeds)
        for (out, g), w in zip(got.items(), want):
            np.testing.assert_allclose(g, w, **tol, err_msg=f"{name} {pattern} {sparsity} {mode}: {out}")
        rows = _rows(s)
        assert rows, "no weight-bearing op was scheduled"
        if mode != "auto":
            # Every weight the pattern pruned runs sparse (the format asked for), and still matches.
            fmt = FORCED[pattern][6:]
            pruned = [r for r in rows if r["sparsity"] and r["sparsity"] >= min(sparsity, 0.5) - 0.01]
            assert pruned
            assert all(r["winner"].startswith(fmt) for r in pruned if fmt != "nm" or "2:4" in r["structure"])


# ------------------------------------------------------------------------------------------------
# zeroskip inspect


def test_inspect_prints_the_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from zeroskip import cli

    path = tmp_path / "fc.onnx"
    path.write_bytes(linear_model(_weight(256, 128, 0.9)))
    assert cli.main(["inspect", str(path), "--batch", "3", "--json", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    assert "fc/MatMul" in out
    assert "planned for: x [3, 128]" in out
    assert "90%" in out
    rows = json.loads((tmp_path / "r.json").read_text())
    assert rows[0]["input_shape"] == [3, 128]


def test_inspect_token_inputs_are_in_range(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from zeroskip import cli
    from zeroskip import feeds as feeds_mod

    zoo = _zoo()
    path, _ = zoo.export("bert", tmp_path / "bert.onnx")
    s = zeroskip.load(path, options={"cache": False})
    feeds = feeds_mod.sample_feeds(s, batch=2, seq=9)
    assert feeds["input_ids"].shape == (2, 9)
    assert feeds["input_ids"].min() >= 0
    assert feeds["input_ids"].max() < zoo.VOCAB
    assert (feeds["attention_mask"] == 1).all()
    assert (
        cli.main(
            [
                "inspect",
                path,
                "--shape",
                "input_ids=1,5",
                "--shape",
                "attention_mask=1,5",
                "--shape",
                "token_type_ids=1,5",
                "--sparse",
                "off",
            ]
        )
        == 0
    )
    assert "1x5x128" in capsys.readouterr().out


def test_inspect_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from zeroskip import cli

    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    assert cli.main(["inspect", str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("zeroskip: error: ")
    assert len(err.strip().splitlines()) == 1
    assert cli.main(["inspect", str(tmp_path / "missing.onnx")]) == 1
    with pytest.raises(SystemExit):
        cli.main(["inspect", str(bad), "--shape", "nodims"])
    with pytest.raises(zeroskip.ZeroskipError):
        cli.main(["inspect", str(bad), "--debug"])


def test_progress_line_while_tuning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    s = zeroskip.load(
        linear_model(_weight(128, 128, 0.9)),
        options={"cache": str(tmp_path), "progress": True},
        sample_inputs={"x": np.ones((1, 128), np.float32)},
    )
    err = capsys.readouterr().err
    assert "zeroskip: tuning [" in err
    assert "1/1" in err
    assert "fc/MatMul" in err
    assert err.endswith("\r\033[K")  # the line is cleared when tuning ends
    assert s.report().rows[0]["source"] == "measured"


def _chain_model(ws: list[np.ndarray], side_output: bool) -> bytes:
    """x -> relu(x @ W1.T) -> ... (MatMul + Relu links); with side_output the first link's result is
    also a graph output."""
    nodes, inits = [], []
    h = "x"
    for i, w in enumerate(ws):
        inits.append(numpy_helper.from_array(np.ascontiguousarray(w.T), f"W{i}"))
        nodes.append(helper.make_node("MatMul", [h, f"W{i}"], [f"m{i}"]))
        nodes.append(helper.make_node("Relu", [f"m{i}"], [f"h{i}"]))
        h = f"h{i}"
    outs = [helper.make_tensor_value_info(h, TensorProto.FLOAT, ["batch", ws[-1].shape[0]])]
    if side_output:
        outs.append(helper.make_tensor_value_info("h0", TensorProto.FLOAT, ["batch", ws[0].shape[0]]))
    g = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", ws[0].shape[1]])],
        outs,
        inits,
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


@pytest.mark.parametrize("side_output", [False, True])
@pytest.mark.parametrize("batch", [1, 3, 70, 128])
def test_sparse_linear_chains_pass_transposed_values(tmp_path: Path, side_output: bool, batch: int) -> None:
    """Consecutive sparse Linears hand each other (N, M) transposes (no transposes between links); a
    value also read elsewhere (a graph output here) keeps its layout. Same bits as running the links
    one by one, and onnxruntime's numbers."""
    from zeroskip import kernels
    from zeroskip.formats import CSR
    from zeroskip.ops.cpu_kernels import SparseLinear

    ws = [_weight(48, 40, 0.9, 1), _weight(56, 48, 0.9, 2), _weight(24, 56, 0.9, 3)]
    model = _chain_model(ws, side_output)
    x = np.random.default_rng(0).standard_normal((batch, 40)).astype(np.float32)
    s = _load(model, tmp_path, sparse="force-csr")
    got = s.run({"x": x})
    plan = s.program.plan_for([torch.from_numpy(x)])
    # A runner is bound as itself, or as its run_out when it writes into a pooled buffer.
    bound = [getattr(v, "__self__", v) for v in plan._ns.values()]
    runners = [v for v in bound if isinstance(v, SparseLinear)]
    assert len(runners) == 3
    layouts = sorted((r.x_t, r.y_t) for r in runners)
    if batch == 1:
        want = [(False, False)] * 3
    elif side_output:  # h0 is read by the graph too: only the second link hands on a transpose
        want = [(False, False), (False, True), (True, False)]
    else:
        want = [(False, True), (True, False), (True, True)]
    assert layouts == want
    h = x
    for w, r in zip(ws, runners):  # the same kernels, link by link, in the plain layout
        h = kernels.linear(CSR.from_dense(w), h, kernel=r.kernel, clamp=(0.0, np.inf))
    np.testing.assert_array_equal(got["h2"], h)
    ort = pytest.importorskip("onnxruntime")
    ref = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, {"x": x})
    np.testing.assert_allclose(got["h2"], ref[0], rtol=1e-4, atol=1e-4)
    if side_output:
        np.testing.assert_allclose(got["h0"], ref[1], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("sparse", ["force-csr", "off"])
def test_pooled_runners_give_fresh_results_every_run(tmp_path: Path, sparse: str) -> None:
    """Kernel runners that write into the plan's pooled buffers (run_out) and keep the numpy views of the
    buffers they are given: a second run with other inputs gives that input's numbers, a graph output
    of the first run is not overwritten by the second, and the first input again gives the same bits."""
    ws = [_weight(48, 40, 0.9, 1), _weight(56, 48, 0.9, 2), _weight(24, 56, 0.9, 3)]
    model = _chain_model(ws, side_output=True)
    rng = np.random.default_rng(3)
    x1, x2 = (rng.standard_normal((70, 40)).astype(np.float32) for _ in range(2))
    s = _load(model, tmp_path, sparse=sparse, min_buffer_bytes=1 << 30)  # only run_out steps pool
    first = s.run({"x": x1})
    kept = {k: v.copy() for k, v in first.items()}
    plan = s.program.plan_for([torch.from_numpy(x1)])
    if sparse == "force-csr":  # dense: torch's linear may win the timing, and it has no run_out
        assert any(getattr(v, "__name__", "") == "run_out" for v in plan._ns.values())
    second = s.run({"x": x2})
    for k in kept:
        np.testing.assert_array_equal(first[k], kept[k])  # the first run's outputs are the user's
    again = s.run({"x": x1})
    for k in kept:
        np.testing.assert_array_equal(again[k], kept[k])
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    for x, got in ((x1, first), (x2, second)):
        ref = sess.run(None, {"x": x})
        np.testing.assert_allclose(got["h2"], ref[0], rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(got["h0"], ref[1], rtol=1e-4, atol=1e-4)


def _conv_chain_model() -> bytes:
    """x (1, 8, 16, 16) -> Conv 3x3 (8 -> 16) -> Relu -> Conv 1x1 (16 -> 8): both big enough that
    oneDNN's channels-last path is offered."""
    rng = np.random.default_rng(7)
    w1 = rng.standard_normal((16, 8, 3, 3)).astype(np.float32) * 0.2
    w2 = rng.standard_normal((8, 16, 1, 1)).astype(np.float32) * 0.2
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["y"]),
    ]
    g = helper.make_graph(
        nodes,
        "convs",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16, 16])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


@pytest.mark.parametrize("faster", ["mixed", "nchw"])
def test_conv_layout_is_chosen_for_the_whole_plan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, faster: str
) -> None:
    """Where a conv takes oneDNN's channels-last path, a plan with NCHW kernels only is built too and the
    faster of the two whole plans is kept (each op is timed alone, so the layout changes between them
    are not); the choice is cached, and the report shows the kept plan's choices only."""
    from zeroskip import plan as plan_mod
    from zeroskip.ops import nn as nn_ops

    orig_pick = tuning.Tuner._pick

    def prefer_onednn(self: Any, seconds: Any, stats: Any, rejected: Any) -> Any:
        if nn_ops.ONEDNN in seconds:  # pretend oneDNN won the node's timing
            return nn_ops.ONEDNN, "test"
        return orig_pick(self, seconds, stats, rejected)

    monkeypatch.setattr(tuning.Tuner, "_pick", prefer_onednn)
    timed = []

    def fake_times(plans: Any, feeds: Any, budget: float = 1.0) -> list[float]:
        timed.append(len(plans))
        return [1.0, 2.0] if faster == "mixed" else [2.0, 1.0]

    monkeypatch.setattr(plan_mod, "_time_plans", fake_times)
    model = _conv_chain_model()
    x = np.random.default_rng(1).standard_normal((1, 8, 16, 16)).astype(np.float32)
    s = _load(model, tmp_path)
    got = s.run({"x": x})["y"]
    if not timed:
        pytest.skip("this torch build has no oneDNN convolution")
    assert timed == [2]
    winners = [r["winner"] for r in _rows(s)]
    assert len(winners) == 2  # one row per conv: the other plan's rows are dropped
    if faster == "mixed":
        assert nn_ops.ONEDNN in winners
    else:
        assert nn_ops.ONEDNN not in winners
    ort = pytest.importorskip("onnxruntime")
    ref = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
    monkeypatch.setattr(plan_mod, "_time_plans", _fail("timed again on a warm load"))
    again = _load(model, tmp_path)
    np.testing.assert_array_equal(again.run({"x": x})["y"], got)
    assert [r["winner"] for r in _rows(again)] == winners
