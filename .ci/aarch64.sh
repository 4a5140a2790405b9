#!/usr/bin/env bash
# Cross-builds zeroskip._C for aarch64 (NEON kernels) and runs the numpy-only
# kernel and format tests on an arm64 Python under qemu-user.
#
#   .ci/aarch64.sh [PYTHON]
#
# PYTHON: a host (x86-64) python, or a venv folder, with pip, scikit-build-core,
# pybind11 and ninja installed; default python3. It only drives the build.
#
# Environment:
#   ZS_ARM_ROOT   arm64 Debian bookworm rootfs, made once and reused
#                 (default build/arm64-root)
#   ZS_ARM_TESTS  test files to run (default tests/test_kernels.py tests/test_formats.py tests/test_dense_kernels.py)
#
# Needs root for apt-get and mmdebstrap (as in CI). See shared/TOOLCHAIN.md,
# "ARM NEON (cross-compiled, run under qemu)".
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$PWD
T0=$SECONDS
step() { echo "== aarch64: $* ($((SECONDS - T0)) s)"; }
die() { echo "aarch64: FAILED: $*" >&2; exit 1; }

PY=${1:-python3}
[[ -d $PY ]] && PY=$PY/bin/python
command -v "$PY" >/dev/null || die "no python '$PY'"

ROOT=${ZS_ARM_ROOT:-build/arm64-root}
mkdir -p "$(dirname "$ROOT")"
ROOT=$(cd "$(dirname "$ROOT")" && pwd)/$(basename "$ROOT")
export ZS_ARM_ROOT=$ROOT
read -r -a TESTS <<<"${ZS_ARM_TESTS:-tests/test_kernels.py tests/test_formats.py tests/test_dense_kernels.py}"

SUDO=()
[[ $(id -u) -eq 0 ]] || SUDO=(sudo)

# ------------------------------------------------------------------ 1. packages
APT_PKGS=(g++-aarch64-linux-gnu qemu-user libsimde-dev ninja-build mmdebstrap)
missing=0
# One tool at a time: `command -v a b c` succeeds when only some of them are there.
for tool in aarch64-linux-gnu-g++ qemu-aarch64 mmdebstrap ninja; do
  command -v "$tool" >/dev/null || missing=1
done
if [[ $missing == 1 || ! -d /usr/include/simde ]]; then
  step "installing ${APT_PKGS[*]}"
  "${SUDO[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${APT_PKGS[@]}" >/dev/null
fi
for tool in aarch64-linux-gnu-g++ qemu-aarch64 mmdebstrap; do
  command -v "$tool" >/dev/null || die "$tool missing after apt-get install"
done

# ------------------------------------------------------------------ 2. arm64 rootfs
# libstdc++6: the extension is C++ and nothing else in the list pulls it in.
# libgomp1: the extension links OpenMP.
ROOT_PKGS=python3,python3-numpy,python3-pytest,libpython3.11-dev,libgomp1,libstdc++6
STAMP=$ROOT/.zeroskip-rootfs
QEMU=(qemu-aarch64 -L "$ROOT")
if [[ -f $STAMP && $(cat "$STAMP") == "$ROOT_PKGS" ]]; then
  step "reusing rootfs $ROOT"
else
  step "making arm64 bookworm rootfs in $ROOT"
  rm -rf "$ROOT" "$ROOT.tmp"
  "${SUDO[@]}" mmdebstrap --quiet --variant=extract --architectures=arm64 \
    --include="$ROOT_PKGS" bookworm "$ROOT.tmp" </dev/null
  LIBDIR=$ROOT.tmp/usr/lib/aarch64-linux-gnu
  # The alternatives that dpkg would set up are not there with --variant=extract.
  ln -sf blas/libblas.so.3 "$LIBDIR/libblas.so.3"
  ln -sf lapack/liblapack.so.3 "$LIBDIR/liblapack.so.3"
  # Precompile: bytecode made by any CPython 3.11 is valid for the rootfs's
  # 3.11; -s/-p record the paths as seen inside the rootfs. Host 3.11 is
  # ~20x faster than the rootfs's Python under qemu, which is the fallback.
  PYDIRS=("$ROOT.tmp/usr/lib/python3.11" "$ROOT.tmp/usr/lib/python3/dist-packages")
  HOST311=""
  for c in "$PY" python3.11 /usr/bin/python3.11; do
    if command -v "$c" >/dev/null && "$c" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
      HOST311=$c
      break
    fi
  done
  if [[ -n $HOST311 ]]; then
    "$HOST311" -m compileall -q -j2 -s "$ROOT.tmp" -p / "${PYDIRS[@]}" >/dev/null
  else
    qemu-aarch64 -L "$ROOT.tmp" "$ROOT.tmp/usr/bin/python3.11" -m compileall -q -j2 -s "$ROOT.tmp" -p / "${PYDIRS[@]}" >/dev/null
  fi
  echo "$ROOT_PKGS" >"$ROOT.tmp/.zeroskip-rootfs"
  mv "$ROOT.tmp" "$ROOT"
fi
"${QEMU[@]}" "$ROOT/usr/bin/python3.11" -c 'import numpy, pytest' || die "arm64 Python in $ROOT cannot import numpy/pytest"

# ------------------------------------------------------------------ 3. cross build
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
step "cross-building the extension with $PY"
# SETUPTOOLS_EXT_SUFFIX: scikit-build-core and pybind11 take the target's
# extension suffix from it instead of the host interpreter.
if ! _PYTHON_HOST_PLATFORM=linux-aarch64 SETUPTOOLS_EXT_SUFFIX=.cpython-311-aarch64-linux-gnu.so \
  "$PY" -m pip wheel --no-build-isolation --no-deps --disable-pip-version-check -q -w "$WORK/dist" \
  -C build-dir=build/aarch64 \
  -C cmake.define.CMAKE_TOOLCHAIN_FILE="$REPO/.ci/aarch64-toolchain.cmake" \
  -C cmake.define.ZS_ARM_ROOT="$ROOT" \
  -C cmake.define.Python_INCLUDE_DIR="$ROOT/usr/include/python3.11" \
  -C cmake.define.ZEROSKIP_CUDA=OFF \
  . >"$WORK/build.log" 2>&1; then
  tail -n 60 "$WORK/build.log"
  die "cross build"
fi
WHEEL=$(ls "$WORK"/dist/zeroskip-*linux_aarch64.whl 2>/dev/null | head -n 1)
[[ -n $WHEEL ]] || { tail -n 30 "$WORK/build.log"; die "no linux_aarch64 wheel built"; }
mkdir "$WORK/site"
"$PY" -m zipfile -e "$WHEEL" "$WORK/site"
SO=$(ls "$WORK"/site/zeroskip/_C.cpython-311-aarch64-linux-gnu.so 2>/dev/null) || die "wheel lacks _C.cpython-311-aarch64-linux-gnu.so"
OMP=no
aarch64-linux-gnu-readelf -d "$SO" | grep -q 'libgomp' && OMP=yes
step "built $(basename "$WHEEL") (OpenMP: $OMP)"

# ------------------------------------------------------------------ 4. tests under qemu
export PYTHONPATH=$WORK/site
export PYTHONDONTWRITEBYTECODE=1 # keep arm64 bytecode out of tests/
export ZS_TEST_QUICK=${ZS_TEST_QUICK:-1}
for t in "${TESTS[@]}"; do [[ -f $t ]] || die "test file $t not found"; done
step "pytest under qemu: ${TESTS[*]}"
set +e
"${QEMU[@]}" "$ROOT/usr/bin/python3.11" -m pytest -p no:cacheprovider -x -q \
  --junitxml="$WORK/junit.xml" "${TESTS[@]}"
RC=$?
set -e
[[ $RC -eq 0 ]] || die "pytest under qemu exited $RC"

# The kernel tests are parametrized by kernel name: every NEON kernel the tests
# name must pass at least one test, and none may be skipped for want of the ISA.
NEON_OK=0
if [[ " ${TESTS[*]} " == *test_kernels.py* ]]; then
  NEON_OK=$("$PY" - "$WORK/junit.xml" <<'EOF'
import re
import sys
import xml.etree.ElementTree as ET

seen, passed, lacking = set(), set(), []
for case in ET.parse(sys.argv[1]).iter("testcase"):
    names = set(re.findall(r"spmm_\w*?_neon", case.get("name", "")))
    if not names:
        continue
    seen |= names
    skip = case.find("skipped")
    if skip is not None:
        if "lacks" in (skip.get("message") or ""):
            lacking.append(case.get("name"))
    elif case.find("failure") is None and case.find("error") is None:
        passed |= names
if not seen or seen - passed or lacking:
    print(f"NEON kernels in the tests: {sorted(seen)}; never passed: {sorted(seen - passed)}; "
          f"skipped for a missing ISA: {lacking}")
    sys.exit(1)
print(len(passed))
EOF
  ) || die "$NEON_OK"
fi

step "NEON kernels: registry and smoke run"
"${QEMU[@]}" "$ROOT/usr/bin/python3.11" - "$WORK/site" <<'EOF'
import os
import sys

import numpy as np

import zeroskip
from zeroskip import _C, kernels
from zeroskip.formats import BSR, CSR, NM

assert os.path.realpath(_C.__file__).startswith(os.path.realpath(sys.argv[1])), _C.__file__
for k in kernels.available():
    print(f"  {k.name:28s} isa={k.isa:7s} runnable={k.runnable}")
neon = [k for k in kernels.available() if k.isa == "neon"]
assert {k.format for k in neon} == {"csr", "bsr", "nm"}, neon
assert all(k.runnable for k in neon), neon
rng = np.random.default_rng(0)
w = rng.standard_normal((37, 64)).astype(np.float32)
w[:, 1::2] = 0  # 2:4 sparse
x = rng.standard_normal((64, 19)).astype(np.float32)
mats = {"csr": CSR.from_dense(w), "bsr": BSR.from_dense(w, block=(4, 1)), "nm": NM.from_dense(w, 2, 4)}
for k in neon:
    for n in (1, 19):
        y = kernels.spmm(mats[k.format], np.ascontiguousarray(x[:, :n]), kernel=k.name)
        np.testing.assert_allclose(y, w @ x[:, :n], rtol=1e-4, atol=1e-4, err_msg=k.name)
print(f"  {len(neon)} NEON kernels runnable and match numpy")
EOF

echo "aarch64: OK: ${TESTS[*]} passed under qemu ($NEON_OK NEON kernels passed their tests, OpenMP: $OMP) in $((SECONDS - T0)) s"
