// Vector traits for ARM NEON / AArch64 (4 x f32). Included only by files built
// for aarch64; see spmm_impl.h for the operations it must provide.
#pragma once

#include <arm_neon.h>

#include <cstdint>

namespace zs::simd {

struct Neon {
  using R = float32x4_t;
  static constexpr int W = 4;

  static R zero() { return vdupq_n_f32(0.0f); }
  static R load(const float* p) { return vld1q_f32(p); }
  static void store(float* p, R v) { vst1q_f32(p, v); }
  static R bcast(float f) { return vdupq_n_f32(f); }
  static R fma(R a, R b, R c) { return vfmaq_f32(c, a, b); }
  static R add(R a, R b) { return vaddq_f32(a, b); }
  static R clamp(R v, R lo, R hi) { return vminq_f32(vmaxq_f32(v, lo), hi); }

  // No masked memory ops on NEON: go through a stack buffer.
  static R load_part(const float* p, int cnt) {
    float buf[W] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int i = 0; i < cnt; ++i) buf[i] = p[i];
    return vld1q_f32(buf);
  }
  static void store_part(float* p, R v, int cnt) {
    float buf[W];
    vst1q_f32(buf, v);
    for (int i = 0; i < cnt; ++i) p[i] = buf[i];
  }
  static float hsum(R v) { return vaddvq_f32(v); }


  static constexpr bool kRows8 = false;  // no SELL-8 2:4 path (vec_avx2.h)

  // W/2 float pairs from the 2:4 pair table (see vec_avx2.h and nm24_spmv).
  static R pairs(const float* tab, const uint8_t* meta) {
    return vcombine_f32(vld1_f32(tab + 2 * (meta[0] & 15)), vld1_f32(tab + 32 + 2 * (meta[0] >> 4)));
  }
};

}  // namespace zs::simd
