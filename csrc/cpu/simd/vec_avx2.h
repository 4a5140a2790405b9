// Vector traits for AVX2 + FMA (8 x f32). Included only by files compiled
// with -mavx2 -mfma; see spmm_impl.h for the operations it must provide.
#pragma once

#include <immintrin.h>

#include <cstdint>
#include <cstring>

namespace zs::simd {

struct Avx2 {
  using R = __m256;
  static constexpr int W = 8;

  static R zero() { return _mm256_setzero_ps(); }
  static R load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, R v) { _mm256_storeu_ps(p, v); }
  static R bcast(float f) { return _mm256_set1_ps(f); }
  static R fma(R a, R b, R c) { return _mm256_fmadd_ps(a, b, c); }
  static R add(R a, R b) { return _mm256_add_ps(a, b); }
  // max/min return their second operand when one is NaN: keep v second so NaN
  // propagates like in numpy.
  static R clamp(R v, R lo, R hi) { return _mm256_min_ps(hi, _mm256_max_ps(lo, v)); }

  static __m256i mask(int cnt) {
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(cnt), lane);
  }
  // cnt in [1, W): touches only p[0, cnt).
  static R load_part(const float* p, int cnt) { return _mm256_maskload_ps(p, mask(cnt)); }
  static void store_part(float* p, R v, int cnt) { _mm256_maskstore_ps(p, mask(cnt), v); }

  static float hsum(R v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }


  // 2:4 selection: xg points at 2*W consecutive x values (W/2 groups of 4);
  // meta holds the 2-bit in-group offsets of the W kept values, first in the
  // lowest bits. Returns x at those W positions.
  static constexpr int kMetaBytes = W / 4;
  static R select24(const float* xg, uint32_t meta) {
    const __m256i shifts = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);
    __m256i off = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(static_cast<int>(meta)), shifts),
                                   _mm256_set1_epi32(3));
    // lane l reads group l/2: base 4*(l/2); lanes 0-3 fall in xg[0,8), 4-7 in xg[8,16).
    const __m256i base = _mm256_setr_epi32(0, 0, 4, 4, 0, 0, 4, 4);
    __m256i idx = _mm256_add_epi32(off, base);
    R lo = _mm256_permutevar8x32_ps(_mm256_loadu_ps(xg), idx);
    R hi = _mm256_permutevar8x32_ps(_mm256_loadu_ps(xg + 8), idx);
    return _mm256_blend_ps(lo, hi, 0xF0);
  }
};

}  // namespace zs::simd
