#!/usr/bin/env bash
# The C++ kernels and bindings built with AddressSanitizer + UBSan, running the kernel and format tests.
# Usage: bash .ci/sanitize.sh [PYTHON]   (a python with numpy, pytest, scikit-build-core, pybind11, ninja)
set -euo pipefail
cd "$(dirname "$0")/.."
py=${1:-python3}
start=$SECONDS
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

"$py" -m pip wheel -q --no-build-isolation --no-deps -w "$out/wheel" . \
  -Ccmake.define.ZEROSKIP_SANITIZE=ON -Ccmake.define.ZEROSKIP_CUDA=OFF -Cbuild-dir=build/asan
"$py" -m zipfile -e "$out"/wheel/*.whl "$out/site"

asan=$(gcc -print-file-name=libasan.so)
ubsan=$(gcc -print-file-name=libubsan.so)
run() {
  PYTHONPATH="$out/site" PYTHONDONTWRITEBYTECODE=1 LD_PRELOAD="$asan $ubsan" \
    ASAN_OPTIONS=detect_leaks=0,abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1,print_stacktrace=1 \
    "$py" "$@"
}
# The instrumented build must be the one imported, not an installed copy.
run -c "import sys, zeroskip._C as c; sys.exit(0 if c.__file__.startswith('$out/site') else 'sanitized _C not imported: ' + c.__file__)"
run -m pytest -p no:cacheprovider -q tests/test_kernels.py tests/test_formats.py
echo "sanitize: OK: kernel and format tests clean under ASan + UBSan in $((SECONDS - start)) s"
