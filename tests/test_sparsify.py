"""Pruning: the per-weight methods (magnitude, Wanda, SparseGPT) against numpy references, and
`zeroskip.sparsify` on exported models against onnxruntime."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("torch")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import zeroskip  # noqa: E402
from zeroskip import prune  # noqa: E402
from zeroskip.errors import FormatError, InputError, ModelError  # noqa: E402
from zeroskip.formats import NM  # noqa: E402
from zeroskip.sparsify import drift, sparsify  # noqa: E402


def _zoo():
    from models import zoo

    return zoo


def _correlated(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    return rng.standard_normal((n, k)) @ rng.standard_normal((k, k)) * 0.5 + rng.standard_normal((n, k)) * 0.3


# -- patterns and per-weight methods --------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("unstructured", prune.Pattern("unstructured")),
        ("2:4", prune.Pattern("nm", 2, 4)),
        ("1:8", prune.Pattern("nm", 1, 8)),
        ("4x1", prune.Pattern("block", 4, 1)),
        ("block8x1", prune.Pattern("block", 8, 1)),
        (" Block1x4 ", prune.Pattern("block", 1, 4)),
    ],
)
def test_parse_pattern(text: str, want: prune.Pattern) -> None:
    assert prune.parse_pattern(text) == want
    assert prune.parse_pattern(str(want)) == want


@pytest.mark.parametrize("text", ["", "4:2", "0:4", "2:2", "0x4", "dense", "2-4", "x4"])
def test_parse_pattern_rejects(text: str) -> None:
    with pytest.raises(FormatError):
        prune.parse_pattern(text)


def test_select_matches_numpy() -> None:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((24, 64)).astype(np.float32)
    # unstructured: exactly the 90% smallest |w| go
    p = prune.select(w, "unstructured", 0.9)
    thresh = np.sort(np.abs(w).ravel())[round(0.9 * w.size)]
    np.testing.assert_array_equal(p, np.where(np.abs(w) >= thresh, w, 0))
    # 2:4: in each group of 4 along a row, the 2 largest stay
    p = prune.select(w, "2:4")
    g = np.abs(w).reshape(24, 16, 4)
    keep = g >= np.sort(g, axis=2)[:, :, 2:3]
    np.testing.assert_array_equal(p, np.where(keep.reshape(24, 64), w, 0))
    NM.from_dense(p)
    # 4x1 blocks: whole blocks of 4 rows, by L2 norm
    p = prune.select(w, "4x1", 0.5)
    zero_blocks = (p.reshape(6, 4, 64) == 0).all(axis=1)
    assert zero_blocks.mean() == 0.5
    norms = np.sqrt((w.reshape(6, 4, 64) ** 2).sum(1))
    assert norms[zero_blocks].max() <= norms[~zero_blocks].min()


def test_wanda_scores_by_input_norm() -> None:
    rng = np.random.default_rng(1)
    w = rng.standard_normal((16, 32)).astype(np.float32)
    # equal input norms: per-row magnitude pruning
    got = prune.wanda(w, np.ones(32), "unstructured", 0.5)
    assert ((got == 0).sum(axis=1) == 16).all()
    for r in range(16):
        kept = np.abs(w[r][got[r] != 0])
        dropped = np.abs(w[r][got[r] == 0])
        assert kept.min() >= dropped.max()
    # a column with a huge input norm is never pruned; one with zero norm always is
    norms = np.ones(32)
    norms[3], norms[5] = 1e6, 0.0
    got = prune.wanda(w, norms, "2:4")
    assert (got[:, 3] != 0).all()
    assert (got[:, 5] == 0).all()
    NM.from_dense(got)
    with pytest.raises(FormatError):
        prune.wanda(w, np.ones(31), "2:4")


def test_sparsegpt_identity_hessian_is_magnitude() -> None:
    rng = np.random.default_rng(2)
    w = rng.standard_normal((8, 64)).astype(np.float32)
    np.testing.assert_allclose(prune.sparsegpt(w, np.eye(64), "2:4"), prune.nm_mask(w), atol=1e-6)
    # unstructured with one block of all the columns: the same mask as global magnitude pruning
    got = prune.sparsegpt(w, np.eye(64), "unstructured", 0.75, block=64)
    np.testing.assert_allclose(got, prune.magnitude(w, 0.75), atol=1e-6)


@pytest.mark.parametrize(
    ("pattern", "sparsity"), [("2:4", 0.0), ("unstructured", 0.5), ("unstructured", 0.9)]
)
def test_sparsegpt_reconstructs_better_than_magnitude(pattern: str, sparsity: float) -> None:
    rng = np.random.default_rng(3)
    x = _correlated(rng, 3000, 96)
    w = rng.standard_normal((40, 96)).astype(np.float32)
    h = x.T @ x / len(x)

    def err(p: np.ndarray) -> float:
        return float(np.linalg.norm(x @ (p - w).T) / np.linalg.norm(x @ w.T))

    got = prune.sparsegpt(w, h, pattern, sparsity, block=32)
    mag = prune.select(w, pattern, sparsity)
    assert (got == 0).mean() == pytest.approx((mag == 0).mean(), abs=0.01)
    if pattern == "2:4":
        NM.from_dense(got)
    assert err(got) < (0.9 if sparsity < 0.9 else 0.97) * err(mag)
    # the cross term of the dense inputs themselves (X' = X) changes nothing
    np.testing.assert_allclose(prune.sparsegpt(w, h, pattern, sparsity, block=32, cross=h), got, atol=1e-5)


def test_sparsegpt_errors() -> None:
    w = np.ones((4, 8), np.float32)
    with pytest.raises(FormatError, match="Hessian"):
        prune.sparsegpt(w, np.eye(7), "2:4")
    with pytest.raises(FormatError, match="wanda or magnitude"):
        prune.sparsegpt(w, np.eye(8), "4x1", 0.5)
    with pytest.raises(FormatError, match="multiple"):
        prune.sparsegpt(np.ones((4, 6), np.float32), np.eye(6), "2:4")
    # a dead input column (all-zero inputs) is zeroed, not a NaN
    h = np.eye(8)
    h[2, 2] = 0
    assert np.isfinite(prune.sparsegpt(w, h, "2:4")).all()


# -- sparsify on models ----------------------------------------------------------------------------


def _ort(model, feeds):  # type: ignore[no-untyped-def]
    ort = pytest.importorskip("onnxruntime")
    data = model.SerializeToString() if hasattr(model, "SerializeToString") else str(model)
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, feeds)


def _weights(model) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
    from onnx import numpy_helper

    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


@pytest.mark.parametrize("name", ["mlp", "cnn", "bert"])
def test_magnitude_on_models(tmp_path: Path, name: str) -> None:
    zoo = _zoo()
    path, _ = zoo.export(name, tmp_path / f"{name}.onnx")
    res = sparsify(path, pattern="unstructured", sparsity=0.8)
    pruned = [r for r in res.layers if r.skipped is None]
    assert pruned, res.table()
    before, after = _weights(onnx.load(path)), _weights(res.model)
    for r in pruned:
        w = before[r.weight]
        mat = w.T if r.layout == "kn" else w.reshape(r.shape)
        want = prune.magnitude(mat, 0.8)
        got = after[r.weight].T if r.layout == "kn" else after[r.weight].reshape(r.shape)
        np.testing.assert_array_equal(got, want)
        assert r.after == pytest.approx(0.8, abs=0.01)
    for r in res.layers:
        if r.skipped is not None:
            np.testing.assert_array_equal(after[r.weight], before[r.weight])
    # the file is valid and zeroskip runs it as onnxruntime does
    feeds = zoo.sample_inputs(name, 2)
    want = _ort(res.model, feeds)
    got = zeroskip.load(res.model, options={"cache": False}).run(feeds)
    for w, g in zip(want, got.values()):
        np.testing.assert_allclose(g, w, rtol=1e-3, atol=1e-4 * float(np.abs(w).max()))
    assert "zeroskip.sparsify" in {p.key for p in res.model.metadata_props}


def test_grouped_convs_are_left_alone(tmp_path: Path) -> None:
    path, _ = _zoo().export("cnn", tmp_path / "cnn.onnx")
    res = sparsify(path, pattern="2:4")
    notes = {r.skipped for r in res.layers if r.skipped}
    assert "grouped conv" in notes
    for r in res.layers:
        if r.skipped is None:
            assert r.shape[1] % 4 == 0
            assert r.after == pytest.approx(0.5, abs=0.01)


def test_ops_and_skip(tmp_path: Path) -> None:
    path, _ = _zoo().export("bert", tmp_path / "bert.onnx")
    full = sparsify(path, sparsity=0.5)
    eligible = [r.node for r in full.layers if r.skipped is None]
    res = sparsify(path, sparsity=0.5, skip=["first", "last", "*ffn*"])
    skipped = {r.node: r.skipped for r in res.layers if r.skipped}
    assert skipped[eligible[0]] == "--skip first"
    assert skipped[eligible[-1]] == "--skip last"
    assert all("ffn" not in r.node for r in res.layers if r.skipped is None)
    assert any("ffn" in n for n in skipped)
    none = sparsify(path, sparsity=0.5, ops=["Conv"])
    assert not [r for r in none.layers if r.skipped is None]


@pytest.mark.parametrize(
    ("name", "method", "output"),
    [
        ("bert", "wanda", "last_hidden_state"),
        ("bert", "sparsegpt", "last_hidden_state"),
        ("cnn", "sparsegpt", "logits"),  # conv inputs through the im2col
    ],
)
def test_calibrated_methods_drift_less_than_magnitude(
    tmp_path: Path, name: str, method: str, output: str
) -> None:
    zoo = _zoo()
    path, _ = zoo.export(name, tmp_path / f"{name}.onnx")
    seq = 32 if zoo.MODELS[name].is_transformer else None
    calib = zoo.sample_inputs(name, 16, seq, seed=1)
    held_out = zoo.sample_inputs(name, 16, seq, seed=2)
    mag = sparsify(path, pattern="2:4", method="magnitude")
    got = sparsify(path, pattern="2:4", method=method, calib=calib, calib_batch=8)
    assert [r.node for r in got.layers if r.skipped is None] == [
        r.node for r in mag.layers if r.skipped is None
    ]
    for r in got.layers:
        if r.skipped is None:
            assert r.after == pytest.approx(0.5, abs=0.01)
    d_mag = drift(path, mag.model, held_out)[output]["rel_l2"]
    d_got = drift(path, got.model, held_out)[output]["rel_l2"]
    assert d_got < d_mag, (d_got, d_mag)


def test_sparse_initializers(tmp_path: Path) -> None:
    zoo = _zoo()
    path, _ = zoo.export("mlp", tmp_path / "mlp.onnx")
    dense_init = sparsify(path, sparsity=0.9)
    res = sparsify(path, sparsity=0.9, sparse_initializers=True)
    assert len(res.model.graph.sparse_initializer) == len([r for r in res.layers if r.skipped is None])
    feeds = zoo.sample_inputs("mlp", 3)
    want = zeroskip.load(dense_init.model, options={"cache": False}).run(feeds)
    got = zeroskip.load(res.model.SerializeToString(), options={"cache": False}).run(feeds)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-6)


def test_sparsify_errors(tmp_path: Path) -> None:
    path, _ = _zoo().export("mlp", tmp_path / "mlp.onnx")
    with pytest.raises(InputError, match="method"):
        sparsify(path, method="obs")
    with pytest.raises(InputError, match="calibration"):
        sparsify(path, method="sparsegpt")
    with pytest.raises(InputError, match="blocks"):
        sparsify(path, method="sparsegpt", pattern="4x1", calib={"input": np.zeros((2, 256), np.float32)})
    with pytest.raises(InputError, match="Relu"):
        sparsify(path, ops=["Relu"])
    with pytest.raises(InputError, match="input 'input': dtype float64"):
        sparsify(path, method="wanda", calib={"input": np.zeros((2, 256))})
    with pytest.raises(InputError, match="input"):
        sparsify(path, method="wanda", calib={"x": np.zeros((2, 256), np.float32)})
    with pytest.raises(FormatError):
        sparsify(path, pattern="3:3")
    with pytest.raises(ModelError, match="no such file"):
        sparsify(tmp_path / "missing.onnx")


def test_replace_constant(tmp_path: Path) -> None:
    zoo = _zoo()
    path, _ = zoo.export("mlp", tmp_path / "mlp.onnx")
    model = onnx.load(path)
    name = next(t.name for t in model.graph.initializer if len(t.dims) == 2)
    w = _weights(model)[name]
    feeds = zoo.sample_inputs("mlp", 2)
    s = zeroskip.load(path, options={"reference": True, "cache": False})
    s.run(feeds)  # a plan exists: replacing must still take effect
    s.program.replace_constant(name, np.zeros_like(w))
    for t in model.graph.initializer:
        if t.name == name:
            t.CopyFrom(onnx.numpy_helper.from_array(np.zeros_like(w), name))
    want = zeroskip.load(model, options={"reference": True, "cache": False}).run(feeds)
    got = s.run(feeds)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k])
    with pytest.raises(InputError, match=r"float32 \[3, 3\]"):
        s.program.replace_constant(name, np.zeros((3, 3), np.float32))
    with pytest.raises(InputError, match="no constant"):
        s.program.replace_constant("nope", w)
    with pytest.raises(InputError, match="reference"):
        zeroskip.load(path, options={"cache": False}).program.replace_constant(name, w)


def test_stepper_reads_values_in_order(tmp_path: Path) -> None:
    zoo = _zoo()
    path, _ = zoo.export("mlp", tmp_path / "mlp.onnx")
    model = onnx.load(path)
    relu = next(n.output[0] for n in model.graph.node if n.op_type == "Relu")
    feeds = zoo.sample_inputs("mlp", 3)
    s = zeroskip.load(path, options={"reference": True, "cache": False})
    st = s.stepper(feeds)
    np.testing.assert_array_equal(st.value("input").numpy(), feeds["input"])
    got = st.value(relu).numpy()
    assert got.shape == (3, 512)
    assert (got >= 0).all()
    out = st.value(model.graph.output[0].name).numpy()
    np.testing.assert_allclose(out, s.run(feeds)[model.graph.output[0].name], rtol=1e-6)
    with pytest.raises(InputError, match="no value named"):
        st.value("nope")
