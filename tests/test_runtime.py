"""The loader, passes, planner and session API, checked against onnx's ReferenceEvaluator."""

from __future__ import annotations

import math
import threading
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
torch = pytest.importorskip("torch")

import zeroskip  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402
from zeroskip.errors import InputError, ModelError, UnsupportedOpError  # noqa: E402

F = TensorProto.FLOAT


def make(nodes, inputs, outputs, inits=(), opset=17, sparse=()):
    g = helper.make_graph(
        nodes, "g", inputs, outputs, initializer=list(inits), sparse_initializer=list(sparse)
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def reference(model, feeds):
    return ReferenceEvaluator(model).run(None, feeds)


def vi(name, shape, t=F):
    return helper.make_tensor_value_info(name, t, shape)


def mlp_model(rng):
    w1 = rng.standard_normal((8, 16)).astype(np.float32)
    w2 = rng.standard_normal((16, 4)).astype(np.float32)
    b = rng.standard_normal(16).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"]),
        helper.make_node("Add", ["h", "b"], ["hb"]),
        helper.make_node("Relu", ["hb"], ["r"]),
        helper.make_node("MatMul", ["r", "w2"], ["y"]),
        helper.make_node("Sigmoid", ["h"], ["unused"]),  # dead: nothing reads it
    ]
    inits = [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (w2, "w2"), (b, "b"))]
    return make(nodes, [vi("x", ["batch", 8])], [vi("y", ["batch", 4])], inits)


def test_mlp_matches_reference_over_changing_batches(rng):
    model = mlp_model(rng)
    s = zeroskip.load(model)
    assert s.stats["dead"] == 1
    for batch in (1, 5, 1, 5, 3):
        x = rng.standard_normal((batch, 8)).astype(np.float32)
        (want,) = reference(model, {"x": x})
        got = s.run({"x": x})["y"]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert len(s.program._plans) == 3


def test_outputs_are_not_overwritten_by_the_next_run(rng):
    model = mlp_model(rng)
    s = zeroskip.load(model)
    xs = [rng.standard_normal((2, 8)).astype(np.float32) for _ in range(4)]
    outs = [s.run({"x": x})["y"] for x in xs]
    for x, got in zip(xs, outs):
        np.testing.assert_allclose(got, reference(model, {"x": x})[0], rtol=1e-5, atol=1e-5)


def test_a_refilled_or_reshaped_input_array_is_read_afresh(rng):
    """The session keeps the tensor it made of the last input array: the same array refilled in place,
    reshaped in place (another batch), or another array each give that run's numbers."""
    model = mlp_model(rng)
    s = zeroskip.load(model)
    x = rng.standard_normal((6, 8)).astype(np.float32)
    for step in range(4):
        if step == 1:
            x[...] = rng.standard_normal((6, 8))
        elif step == 2:
            x.shape = (3, 16)  # not the model's shape: refused, then restored
            with pytest.raises(InputError):
                s.run({"x": x})
            x.shape = (2, 3, 8)
            with pytest.raises(InputError):
                s.run({"x": x})
            x.shape = (6, 8)
            x *= -1.0
        elif step == 3:
            x = rng.standard_normal((6, 8)).astype(np.float32)
        (want,) = reference(model, {"x": x})
        np.testing.assert_allclose(s.run({"x": x})["y"], want, rtol=1e-4, atol=1e-4)
    big = rng.standard_normal((12, 8)).astype(np.float32)
    view = big[:6]  # a view: a new array object over the same memory
    (want,) = reference(model, {"x": view})
    np.testing.assert_allclose(s.run({"x": view})["y"], want, rtol=1e-4, atol=1e-4)
    big.shape = (6, 16)
    big.shape = (12, 8)
    (want,) = reference(model, {"x": big})
    np.testing.assert_allclose(s.run({"x": big})["y"], want, rtol=1e-4, atol=1e-4)


def test_buffers_are_reused_and_correct(rng):
    # A chain of 12 elementwise steps needs two buffers, not twelve.
    nodes, prev = [], "x"
    for i in range(12):
        op = ("Add", "Mul", "Sub")[i % 3]
        nodes.append(helper.make_node(op, [prev, "c"], [f"t{i}"]))
        prev = f"t{i}"
    nodes.append(helper.make_node("Tanh", [prev], ["y"]))
    c = numpy_helper.from_array(np.float32([0.5, -0.25, 1.5]), "c")
    model = make(nodes, [vi("x", ["n", 3])], [vi("y", ["n", 3])], [c])
    s = zeroskip.load(model, options={"min_buffer_bytes": 0})  # pool even these tiny outputs
    for _ in range(3):
        x = rng.standard_normal((4, 3)).astype(np.float32)
        np.testing.assert_allclose(s.run({"x": x})["y"], reference(model, {"x": x})[0], rtol=1e-5, atol=1e-6)
    plan = s.program.plan_for([torch.from_numpy(x)])
    assert plan is not None
    assert plan.buffers <= 2, plan.source


def test_shape_subgraph_is_folded_per_signature(rng):
    # y = reshape(x, [shape(x)[0], -1]) @ w : the Shape/Gather/Concat chain must vanish from the plan.
    w = rng.standard_normal((12, 2)).astype(np.float32)
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
        helper.make_node("Unsqueeze", ["n", "axes"], ["n1"]),
        helper.make_node("Concat", ["n1", "minus1"], ["shape"], axis=0),
        helper.make_node("Reshape", ["x", "shape"], ["x2"]),
        helper.make_node("MatMul", ["x2", "w"], ["y"]),
    ]
    inits = [
        numpy_helper.from_array(np.array(0, np.int64), "zero"),
        numpy_helper.from_array(np.array([0], np.int64), "axes"),
        numpy_helper.from_array(np.array([-1], np.int64), "minus1"),
        numpy_helper.from_array(w, "w"),
    ]
    model = make(nodes, [vi("x", ["n", 3, 4])], [vi("y", ["n", 2])], inits)
    s = zeroskip.load(model)
    for n in (2, 7, 2):
        x = rng.standard_normal((n, 3, 4)).astype(np.float32)
        np.testing.assert_allclose(s.run({"x": x})["y"], reference(model, {"x": x})[0], rtol=1e-5, atol=1e-5)
    plan = s.program.plan_for([torch.from_numpy(x)])
    assert plan.steps == 2, plan.source  # Reshape + MatMul


def test_constants_fold_at_load():
    nodes = [
        helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(np.float32([1, 2, 3]))),
        helper.make_node("Mul", ["c", "c"], ["c2"]),
        helper.make_node("Add", ["x", "c2"], ["y"]),
    ]
    model = make(nodes, [vi("x", [3])], [vi("y", [3])])
    s = zeroskip.load(model)
    assert s.stats["folded"] == 2
    np.testing.assert_array_equal(s.run({"x": np.ones(3, np.float32)})["y"], [2, 5, 10])


def test_batchnorm_folds_into_conv(rng):
    c = 4
    w = rng.standard_normal((c, 3, 3, 3)).astype(np.float32)
    params = [rng.standard_normal(c).astype(np.float32) for _ in range(3)] + [
        rng.uniform(0.5, 2, c).astype(np.float32)
    ]
    names = ["scale", "bias", "mean", "var"]
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["h"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["h", *names], ["y"], epsilon=1e-3),
    ]
    inits = [numpy_helper.from_array(w, "w")] + [numpy_helper.from_array(p, n) for p, n in zip(params, names)]
    model = make(nodes, [vi("x", [1, 3, 8, 8])], [vi("y", [1, c, 8, 8])], inits)
    s = zeroskip.load(model)
    assert s.stats["bn_folded"] == 1
    assert [n.op_type for n in s.graph.nodes] == ["Conv"]
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(s.run({"x": x})["y"], reference(model, {"x": x})[0], rtol=1e-4, atol=1e-4)


def sparse_model(w, idx, vals=None):
    k, n = w.shape
    vals = w.reshape(-1)[idx] if vals is None else vals
    st = helper.make_sparse_tensor(
        numpy_helper.from_array(vals.astype(np.float32), "w"),
        numpy_helper.from_array(idx.astype(np.int64)),
        [k, n],
    )
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"])]
    return make(nodes, [vi("x", ["b", k])], [vi("y", ["b", n])], sparse=[st])


def test_sparse_initializer_is_read_as_csr(rng):
    w = rng.standard_normal((16, 6)).astype(np.float32)
    w[rng.random(w.shape) < 0.8] = 0
    idx = np.flatnonzero(w)
    s = zeroskip.load(sparse_model(w, idx))
    (wv,) = [v for n in s.graph.nodes for v in n.inputs if v is not None and v.sparse is not None]
    assert wv.sparse is not None
    assert wv.sparse.nnz == idx.size
    x = rng.standard_normal((3, 16)).astype(np.float32)
    np.testing.assert_allclose(s.run({"x": x})["y"], x @ w, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("out_of_range", "outside|out of range"),
        ("unsorted", "strictly increasing|sorted"),
        ("repeated", "strictly increasing|sorted"),
    ],
)
def test_sparse_initializer_bad_indices(rng, change, message):
    from zeroskip.onnx_import import to_graph

    w = rng.standard_normal((4, 4)).astype(np.float32)
    idx = np.array([1, 5, 9, 12])
    if change == "out_of_range":
        idx[-1] = 16
    elif change == "unsorted":
        idx[[1, 2]] = idx[[2, 1]]
    else:
        idx[2] = idx[1]
    model = sparse_model(w, idx, vals=np.ones(4, np.float32))
    with pytest.raises(ModelError, match=message):
        zeroskip.load(model)
    with pytest.raises(ModelError, match=message.split("|")[0]):
        to_graph(model)  # zeroskip's own check, behind onnx's checker


def test_external_data(tmp_path, rng):
    model = mlp_model(rng)
    x = rng.standard_normal((2, 8)).astype(np.float32)
    (want,) = reference(model, {"x": x})
    path = tmp_path / "m.onnx"
    onnx.save_model(
        model,
        path,
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="m.data",
        size_threshold=0,
    )
    np.testing.assert_allclose(zeroskip.load(path).run({"x": x})["y"], want, rtol=1e-5, atol=1e-5)
    with pytest.raises(ModelError, match="from its path"):
        zeroskip.load(path.read_bytes())
    (tmp_path / "m.data").unlink()
    with pytest.raises(ModelError, match="external"):
        zeroskip.load(path)


def test_bad_files(tmp_path, rng):
    good = mlp_model(rng).SerializeToString()
    cases = {
        "missing.onnx": None,
        "empty.onnx": b"",
        "garbage.onnx": bytes(rng.integers(0, 256, 4000, dtype=np.uint8)),
        "truncated.onnx": good[: len(good) // 2],
        "text.onnx": b"this is not a model\n" * 20,
    }
    for name, data in cases.items():
        p = tmp_path / name
        if data is not None:
            p.write_bytes(data)
        with pytest.raises(ModelError, match=name.replace(".", r"\.")):
            zeroskip.load(p)
    with pytest.raises(ModelError):
        zeroskip.load(b"\x08\x07garbage")
    with pytest.raises(ModelError, match="takes a path"):
        zeroskip.load(12)


def test_unknown_ops_are_listed_with_their_nodes():
    nodes = [
        helper.make_node("FancyOp", ["x"], ["a"], name="first", domain="com.example"),
        helper.make_node("FancyOp", ["a"], ["b"], name="second", domain="com.example"),
        helper.make_node("Relu", ["b"], ["y"]),
    ]
    g = helper.make_graph(nodes, "g", [vi("x", [2])], [vi("y", [2])])
    model = helper.make_model(
        g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)]
    )
    with pytest.raises(UnsupportedOpError, match=r"FancyOp.*'first', 'second'"):
        zeroskip.load(model)


def test_unsupported_attribute_names_the_node():
    nodes = [helper.make_node("Relu", ["x"], ["y"], name="r1", bogus=3)]
    model = make(nodes, [vi("x", [2])], [vi("y", [2])])
    with pytest.raises(ModelError, match=r"bogus.*r1"):
        zeroskip.load(model)


def test_bad_feeds(rng):
    s = zeroskip.load(mlp_model(rng))
    x = rng.standard_normal((2, 8)).astype(np.float32)
    with pytest.raises(InputError, match=r"missing input\(s\) \['x'\]"):
        s.run({})
    with pytest.raises(InputError, match="unknown input"):
        s.run({"x": x, "z": x})
    with pytest.raises(InputError, match="dtype float64"):
        s.run({"x": x.astype(np.float64)})
    with pytest.raises(InputError, match="rank 1"):
        s.run({"x": x[0]})
    with pytest.raises(InputError, match="dimension 1 is 7"):
        s.run({"x": x[:, :7]})
    with pytest.raises(InputError, match="mapping"):
        s.run([x])


def test_runtime_failure_names_the_node(rng):
    w = numpy_helper.from_array(rng.standard_normal((8, 4)).astype(np.float32), "w")
    model = make(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
        [vi("x", ["b", "k"])],
        [vi("y", ["b", 4])],
        [w],
    )
    s = zeroskip.load(model)
    with pytest.raises(InputError, match=r"node 'mm' \(MatMul"):
        s.run({"x": np.ones((2, 5), np.float32)})
    np.testing.assert_allclose(
        s.run({"x": np.ones((2, 8), np.float32)})["y"], np.ones((2, 8)) @ numpy_helper.to_array(w), rtol=1e-5
    )


def test_torch_in_torch_out(rng):
    model = mlp_model(rng)
    s = zeroskip.load(model)
    x = torch.from_numpy(rng.standard_normal((3, 8)).astype(np.float32))
    y = s.run({"x": x}, return_torch=True)["y"]
    assert isinstance(y, torch.Tensor)
    np.testing.assert_allclose(y.numpy(), reference(model, {"x": x.numpy()})[0], rtol=1e-5, atol=1e-5)


def test_inference_session_api(tmp_path, rng):
    model = mlp_model(rng)
    path = tmp_path / "m.onnx"
    onnx.save_model(model, path)
    opts = zeroskip.SessionOptions()
    opts.intra_op_num_threads = 1
    s = zeroskip.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    (i,) = s.get_inputs()
    (o,) = s.get_outputs()
    assert (i.name, i.type, i.shape) == ("x", "tensor(float)", ["batch", 8])
    assert (o.name, o.type, o.shape) == ("y", "tensor(float)", ["batch", 4])
    x = rng.standard_normal((2, 8)).astype(np.float32)
    (y,) = s.run(None, {"x": x})
    (y2,) = s.run(["y"], {"x": x})
    np.testing.assert_allclose(y, reference(model, {"x": x})[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(y, y2)
    with pytest.raises(InputError, match="unknown output"):
        s.run(["nope"], {"x": x})
    with pytest.raises(InputError, match="CUDAExecutionProvider"):
        zeroskip.InferenceSession(str(path), providers=["CUDAExecutionProvider"])


def test_runtime_module_and_session_info(rng):
    from zeroskip import runtime

    s = runtime.load(mlp_model(rng))
    assert [(v.name, v.dtype, v.shape) for v in s.inputs] == [("x", np.dtype(np.float32), ("batch", 8))]
    assert [(v.name, v.shape) for v in s.outputs] == [("y", ("batch", 4))]


def test_concurrent_runs_match_serial(rng):
    model = mlp_model(rng)
    s = zeroskip.load(model)
    xs = [rng.standard_normal((b, 8)).astype(np.float32) for b in (1, 2, 3, 4) * 5]
    serial = [s.run({"x": x})["y"] for x in xs]
    results: dict[int, np.ndarray] = {}

    def work(k: int) -> None:
        for j in range(k, len(xs), 4):
            results[j] = s.run({"x": xs[j]})["y"]

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for j, want in enumerate(serial):
        np.testing.assert_array_equal(results[j], want)


def test_graph_outputs_that_are_inputs_or_constants_are_copies():
    c = numpy_helper.from_array(np.float32([1, 2]), "c")
    nodes = [helper.make_node("Identity", ["x"], ["y"]), helper.make_node("Identity", ["c"], ["z"])]
    model = make(nodes, [vi("x", [2])], [vi("y", [2]), vi("z", [2])], [c])
    s = zeroskip.load(model)
    x = np.float32([5, 6])
    for _ in range(2):
        out = s.run({"x": x})
        out["y"][:] = 0
        out["z"][:] = 0
    np.testing.assert_array_equal(x, [5, 6])
    np.testing.assert_array_equal(s.run({"x": x})["z"], [1, 2])


def test_cycle_is_a_model_error():
    nodes = [helper.make_node("Relu", ["b"], ["a"]), helper.make_node("Relu", ["a"], ["b"])]
    g = helper.make_graph(nodes, "g", [vi("x", [2])], [vi("b", [2])])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(ModelError):
        zeroskip.load(model.SerializeToString())


def test_path_objects_and_strings(tmp_path, rng):
    model = mlp_model(rng)
    p = Path(tmp_path) / "m.onnx"
    onnx.save_model(model, p)
    x = rng.standard_normal((1, 8)).astype(np.float32)
    a = zeroskip.load(p).run({"x": x})["y"]
    b = zeroskip.load(str(p)).run({"x": x})["y"]
    np.testing.assert_array_equal(a, b)


def _fused_ops(model):
    return [n.op_type for n in zeroskip.load(model).graph.nodes]


def test_linear_fusion_matmul_add_relu(rng):
    w = numpy_helper.from_array(rng.standard_normal((8, 6)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal((6,)).astype(np.float32), "b")
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"]),
        helper.make_node("Add", ["b", "h"], ["hb"]),
        helper.make_node("Relu", ["hb"], ["y"]),
    ]
    model = make(nodes, [vi("x", ["b", "s", 8])], [vi("y", ["b", "s", 6])], [w, b])
    assert _fused_ops(model) == ["Linear"]
    s = zeroskip.load(model)
    for shape in ((2, 3, 8), (1, 1, 8), (2, 3, 8)):
        x = rng.standard_normal(shape).astype(np.float32)
        np.testing.assert_allclose(s.run({"x": x})["y"], reference(model, {"x": x})[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("trans_b", [0, 1])
def test_linear_fusion_gemm(rng, trans_b):
    wshape = (6, 8) if trans_b else (8, 6)
    w = numpy_helper.from_array(rng.standard_normal(wshape).astype(np.float32), "w")
    c = numpy_helper.from_array(rng.standard_normal((1, 6)).astype(np.float32), "c")
    nodes = [
        helper.make_node("Gemm", ["x", "w", "c"], ["h"], transB=trans_b),
        helper.make_node("Relu", ["h"], ["y"]),
    ]
    model = make(nodes, [vi("x", ["b", 8])], [vi("y", ["b", 6])], [w, c])
    assert _fused_ops(model) == ["Linear"]
    x = rng.standard_normal((4, 8)).astype(np.float32)
    np.testing.assert_allclose(
        zeroskip.load(model).run({"x": x})["y"], reference(model, {"x": x})[0], rtol=1e-5, atol=1e-5
    )


def test_gemm_with_full_c_is_not_fused(rng):
    w = numpy_helper.from_array(rng.standard_normal((8, 6)).astype(np.float32), "w")
    c = numpy_helper.from_array(rng.standard_normal((4, 6)).astype(np.float32), "c")
    model = make(
        [helper.make_node("Gemm", ["x", "w", "c"], ["y"])], [vi("x", [4, 8])], [vi("y", [4, 6])], [w, c]
    )
    assert _fused_ops(model) == ["Gemm"]


def _gelu_model(kind, extra_use=False):
    c = {
        k: numpy_helper.from_array(np.float32(v), k)
        for k, v in {
            "half": 0.5,
            "one": 1.0,
            "sqrt2": np.sqrt(2.0),
            "k": 0.044715,
            "s": np.sqrt(2 / np.pi),
        }.items()
    }
    if kind == "erf":
        nodes = [
            helper.make_node("Div", ["x", "sqrt2"], ["d"]),
            helper.make_node("Erf", ["d"], ["e"]),
            helper.make_node("Add", ["e", "one"], ["a"]),
            helper.make_node("Mul", ["x", "a"], ["m"]),
            helper.make_node("Mul", ["m", "half"], ["y"]),
        ]
    else:
        nodes = [
            helper.make_node("Mul", ["x", "x"], ["x2"]),
            helper.make_node("Mul", ["x", "x2"], ["x3"]),
            helper.make_node("Mul", ["k", "x3"], ["kx3"]),
            helper.make_node("Add", ["x", "kx3"], ["inner"]),
            helper.make_node("Mul", ["s", "inner"], ["si"]),
            helper.make_node("Tanh", ["si"], ["t"]),
            helper.make_node("Add", ["one", "t"], ["a"]),
            helper.make_node("Mul", ["x", "a"], ["m"]),
            helper.make_node("Mul", ["half", "m"], ["y"]),
        ]
    outputs = [vi("y", ["n", 5])]
    if extra_use:
        outputs.append(vi("a", ["n", 5]))
    return make(nodes, [vi("x", ["n", 5])], outputs, list(c.values()))


@pytest.mark.parametrize("kind", ["erf", "tanh"])
def test_gelu_fusion(rng, kind):
    model = _gelu_model(kind)
    assert _fused_ops(model) == ["Gelu"]
    x = (3 * rng.standard_normal((3, 5))).astype(np.float32)
    np.testing.assert_allclose(
        zeroskip.load(model).run({"x": x})["y"], reference(model, {"x": x})[0], rtol=1e-5, atol=1e-6
    )
    # An intermediate that is also a graph output blocks the fusion; results stay right.
    model = _gelu_model(kind, extra_use=True)
    assert "Gelu" not in _fused_ops(model)
    got = zeroskip.load(model).run({"x": x})
    for name, want in zip(("y", "a"), reference(model, {"x": x})):
        np.testing.assert_allclose(got[name], want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["erf", "tanh", "onnx-erf", "onnx-tanh"])
@pytest.mark.parametrize("sparse", ["off", "force-csr"])
def test_linear_gelu_fusion(rng, tmp_path, kind, sparse):
    """MatMul + Add + GELU (the exported erf or tanh chain, or ONNX's Gelu) becomes one Linear with a GELU
    activation, on torch or in the sparse kernel's epilogue; results match the reference."""
    w = rng.standard_normal((6, 5)).astype(np.float32)
    w[np.abs(w) < 0.8] = 0.0
    inits = [
        numpy_helper.from_array(w, "w"),
        numpy_helper.from_array(rng.standard_normal(5).astype(np.float32), "b"),
    ]
    head = [helper.make_node("MatMul", ["x0", "w"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["x"])]
    if kind.startswith("onnx"):
        form = "tanh" if kind.endswith("tanh") else "none"
        nodes, opset = [helper.make_node("Gelu", ["x"], ["y"], approximate=form)], 20
    else:
        chain = _gelu_model(kind)
        nodes, opset = list(chain.graph.node), 17
        inits += list(chain.graph.initializer)
    model = make(head + nodes, [vi("x0", ["n", 6])], [vi("y", ["n", 5])], inits, opset=opset)
    s = zeroskip.load(model, options={"sparse": sparse, "cache": str(tmp_path), "progress": False})
    assert s.stats["linear_gelu"] == 1
    assert [n.op_type for n in s.graph.nodes] == ["Linear"]
    for m in (1, 9):
        x = (2 * rng.standard_normal((m, 6))).astype(np.float32)
        np.testing.assert_allclose(
            s.run({"x0": x})["y"], reference(model, {"x0": x})[0], rtol=1e-5, atol=1e-5
        )
    winners = {r["winner"].partition("/")[0] for r in s.report().rows}
    assert winners == ({"csr"} if sparse == "force-csr" else {"dense"})


def test_attention_score_scale_moves_into_the_q_weights(rng):
    # scores = (reshape(x @ wq + bq) @ k) / 4, with a Shape reader of q on the side (as torch exports)
    wq = numpy_helper.from_array(rng.standard_normal((8, 8)).astype(np.float32), "wq")
    bq = numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "bq")
    four = numpy_helper.from_array(np.float32(4.0), "four")
    shape = numpy_helper.from_array(np.array([0, 2, 4], np.int64), "shape")
    nodes = [
        helper.make_node("MatMul", ["x", "wq"], ["q0"]),
        helper.make_node("Add", ["q0", "bq"], ["q"]),
        helper.make_node("Shape", ["q"], ["qs"]),
        helper.make_node("Reshape", ["q", "shape"], ["q2"]),
        helper.make_node("MatMul", ["q2", "k"], ["s"]),
        helper.make_node("Div", ["s", "four"], ["y"]),
    ]
    model = make(
        nodes,
        [vi("x", ["b", 8]), vi("k", ["b", 4, 3])],
        [vi("y", ["b", 2, 3]), vi("qs", [2], TensorProto.INT64)],
        [wq, bq, four, shape],
    )
    s = zeroskip.load(model)
    assert s.stats["scale_folded"] == 1
    assert "Div" not in [n.op_type for n in s.graph.nodes]
    feeds = {
        "x": rng.standard_normal((3, 8)).astype(np.float32),
        "k": rng.standard_normal((3, 4, 3)).astype(np.float32),
    }
    for _ in range(2):
        got = s.run(feeds)
        want = reference(model, feeds)
        np.testing.assert_allclose(got["y"], want[0], rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(got["qs"], want[1])


def _attention_model(scale_op="Div", mask="add", rank=4, softmax_axis=-1, opset=17, extra_use=False, dtype=F):
    """Attention's core as exported: s = q @ kt [/ or * c] [+ mask]; y = softmax(s) @ v."""
    b, h, sq, sk, d = ("b", 3, 5, 6, 4) if rank == 4 else ("b", None, 5, 6, 4)
    lead = [b, h] if rank == 4 else [b]
    c = numpy_helper.from_array(np.array(2.0, np.float32 if dtype == F else np.float64), "c")
    nodes = [helper.make_node("MatMul", ["q", "kt"], ["s0"])]
    last = "s0"
    if scale_op:
        nodes.append(helper.make_node(scale_op, [last, "c"], ["s1"]))
        last = "s1"
    inputs = [vi("q", [*lead, sq, d], dtype), vi("kt", [*lead, d, sk], dtype), vi("v", [*lead, sk, 3], dtype)]
    if mask:
        pair = [last, "m"] if mask == "add" else ["m", last]
        nodes.append(helper.make_node("Add", pair, ["s2"]))
        inputs.append(vi("m", [b, *([1] if rank == 4 else []), 1, sk], dtype))
        last = "s2"
    axis = {} if softmax_axis is None else {"axis": softmax_axis}
    nodes += [
        helper.make_node("Softmax", [last], ["p"], **axis),
        helper.make_node("MatMul", ["p", "v"], ["y"]),
    ]
    outputs = [vi("y", [*lead, sq, 3], dtype)]
    if extra_use:
        outputs.append(vi("p", [*lead, sq, sk], dtype))
    return make(nodes, inputs, outputs, [c] if scale_op else [], opset=opset)


def _attention_feeds(model, rng):
    feeds = {}
    for i in model.graph.input:
        shape = [d.dim_value or 2 for d in i.type.tensor_type.shape.dim]
        a = rng.standard_normal(shape)
        if i.name == "m":
            a = np.where(rng.random(shape) < 0.3, -1e4, 0.0)
        dt = np.float32 if i.type.tensor_type.elem_type == F else np.float64
        feeds[i.name] = a.astype(dt)
    return feeds


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"scale_op": "Mul", "mask": "add_swapped"},
        {"scale_op": "", "mask": ""},
        {"rank": 3},
        {"softmax_axis": 3},
        {"softmax_axis": 3, "opset": 11},
        {"softmax_axis": None, "opset": 11, "rank": 3},  # opset 11's default axis 1: not the last of 3
        {"softmax_axis": 2},
        {"extra_use": True},
        {"dtype": TensorProto.DOUBLE},
    ],
    ids=repr,
)
def test_attention_fusion(rng, kw):
    """The attention core becomes one zeroskip::Attention node exactly when the softmax is over the last
    axis, the intermediates are private and the scores are float32; results match onnxruntime's."""
    model = _attention_model(**kw)
    should = (
        kw.get("softmax_axis", -1) in (-1, 3)
        and not kw.get("extra_use")
        and kw.get("dtype", F) == F
        and not (kw.get("opset") == 11 and kw.get("softmax_axis", -1) is None)
    )
    s = zeroskip.load(model)
    assert s.stats["attention"] == (1 if should else 0)
    assert ("Attention" in _fused_ops(model)) == should
    feeds = _attention_feeds(model, rng)
    got = s.run(feeds)
    # onnxruntime, not the ReferenceEvaluator: onnx's evaluator takes opset-11 Softmax over one axis,
    # not over the flattened trailing dims the spec says.
    ort = pytest.importorskip("onnxruntime")
    want_all = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, feeds
    )
    for o, want in zip(model.graph.output, want_all):
        np.testing.assert_allclose(got[o.name], want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("b_shape", "axis", "bias", "extra_use", "fused"),
    [
        ([2, 5, 8], -1, True, False, True),
        ([2, 5, 8], 2, False, False, True),
        ([8], -1, True, False, True),  # a broadcast residual: fused, run as the two ops
        ([2, 5, 8], 1, True, False, False),  # normalises over two axes
        ([2, 5, 8], -1, True, True, False),  # the sum is also a graph output
    ],
)
def test_add_layernorm_fusion(rng, b_shape, axis, bias, extra_use, fused):
    scale = numpy_helper.from_array(
        rng.standard_normal(8 if axis != 1 else (5, 8)).astype(np.float32), "scale"
    )
    inits = [scale]
    ins = ["z", "scale"]
    if bias:
        inits.append(numpy_helper.from_array(rng.standard_normal(scale.dims).astype(np.float32), "bias"))
        ins.append("bias")
    nodes = [
        helper.make_node("Add", ["a", "b"], ["z"]),
        helper.make_node("LayerNormalization", ins, ["y"], axis=axis, epsilon=1e-3),
    ]
    outputs = [vi("y", [2, 5, 8])] + ([vi("z", [2, 5, 8])] if extra_use else [])
    model = make(nodes, [vi("a", [2, 5, 8]), vi("b", b_shape)], outputs, inits)
    s = zeroskip.load(model)
    assert s.stats["add_layernorm"] == int(fused)
    feeds = {
        "a": (rng.standard_normal((2, 5, 8)) * 4 + 3).astype(np.float32),
        "b": rng.standard_normal(b_shape).astype(np.float32),
    }
    got = s.run(feeds)
    for o, want in zip(model.graph.output, reference(model, feeds)):
        np.testing.assert_allclose(got[o.name], want, rtol=1e-5, atol=1e-5)


def test_attention_bound_at_plan_time_matches_the_op(rng):
    """The runner bound for a signature gives the op's numbers: a scalar mask, a 3-D signature, and a
    mask whose shape the signature did not record (run the general way)."""
    from zeroskip.ops.fused import Attention, _attention_prepare

    q, kt, v = (
        torch.from_numpy(rng.standard_normal(s).astype(np.float32)) for s in ((2, 5, 4), (2, 4, 6), (2, 6, 3))
    )
    shapes = [tuple(q.shape), tuple(kt.shape), tuple(v.shape)]
    for mask, mask_shape in ((torch.tensor(0.5), ()), (torch.zeros(2, 1, 6), None), (None, None)):
        step = _attention_prepare([*shapes, mask_shape], [None] * 4, scale=2.0, scale_op="div")
        assert step is not None
        want = Attention(q, kt, v, mask, 2.0, "div")
        np.testing.assert_allclose(step(q, kt, v, mask), want, rtol=1e-5, atol=1e-6)


def test_attention_op_falls_back_to_torch_off_the_kernel(rng):
    """Operands the kernel does not take (a mask that widens the scores, leading dims that broadcast)
    run the same steps on torch."""
    from zeroskip.ops.fused import Attention

    q, kt, v = (
        torch.from_numpy(rng.standard_normal(s).astype(np.float32)) for s in ((2, 5, 4), (2, 4, 6), (2, 6, 3))
    )
    for mask, qq in ((torch.zeros(3, 2, 5, 6), q), (None, q[:1])):
        want = torch.softmax(torch.matmul(qq, kt) / 2.0 + (0 if mask is None else mask), -1) @ v
        np.testing.assert_allclose(Attention(qq, kt, v, mask, 2.0, "div"), want, rtol=1e-5, atol=1e-6)
    got = Attention(q, kt, v, torch.zeros(2, 1, 6), 0.5, "mul")
    np.testing.assert_allclose(got, torch.softmax(torch.matmul(q, kt) * 0.5, -1) @ v, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("act", "opset"), [("Relu", 17), ("Clip", 17), ("Clip", 9), ("ClipLow", 17)])
@pytest.mark.parametrize(
    ("shape", "group", "pads", "stride"),
    [((1, 8, 9, 9), 1, 1, 1), ((2, 8, 12, 12), 8, 1, 2), ((1, 3, 5, 5), 1, 0, 1)],
)
def test_conv_activation_fusion(rng, act, opset, shape, group, pads, stride):
    cin = shape[1]
    w = numpy_helper.from_array(rng.standard_normal((8, cin // group, 3, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "b")
    inits = [w, b]
    conv = helper.make_node(
        "Conv", ["x", "w", "b"], ["c"], pads=[pads] * 4, strides=[stride] * 2, group=group
    )
    if act == "Relu":
        tail = helper.make_node("Relu", ["c"], ["y"])
    elif opset < 11:
        tail = helper.make_node("Clip", ["c"], ["y"], min=0.0, max=6.0)
    elif act == "Clip":
        inits += [
            numpy_helper.from_array(np.float32(0.0), "lo"),
            numpy_helper.from_array(np.float32(6.0), "hi"),
        ]
        tail = helper.make_node("Clip", ["c", "lo", "hi"], ["y"])
    else:
        inits += [numpy_helper.from_array(np.float32(-0.5), "lo")]
        tail = helper.make_node("Clip", ["c", "lo"], ["y"])
    model = make(
        [conv, tail],
        [vi("x", ["n", cin, shape[2], shape[3]])],
        [vi("y", ["n", 8, "h", "w"])],
        inits,
        opset=opset,
    )
    s = zeroskip.load(model)
    assert [n.op_type for n in s.graph.nodes] == ["Conv"]
    assert s.graph.nodes[0].fused_from == ["Conv", act.replace("Low", "")]
    x = rng.standard_normal(shape).astype(np.float32)
    (want,) = reference(model, {"x": x})
    for _ in range(3):  # the traced run, then the compiled plan (which may take oneDNN's fused path)
        np.testing.assert_allclose(s.run({"x": x})["y"], want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("act", ["", "Relu", "Clip"])
@pytest.mark.parametrize(
    ("residual", "bias", "swap"), [("r", True, False), ("x", False, True), ("r", False, True)]
)
def test_conv_residual_fusion(rng, act, residual, bias, swap):
    """Conv -> Add(r) [-> Relu / Clip] is one zeroskip::Conv step (r a graph input or the conv's own
    input, either side of the Add, with and without a bias); its results match the reference on the
    traced run and the compiled plan, whatever kernel the tuner kept."""
    inits = [numpy_helper.from_array((rng.standard_normal((8, 8, 3, 3)) / 8).astype(np.float32), "w")]
    if bias:
        inits.append(numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "b"))
    nodes = [helper.make_node("Conv", ["x", "w", "b"] if bias else ["x", "w"], ["c"], pads=[1] * 4)]
    nodes.append(helper.make_node("Add", [residual, "c"] if swap else ["c", residual], ["s" if act else "y"]))
    if act == "Relu":
        nodes.append(helper.make_node("Relu", ["s"], ["y"]))
    elif act == "Clip":
        inits += [
            numpy_helper.from_array(np.float32(-0.5), "lo"),
            numpy_helper.from_array(np.float32(0.5), "hi"),
        ]
        nodes.append(helper.make_node("Clip", ["s", "lo", "hi"], ["y"]))
    inputs = [vi("x", ["n", 8, 10, 10])] + ([vi("r", ["n", 8, 10, 10])] if residual == "r" else [])
    model = make(nodes, inputs, [vi("y", ["n", 8, 10, 10])], inits)
    s = zeroskip.load(model)
    assert [n.op_type for n in s.graph.nodes] == ["Conv"]
    assert s.graph.nodes[0].fused_from == ["Conv", "Add"] + ([act] if act else [])
    for n in (1, 2):
        feeds = {"x": rng.standard_normal((n, 8, 10, 10)).astype(np.float32)}
        if residual == "r":
            feeds["r"] = rng.standard_normal((n, 8, 10, 10)).astype(np.float32)
        (want,) = reference(model, feeds)
        for _ in range(3):
            np.testing.assert_allclose(s.run(feeds)["y"], want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("split", [False, True])
def test_kernel_steps_on_plan_buffers_run_as_one_chain(rng, split):
    """Consecutive kernel steps reading and writing only the plan's buffers run as one _C.Chain (the
    pools here; the conv too when the tuner keeps a kernel of ours): same numbers as the reference for
    new inputs and batch sizes, run after run; a torch step between them splits the chain; profile()
    still times every step."""
    w = (rng.standard_normal((8, 4, 3, 3)) / 6).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1] * 4),
        helper.make_node("MaxPool", ["c"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("AveragePool", ["p1"], ["p2" if split else "m"], kernel_shape=[3, 3], pads=[1] * 4),
        *([helper.make_node("Sigmoid", ["p2"], ["m"])] if split else []),
        helper.make_node("MaxPool", ["m"], ["p3"], kernel_shape=[3, 3], strides=[1, 1], pads=[1] * 4),
        helper.make_node("AveragePool", ["p3"], ["p4"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("GlobalAveragePool", ["p4"], ["y"]),
    ]
    inits = [numpy_helper.from_array(w, "w")]
    model = make(nodes, [vi("x", ["n", 4, 16, 16])], [vi("y", ["n", 8, 1, 1])], inits)
    s = zeroskip.load(model, options={"min_buffer_bytes": 0, "cache": False})
    for n in (1, 2, 1):
        x = rng.standard_normal((n, 4, 16, 16)).astype(np.float32)
        (want,) = reference(model, {"x": x})
        for _ in range(3):
            np.testing.assert_allclose(s.run({"x": x})["y"], want, rtol=1e-5, atol=1e-5)
        plan = s.program.plan_for([torch.from_numpy(x)])
        # The four pools (the global one makes the graph's output, a fresh tensor, not a buffer);
        # Sigmoid runs on torch, so with it they are two chains.
        assert plan.source.count("_chain") == (2 if split else 1)
        assert plan.chained == 4
        rows = plan.profile([torch.from_numpy(x)], repeat=2)
        assert len(rows) == plan.steps
        assert all(t >= 0 for _, t in rows)


@pytest.mark.parametrize(
    ("activation", "lo", "hi"), [("", -np.inf, np.inf), ("relu", 0.0, np.inf), ("clip", -0.5, 0.5)]
)
def test_conv_residual_step_runners(rng, activation, lo, hi):
    """The residual step around each kind of conv runner: the GEMM kernel's own (r in its epilogue) and a
    plain one (r added after); through run and run_out, and with r as the output buffer itself."""
    from zeroskip.ops import cpu_kernels

    w = torch.from_numpy(rng.standard_normal((8, 8, 3, 3)).astype(np.float32) / 8)
    b = torch.from_numpy(rng.standard_normal(8).astype(np.float32))
    x = torch.from_numpy(rng.standard_normal((2, 8, 6, 6)).astype(np.float32))
    r = torch.from_numpy(rng.standard_normal((2, 8, 6, 6)).astype(np.float32))
    want = (torch.nn.functional.conv2d(x, w, b, padding=1) + r).clamp(lo, hi)
    gemm = cpu_kernels.conv_dense_gemm(w, b, (2, 8, 6, 6), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), None)
    if gemm is None:
        pytest.skip("the dense GEMM kernel is not built")
    plain = cpu_kernels._with_out(
        lambda x, *_: torch.nn.functional.conv2d(x, w, b, padding=1),
        lambda out, x, *_: out.copy_(torch.nn.functional.conv2d(x, w, b, padding=1)),
        (2, 8, 6, 6),
    )
    for inner in (gemm, plain):
        step = cpu_kernels.add_residual(inner, lo, hi)
        np.testing.assert_allclose(step(x, w, b, r), want, rtol=1e-5, atol=1e-5)
        out = torch.empty(2, 8, 6, 6)
        step.run_out(out, x, w, b, r)
        np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)
        same = r.clone()
        step.run_out(same, x, w, b, same)
        np.testing.assert_allclose(same, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("lo", "hi"), [(-np.inf, np.inf), (0.0, np.inf), (-0.25, 0.5)])
def test_onednn_conv_residual_matches_torch(rng, lo, hi):
    """oneDNN's conv with the residual as its sum post-op, then the activation: r in either layout."""
    from zeroskip.ops import nn

    w = torch.from_numpy(rng.standard_normal((16, 8, 3, 3)).astype(np.float32))
    b = torch.from_numpy(rng.standard_normal(16).astype(np.float32))
    shape = (2, 8, 10, 10)
    fn = nn._mkldnn_conv(w, b, shape, (1, 1), (1, 1), (1, 1), 1, "", [])
    if fn is None or not hasattr(fn, "with_residual"):
        pytest.skip("this torch build has no oneDNN pointwise convolution with a sum post-op")
    x = torch.from_numpy(rng.standard_normal(shape).astype(np.float32))
    r = torch.from_numpy(rng.standard_normal((2, 16, 10, 10)).astype(np.float32))
    want = (torch.nn.functional.conv2d(x, w, b, 1, 1) + r).clamp(lo, hi)
    before = r.clone()
    step = fn.with_residual(lo, hi)
    for rr in (r, r.contiguous(memory_format=torch.channels_last)):
        got = step(x, w, b, rr)
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(r.numpy(), before.numpy())  # r itself is left as it was


def test_conv_residual_not_fused_where_it_would_change_results(rng):
    """An Add that broadcasts, or a conv output read elsewhere too, stays a separate step."""
    w = numpy_helper.from_array(rng.standard_normal((8, 8, 1, 1)).astype(np.float32), "w")
    r = numpy_helper.from_array(rng.standard_normal((1, 8, 1, 1)).astype(np.float32), "r")
    x = rng.standard_normal((2, 8, 4, 4)).astype(np.float32)
    conv = helper.make_node("Conv", ["x", "w"], ["c"])
    broadcast = make(
        [conv, helper.make_node("Add", ["c", "r"], ["y"])],
        [vi("x", [2, 8, 4, 4])],
        [vi("y", [2, 8, 4, 4])],
        [w, r],
    )
    shared = make(
        [conv, helper.make_node("Add", ["c", "x"], ["y"])],
        [vi("x", [2, 8, 4, 4])],
        [vi("y", [2, 8, 4, 4]), vi("c", [2, 8, 4, 4])],
        [w],
    )
    for model in (broadcast, shared):
        s = zeroskip.load(model)
        assert [n.op_type for n in s.graph.nodes] == ["Conv", "Add"]
        got = s.run({"x": x})
        for name, want in zip([o.name for o in model.graph.output], reference(model, {"x": x})):
            np.testing.assert_allclose(got[name], want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("activation", ["", "relu", "clip"])
def test_onednn_conv_path_matches_torch(rng, activation):
    from zeroskip.ops import nn

    w = torch.from_numpy(rng.standard_normal((16, 4, 3, 3)).astype(np.float32))
    b = torch.from_numpy(rng.standard_normal(16).astype(np.float32))
    shape = (2, 8, 10, 10)
    fn = nn._mkldnn_conv(w, b, shape, (1, 1), (1, 1), (1, 1), 2, activation, [-0.25, 0.5])
    if fn is None:
        pytest.skip("this torch build has no oneDNN pointwise convolution")
    x = torch.from_numpy(rng.standard_normal(shape).astype(np.float32))
    want = torch.nn.functional.conv2d(x, w, b, 1, 1, 1, 2)
    if activation == "relu":
        want = want.relu()
    elif activation == "clip":
        want = want.clamp(-0.25, 0.5)
    np.testing.assert_allclose(fn(x).numpy(), want.numpy(), rtol=1e-4, atol=1e-4)


def test_nchw_kernels_are_offered_beside_onednn_only_for_small_convs(rng):
    """Beside oneDNN's channels-last convs, the NCHW kernels are offered only to convs of few
    multiply-adds (counted with every output channel): a ResNet downsample (1x1 stride 2, 64 -> 128
    on 56x56: 6.4M) took 1.3 ms in the network through the GEMM, copying both its inputs out of
    channels-last, against 0.5 ms through oneDNN."""
    from zeroskip.ops import nn

    def names(cin, cout, hw, stride, group=1, k=1):
        w = torch.from_numpy(rng.standard_normal((cout, cin // group, k, k)).astype(np.float32))
        p = (k - 1) // 2
        offer = nn._conv_prepare(
            [(1, cin, hw, hw), w.shape], [None, w], strides=[stride, stride], group=group, pads=[p] * 4
        )
        return [n for n, _ in offer.dense]

    big = names(64, 128, 56, 2)
    if nn.ONEDNN not in big:
        pytest.skip("this torch build has no oneDNN pointwise convolution")
    assert "dense/gemm" not in big
    assert "dense/gemm" in names(16, 16, 16, 1)  # 65K multiply-adds
    assert "dense/gemm" in names(3, 16, 32, 1, k=3)  # 442K
    assert "dense/gemm" not in names(16, 64, 32, 1, k=3)  # 9.4M
    assert "dense/dwconv" in names(32, 32, 16, 1, group=32)
    assert "dense/dwconv" not in names(96, 96, 112, 1, group=96, k=3)  # 10.8M


def test_channel_vector_gemm_is_offered_to_1x1_convs_on_small_maps(rng):
    """The 1x1 conv GEMM with output channels in the vectors is a candidate for stride-1 unpadded 1x1
    convs on maps of up to 14x14 positions (where it wins), and matches torch's conv in the plan."""
    from zeroskip.ops import cpu_kernels, nn

    def offer(cin, cout, hw, k=1, stride=1):
        w = torch.from_numpy(rng.standard_normal((cout, cin, k, k)).astype(np.float32))
        b = torch.from_numpy(rng.standard_normal(cout).astype(np.float32))
        p = (k - 1) // 2
        token = nn.NCHW_ONLY.set(True)  # as in the plan of NCHW kernels only
        try:
            o = nn._conv_prepare(
                [(2, cin, hw, hw), w.shape, b.shape], [None, w, b], strides=[stride] * 2, pads=[p] * 4
            )
        finally:
            nn.NCHW_ONLY.reset(token)
        return dict(o.dense), w, b

    if not hasattr(cpu_kernels._C, "conv2d_dense"):
        pytest.skip("the dense kernels are not in this build")
    fns, w, b = offer(96, 40, 7)
    assert "dense/gemm-cv" in fns
    x = torch.from_numpy(rng.standard_normal((2, 96, 7, 7)).astype(np.float32))
    want = torch.nn.functional.conv2d(x, w, b)
    np.testing.assert_allclose(fns["dense/gemm-cv"](x).numpy(), want.numpy(), rtol=1e-4, atol=1e-4)
    out = torch.empty(want.shape)
    fns["dense/gemm-cv"].run_out(out, x)
    np.testing.assert_allclose(out.numpy(), want.numpy(), rtol=1e-4, atol=1e-4)
    assert "dense/gemm-cv" in offer(16, 16, 14)[0]
    assert "dense/gemm-cv" not in offer(16, 16, 15)[0]  # 225 positions
    assert "dense/gemm-cv" not in offer(16, 16, 7, k=3)[0]
    assert "dense/gemm-cv" not in offer(16, 16, 7, stride=2)[0]


@pytest.mark.parametrize("rows", [(1,), (3,), (2, 2), (16,)])
@pytest.mark.parametrize(("relu", "with_bias"), [(False, True), (True, True), (False, False)])
def test_small_batch_linear_kernel_matches_torch(rng, rows, relu, with_bias):
    from zeroskip.ops import cpu_kernels

    if not cpu_kernels.available():
        pytest.skip("the dense kernels are not in this build")
    wt = torch.from_numpy(rng.standard_normal((37, 70)).astype(np.float32))
    b = torch.from_numpy(rng.standard_normal(37).astype(np.float32)) if with_bias else None
    fn = cpu_kernels.linear_small(wt, b, (*rows, 70), relu)
    assert fn is not None
    x = torch.from_numpy(rng.standard_normal((*rows, 70)).astype(np.float32))
    want = torch.nn.functional.linear(x, wt, b)
    if relu:
        want = want.relu()
    for xin in (x, x.transpose(0, -1).contiguous().transpose(0, -1)):  # contiguous and strided input
        got = fn(xin)
        assert got.shape == want.shape
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-5)
    assert cpu_kernels.linear_small(wt, b, (17, 70), relu) is None  # too many rows for the kernel


def test_gemv_is_offered_past_four_rows_only_for_weights_that_stay_in_cache():
    """The GEMV kernel reads the weight once per 4 rows: past 4 rows a large weight would come from
    memory several times in a model, which the planner's per-op timing (weight hot) does not see."""
    from zeroskip.ops import cpu_kernels

    if not cpu_kernels.available():
        pytest.skip("the dense kernels are not in this build")
    small = torch.zeros((64, 256))  # 64 KB
    big = torch.zeros((1024, 256))  # 1 MB
    assert big.numel() * 4 > cpu_kernels.GEMV_REREAD_BYTES >= small.numel() * 4
    for rows in (1, 4):
        assert cpu_kernels.linear_small(big, None, (rows, 256), False) is not None
    for rows in (5, 8, 16):
        assert cpu_kernels.linear_small(big, None, (rows, 256), False) is None
        assert cpu_kernels.linear_small(small, None, (rows, 256), False) is not None


def test_gelu_and_softmax_wrappers_match_torch(rng):
    from zeroskip.ops import cpu_kernels

    x = torch.from_numpy((4 * rng.standard_normal((3, 5, 33))).astype(np.float32))
    for approx in ("none", "tanh"):
        want = torch.nn.functional.gelu(x, approximate=approx)
        np.testing.assert_allclose(cpu_kernels.gelu(x, approx).numpy(), want.numpy(), rtol=1e-5, atol=2e-6)
        np.testing.assert_allclose(
            cpu_kernels.gelu(x.transpose(1, 2), approx).numpy(),
            want.transpose(1, 2).numpy(),
            rtol=1e-5,
            atol=2e-6,
        )
        out = torch.empty_like(x)
        cpu_kernels.gelu_out(out, x, approx)
        np.testing.assert_allclose(out.numpy(), want.numpy(), rtol=1e-5, atol=2e-6)
    np.testing.assert_allclose(
        cpu_kernels.softmax(x).numpy(), torch.softmax(x, -1).numpy(), rtol=1e-5, atol=1e-7
    )


def test_first_and_later_runs_agree_bit_for_bit(rng):
    # The plan may pick other kernels than the tracing run used; the first answer comes from the plan.
    model = mlp_model(rng)
    s = zeroskip.load(model)
    x = rng.standard_normal((2, 8)).astype(np.float32)
    first = s.run({"x": x})["y"]
    np.testing.assert_array_equal(first, s.run({"x": x})["y"])


@pytest.mark.parametrize(
    ("stride", "pads", "clamp"),
    [(1, (1, 1, 1, 1), None), (2, (1, 1, 1, 1), (0.0, 6.0)), (1, (0, 2, 1, 0), (0.0, math.inf))],
)
def test_depthwise_conv_kernel_matches_torch(rng, stride, pads, clamp):
    from zeroskip.ops import cpu_kernels

    w = torch.from_numpy(rng.standard_normal((6, 1, 3, 3)).astype(np.float32))
    b = torch.from_numpy(rng.standard_normal(6).astype(np.float32))
    shape = (2, 6, 11, 9)
    fn = cpu_kernels.depthwise_conv(w, b, shape, (stride, stride), pads, (1, 1), 6, clamp)
    if fn is None:
        pytest.skip("the depthwise kernel is not in this build")
    x = torch.from_numpy(rng.standard_normal(shape).astype(np.float32))
    xp = torch.nn.functional.pad(x, (pads[1], pads[3], pads[0], pads[2]))
    want = torch.nn.functional.conv2d(xp, w, b, stride, 0, 1, 6)
    if clamp is not None:
        want = want.clamp(*clamp)
    np.testing.assert_allclose(fn(x).numpy(), want.numpy(), rtol=1e-5, atol=1e-5)
