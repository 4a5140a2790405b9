"""Packaging promises: light import, no CUDA at import, one kernel list."""

from __future__ import annotations

import os
import subprocess
import sys

import zeroskip
from zeroskip import _C, kernels


def test_import_is_light():
    """`import zeroskip` and the kernels load neither torch nor onnx, and make no CUDA call."""
    code = (
        "import sys, zeroskip, zeroskip.kernels, zeroskip.formats, zeroskip.prune;"
        "heavy = sorted(m for m in ('torch', 'onnx', 'onnxruntime') if m in sys.modules);"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_cuda_probe_is_safe_without_gpu():
    count = _C.cuda_device_count()
    assert isinstance(count, int)
    assert count >= 0
    assert isinstance(_C.cuda_compiled(), bool)


def test_kernel_list_is_consistent():
    infos = kernels.available()
    names = [k.name for k in infos]
    assert len(names) == len(set(names))
    for k in infos:
        # Names encode op, format, dtype, tile and ISA (spmm_csr_f32_64x1_avx2).
        assert k.name.startswith(f"spmm_{k.format}")
        assert k.name.endswith(f"_{k.isa}")
        assert f"_{k.tile[0]}x{k.tile[1]}_" in k.name
    for fmt in ("csr", "bsr", "nm"):
        assert any(k.format == fmt and k.isa == "scalar" for k in infos), f"no scalar reference for {fmt}"


def test_version():
    assert zeroskip.__version__.count(".") == 2


def test_thread_count_from_environment():
    code = "from zeroskip import kernels; print(kernels.num_threads())"
    env = {**os.environ, "ZEROSKIP_NUM_THREADS": "3"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip() == "3"
