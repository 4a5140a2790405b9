#!/usr/bin/env bash
# Test builds of the extension that CI runs besides the normal one:
#   sanitize         C++ kernels and bindings under AddressSanitizer + UBSan; kernel and format tests,
#                    and the CUDA host-side packing with the no-CUDA stubs (the variants build without CUDA).
#   avx512-emulated  AVX-512 kernels compiled against SIMDe (AVX2 underneath), so they run their tests
#                    on CPUs without AVX-512.
# Usage: bash .ci/variant.sh VARIANT [PYTHON]   (PYTHON has numpy, pytest, scikit-build-core, pybind11, ninja)
set -euo pipefail
cd "$(dirname "$0")/.."
variant=${1:?usage: variant.sh sanitize|avx512-emulated [PYTHON]}
py=${2:-python3}
start=$SECONDS
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

preload="" opts=() tests=(tests/test_kernels.py tests/test_formats.py tests/test_dense_kernels.py tests/test_cuda.py)
case "$variant" in
  sanitize)
    opts=(-Ccmake.define.ZEROSKIP_SANITIZE=ON)
    preload="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)"
    ;;
  avx512-emulated)
    if [ "$(uname -m)" != x86_64 ]; then echo "avx512-emulated: x86-64 only, skipped"; exit 0; fi
    if [ ! -f /usr/include/simde/x86/avx512.h ]; then
      apt-get update -qq && apt-get install -y -qq --no-install-recommends libsimde-dev >/dev/null
    fi
    opts=(-Ccmake.define.ZEROSKIP_EMULATE_AVX512=ON)
    tests=(tests/test_kernels.py tests/test_dense_kernels.py -k avx512)
    ;;
  *) echo "unknown variant '$variant'" >&2; exit 2 ;;
esac

"$py" -m pip wheel -q --no-build-isolation --no-deps -w "$out/wheel" . \
  -Ccmake.define.ZEROSKIP_CUDA=OFF -Cbuild-dir="build/$variant" "${opts[@]}"
"$py" -m zipfile -e "$out"/wheel/*.whl "$out/site"

run() {
  PYTHONPATH="$out/site" PYTHONDONTWRITEBYTECODE=1 LD_PRELOAD="$preload" \
    ASAN_OPTIONS=detect_leaks=0,abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1,print_stacktrace=1 \
    "$py" "$@"
}
# The variant build must be the one imported, not an installed copy.
run -c "import sys, zeroskip._C as c; sys.exit(0 if c.__file__.startswith('$out/site') else 'variant _C not imported: ' + c.__file__)"
if [ "$variant" = avx512-emulated ]; then
  run -c "from zeroskip import kernels; import sys; sys.exit(0 if all(k.runnable for k in kernels.available() if k.isa == 'avx512') else 'avx512 kernels not runnable')"
fi
run -m pytest -p no:cacheprovider -q "${tests[@]}"
echo "$variant: OK in $((SECONDS - start)) s"
