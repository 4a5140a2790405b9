"""ONNX's own node test cases (onnx.backend.test.case.node) for every op zeroskip claims.

A case runs when every op in its model is claimed by the registry at the model's opset. It must
match the expected outputs, or be listed in `tests/onnx_node_excluded/*.txt` as
`test_name  # reason`. Cases for ops zeroskip does not claim are not collected.
"""

from __future__ import annotations

import os
import pickle
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("torch")

from zeroskip import ops  # noqa: E402

HERE = Path(__file__).parent


def _excluded() -> dict[str, str]:
    out: dict[str, str] = {}
    for f in sorted((HERE / "onnx_node_excluded").glob("*.txt")):
        for line in f.read_text().splitlines():
            name, _, reason = line.partition("#")
            if name.strip():
                if not reason.strip():
                    raise ValueError(f"{f.name}: '{name.strip()}' is excluded without a reason")
                out[name.strip()] = reason.strip()
    return out


def _all_cases() -> list[Any]:
    # collect_testcases() runs every case generator (~15 s); keep the result beside pytest's cache.
    cache = HERE.parent / ".pytest_cache" / f"onnx-node-cases-{onnx.__version__}.pkl"
    if cache.exists():
        try:
            return pickle.loads(cache.read_bytes())
        except Exception:
            cache.unlink()
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = [c for c in collect_testcases(None) if c.kind == "node"]
    cache.parent.mkdir(exist_ok=True)
    tmp = cache.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_bytes(pickle.dumps(cases))
    tmp.replace(cache)
    return cases


def _opset(model: Any, domain: str) -> int:
    for o in model.opset_import:
        if o.domain in (("", "ai.onnx") if domain == "" else (domain,)):
            return o.version
    return 0


def _claimed(case: Any) -> bool:
    return all(ops.resolve(n.op_type, n.domain, _opset(case.model, n.domain)) for n in case.model.graph.node)


CASES = sorted((c for c in _all_cases() if _claimed(c)), key=lambda c: c.name)
EXCLUDED = _excluded()


def test_exclusions_name_real_cases() -> None:
    names = {c.name for c in CASES}
    stale = sorted(set(EXCLUDED) - names)
    assert not stale, f"excluded cases that are not collected (remove them): {stale}"


def test_every_claimed_op_has_cases() -> None:
    tested = {n.op_type for c in CASES for n in c.model.graph.node}
    untested = [name for (dom, name) in ops.claimed() if dom == "" and name not in tested]
    # Ops with no node case in onnx's suite are covered by tests/test_ops.py instead.
    assert set(untested) <= UNTESTED_BY_ONNX, f"claimed ops with no onnx node case: {untested}"


UNTESTED_BY_ONNX: set[str] = set()
BF16_RTOL = 2.0**-6  # 2 ulps: one ulp is up to 2**-7 relative


def _run(model: Any, feeds: dict[str, np.ndarray]) -> list[list[np.ndarray]]:
    """Outputs of the first run (traced, then planned) and of the second (the cached plan)."""
    import zeroskip

    sess = zeroskip.load(model, options={"min_buffer_bytes": 0})
    runs = [sess.run(feeds), sess.run(feeds)]
    return [[out[o.name] for o in model.graph.output] for out in runs]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_node(case: Any) -> None:
    if case.name in EXCLUDED:
        pytest.skip(EXCLUDED[case.name])
    from onnx import numpy_helper

    graph = case.model.graph
    for inputs, expected in case.data_sets:
        feeds = {}
        for vi, arr in zip(graph.input, inputs):
            if isinstance(arr, onnx.TensorProto):
                arr = numpy_helper.to_array(arr)
            if isinstance(arr, np.generic):  # 0-d inputs come as numpy scalars
                arr = np.asarray(arr)
            assert isinstance(arr, np.ndarray), "sequence/optional input: list the case as excluded"
            feeds[vi.name] = arr
        first, second = _run(case.model, feeds)
        for vi, want, have in [*zip(graph.output, expected, first), *zip(graph.output, expected, second)]:
            if isinstance(want, onnx.TensorProto):
                want = numpy_helper.to_array(want)
            want = np.asarray(want)
            assert have.dtype == want.dtype, f"{vi.name}: dtype {have.dtype} != {want.dtype}"
            assert have.shape == want.shape, f"{vi.name}: shape {have.shape} != {want.shape}"
            if want.dtype.name == "bfloat16":
                # bfloat16 keeps 8 significant bits: a case rtol below 2 ulps cannot be met by
                # an implementation that rounds intermediates in a different order than the reference does.
                rtol = max(case.rtol, BF16_RTOL)
                have32, want32 = have.astype(np.float32), want.astype(np.float32)
                np.testing.assert_allclose(have32, want32, rtol=rtol, atol=case.atol, err_msg=vi.name)
            elif want.dtype.kind in "fc":
                np.testing.assert_allclose(have, want, rtol=case.rtol, atol=case.atol, err_msg=vi.name)
            else:
                np.testing.assert_array_equal(have, want, err_msg=vi.name)
