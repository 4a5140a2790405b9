"""Whole models from the zoo (models/zoo.py) against onnxruntime.

Each model is exported once per module into a temporary folder, with seeded random weights; zeroskip and
onnxruntime's CPU provider then run the same seeded inputs. Covered: `zeroskip.load(...).run` at several
batch sizes (and sequence lengths for the transformers), the onnxruntime-style `InferenceSession`, input
and output metadata, torch tensors in and out, and re-planning when the input shapes change.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")
pytest.importorskip("onnx")

import zeroskip  # noqa: E402

# The tolerance (tests/conftest.py) is in np.testing.assert_allclose terms. torch and onnxruntime differ
# by up to ~5e-6 on these models (resnet18's logits), so it leaves 20x headroom while a wrong op is still
# far outside it.
from conftest import MODEL_TOLERANCE  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _load_zoo() -> Any:
    """models/zoo.py under a private name (the repository root is not on sys.path under plain `pytest`)."""
    name = "_zeroskip_models_zoo"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "models" / "zoo.py")
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look the module up while the file runs
        spec.loader.exec_module(module)
    return sys.modules[name]


zoo = _load_zoo()

TRANSFORMERS = [n for n in zoo.TEST_NAMES if zoo.MODELS[n].is_transformer]
# (model, batch, seq): batch 1 and 3; sequence 7 and 16 for the transformers.
CASES = [
    (name, batch, seq)
    for name in zoo.TEST_NAMES
    for batch in (1, 3)
    for seq in ((7, 16) if name in TRANSFORMERS else (None,))
]
ORT_TYPES = {np.dtype(np.float32): "tensor(float)", np.dtype(np.int64): "tensor(int64)"}


def _case_id(case: tuple[str, int, int | None]) -> str:
    name, batch, seq = case
    return f"{name}-b{batch}" + (f"-s{seq}" if seq else "")


class Zoo:
    """Exports each model on first use and keeps one onnxruntime and one zeroskip session per model."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._paths: dict[str, str] = {}
        self._ort: dict[str, Any] = {}
        self._zs: dict[str, Any] = {}
        self._refs: dict[tuple[str, int, int | None], dict[str, np.ndarray]] = {}

    def path(self, name: str) -> str:
        if name not in self._paths:
            self._paths[name], _ = zoo.export(name, self.folder / f"{name}.onnx")
        return self._paths[name]

    def ort(self, name: str) -> Any:
        if name not in self._ort:
            opts = ort.SessionOptions()
            opts.log_severity_level = 3
            self._ort[name] = ort.InferenceSession(self.path(name), opts, providers=["CPUExecutionProvider"])
        return self._ort[name]

    def zs(self, name: str) -> Any:
        if name not in self._zs:
            self._zs[name] = zeroskip.load(self.path(name))
        return self._zs[name]

    def reference(self, name: str, batch: int, seq: int | None) -> dict[str, np.ndarray]:
        """onnxruntime's outputs on zoo.sample_inputs(name, batch, seq), by name in graph order."""
        key = (name, batch, seq)
        if key not in self._refs:
            sess = self.ort(name)
            outs = sess.run(None, zoo.sample_inputs(name, batch, seq))
            self._refs[key] = dict(zip([o.name for o in sess.get_outputs()], outs))
        return self._refs[key]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Zoo:
    return Zoo(tmp_path_factory.mktemp("zoo"))


def assert_close(got: Any, ref: np.ndarray, what: str) -> None:
    if isinstance(got, torch.Tensor):
        got = got.numpy()
    assert isinstance(got, np.ndarray), f"{what}: got {type(got).__name__}, not a numpy array"
    assert got.shape == ref.shape, f"{what}: shape {got.shape} != onnxruntime's {ref.shape}"
    assert got.dtype == ref.dtype, f"{what}: dtype {got.dtype} != onnxruntime's {ref.dtype}"
    np.testing.assert_allclose(got, ref, **MODEL_TOLERANCE[np.float32], err_msg=what)


def check_against_ort(models: Zoo, session: Any, name: str, batch: int, seq: int | None) -> dict[str, Any]:
    refs = models.reference(name, batch, seq)
    out = session.run(zoo.sample_inputs(name, batch, seq))
    assert set(out) == set(refs), f"{name}: outputs {sorted(out)} != onnxruntime's {sorted(refs)}"
    for out_name, ref in refs.items():
        assert_close(out[out_name], ref, f"{name} batch={batch} seq={seq} output {out_name!r}")
    return out


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_matches_onnxruntime(models: Zoo, case: tuple[str, int, int | None]) -> None:
    name, batch, seq = case
    check_against_ort(models, models.zs(name), name, batch, seq)


@pytest.mark.parametrize("name", zoo.TEST_NAMES)
def test_replans_when_shapes_change(models: Zoo, name: str) -> None:
    """A fresh session: batch 1, then 3, then 1 again (and a new sequence length each time). Outputs
    handed out earlier must survive the later runs (no buffer reused under the caller's feet)."""
    session = zeroskip.load(models.path(name))
    steps = [(1, 7), (3, 16), (1, 7)] if name in TRANSFORMERS else [(1, None), (3, None), (1, None)]
    kept = [(batch, seq, check_against_ort(models, session, name, batch, seq)) for batch, seq in steps]
    for step, (batch, seq, out) in enumerate(kept):
        for out_name, ref in models.reference(name, batch, seq).items():
            assert_close(out[out_name], ref, f"{name} step {step} output {out_name!r}, read after later runs")


def _meta(values: Any) -> list[tuple[str, str, list[int | str | None]]]:
    return [(v.name, v.type, list(v.shape)) for v in values]


@pytest.mark.parametrize("name", zoo.TEST_NAMES)
def test_inference_session_matches_onnxruntime(models: Zoo, name: str) -> None:
    """The onnxruntime-style API: metadata, run(None, feeds) as a list, and run with named outputs."""
    path = models.path(name)
    ref_sess = models.ort(name)
    sess = zeroskip.InferenceSession(path, providers=["CPUExecutionProvider"])
    assert _meta(sess.get_inputs()) == _meta(ref_sess.get_inputs())
    assert _meta(sess.get_outputs()) == _meta(ref_sess.get_outputs())

    seq = 7 if name in TRANSFORMERS else None
    feeds = zoo.sample_inputs(name, 1, seq)
    refs = models.reference(name, 1, seq)
    outs = sess.run(None, feeds)
    assert isinstance(outs, list)
    assert len(outs) == len(refs)
    for (out_name, ref), got in zip(refs.items(), outs):
        assert_close(got, ref, f"{name} InferenceSession.run(None) output {out_name!r}")

    wanted = list(refs)[::-1]  # reversed order: bert's two outputs swap
    outs = sess.run(wanted, feeds)
    assert len(outs) == len(wanted)
    for out_name, got in zip(wanted, outs):
        assert_close(got, refs[out_name], f"{name} InferenceSession.run({wanted}) output {out_name!r}")


@pytest.mark.parametrize("name", zoo.TEST_NAMES)
def test_session_metadata(models: Zoo, name: str) -> None:
    """Session.inputs / .outputs: name, numpy dtype, shape with the symbolic dims as strings."""
    ref_sess = models.ort(name)
    session = models.zs(name)
    for ours, theirs in ((session.inputs, ref_sess.get_inputs()), (session.outputs, ref_sess.get_outputs())):
        assert [v.name for v in ours] == [v.name for v in theirs]
        assert [ORT_TYPES.get(np.dtype(v.dtype)) for v in ours] == [v.type for v in theirs]
        assert [tuple(v.shape) for v in ours] == [tuple(v.shape) for v in theirs]


@pytest.mark.parametrize("name", zoo.TEST_NAMES)
def test_torch_tensors_in_and_out(models: Zoo, name: str) -> None:
    seq = 7 if name in TRANSFORMERS else None
    feeds = zoo.sample_inputs(name, 1, seq)
    refs = models.reference(name, 1, seq)
    out = models.zs(name).run({k: torch.from_numpy(v) for k, v in feeds.items()}, return_torch=True)
    assert set(out) == set(refs)
    for out_name, ref in refs.items():
        assert isinstance(out[out_name], torch.Tensor), f"{name} {out_name}: {type(out[out_name]).__name__}"
        assert_close(out[out_name], ref, f"{name} return_torch output {out_name!r}")


@pytest.mark.parametrize("name", zoo.TEST_NAMES)
def test_same_shape_other_inputs(models: Zoo, name: str) -> None:
    """Runs of one shape share a plan whose pooled buffers, views made at plan time and kernel runners'
    cached numpy views are reused: each run must still give its own inputs' numbers, and outputs
    handed out earlier must not change."""
    session = zeroskip.load(models.path(name))
    seq = 16 if name in TRANSFORMERS else None
    ref_sess = models.ort(name)
    names = [o.name for o in ref_sess.get_outputs()]
    kept = []
    for seed in (1, 2, 1, 3):
        feeds = zoo.sample_inputs(name, 2, seq, seed=seed)
        out = session.run(feeds)
        kept.append((seed, out, {k: v.copy() for k, v in out.items()}))
        for out_name, ref in zip(names, ref_sess.run(None, feeds)):
            assert_close(out[out_name], ref, f"{name} seed={seed} output {out_name!r}")
    for seed, out, copy in kept:
        for k in copy:
            np.testing.assert_array_equal(out[k], copy[k], err_msg=f"{name} seed={seed} {k!r} changed later")
    if name in ("bert", "minilm_like"):
        src = session.program.plan_for(
            [torch.from_numpy(zoo.sample_inputs(name, 2, seq)[n]) for n in session._names]
        ).source
        assert " = c" in src  # view steps of pooled buffers bound once, at plan time
