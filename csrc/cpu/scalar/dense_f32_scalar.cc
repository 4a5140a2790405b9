// Dense kernels, scalar reference (one lane; see dense_impl.h).
#include <cstdint>
#include <cstring>

#include "dense.h"
#include "dense_impl.h"

namespace {

struct ScalarDense {
  using R = float;
  static constexpr int W = 1;

  static R zero() { return 0.0f; }
  static R load(const float* p) { return *p; }
  static void store(float* p, R v) { *p = v; }
  static R bcast(float f) { return f; }
  static R fma(R a, R b, R c) { return a * b + c; }
  static R add(R a, R b) { return a + b; }
  static R mul(R a, R b) { return a * b; }
  static R sub(R a, R b) { return a - b; }
  static R div(R a, R b) { return a / b; }
  static R max(R lo, R v) { return lo > v ? lo : v; }  // NaN v -> v
  static R min(R hi, R v) { return hi < v ? hi : v; }
  static R clamp(R v, R lo, R hi) { return min(hi, max(lo, v)); }
  static R select_lt(R a, R b, R t, R f) { return a < b ? t : f; }
  template <int N>
  static void hsums(const R* v, float* out) {
    for (int i = 0; i < N; ++i) out[i] = hsum(v[i]);
  }
  static R pow2_rounded(R t) {
    uint32_t bits;
    std::memcpy(&bits, &t, sizeof bits);
    bits = (bits << 23) + (127u << 23);
    float f;
    std::memcpy(&f, &bits, sizeof f);
    return f;
  }
  static R even(R a, R) { return a; }  // a = p[0], b = p[1]
  static R odd(R, R b) { return b; }
  static R unshuffle(R v) { return v; }
  static R load_part(const float* p, int cnt) { return cnt > 0 ? *p : 0.0f; }
  static void store_part(float* p, R v, int cnt) {
    if (cnt > 0) *p = v;
  }
  static float hsum(R v) { return v; }
};

}  // namespace

ZS_DENSE_OPS(kDenseScalar, ScalarDense, Isa::kScalar)
