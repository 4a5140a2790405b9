// Dense kernels, NEON / AArch64 (see dense_impl.h).
#include "dense.h"
#include "dense_impl.h"
#include "simd/vec_neon.h"

namespace {

struct NeonDense : zs::simd::Neon {
  static R mul(R a, R b) { return vmulq_f32(a, b); }
  static R sub(R a, R b) { return vsubq_f32(a, b); }
  static R div(R a, R b) { return vdivq_f32(a, b); }
  static R max(R lo, R v) { return vmaxq_f32(lo, v); }  // NaN propagates
  static R min(R hi, R v) { return vminq_f32(hi, v); }
  static R select_lt(R a, R b, R t, R f) { return vbslq_f32(vcltq_f32(a, b), t, f); }
  template <int N>
  static void hsums(const R* v, float* out) {
    for (int i = 0; i < N; ++i) out[i] = hsum(v[i]);
  }
  static R even(R a, R b) { return vuzp1q_f32(a, b); }  // memory order
  static R odd(R a, R b) { return vuzp2q_f32(a, b); }
  static R unshuffle(R v) { return v; }
  static R pow2_rounded(R t) {
    const uint32x4_t bits = vshlq_n_u32(vreinterpretq_u32_f32(t), 23);
    return vreinterpretq_f32_u32(vaddq_u32(bits, vdupq_n_u32(127u << 23)));
  }
};

}  // namespace

ZS_DENSE_OPS(kDenseNeon, NeonDense, Isa::kNeon)
