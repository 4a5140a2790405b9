// Vector traits for AVX2 + FMA (8 x f32). Included only by files compiled
// with -mavx2 -mfma; see spmm_impl.h for the operations it must provide.
#pragma once

#include <immintrin.h>

#include <cstdint>

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


  // SELL-8 2:4 (see NmF32::vals8): one group g for 8 rows, one row a lane.
  // x4 = x[4g, 4g + 4) goes to both 128-bit lanes; vpermilps then picks, per
  // lane, the x at that row's offset (it reads only the low 2 bits of each
  // control). x0/x1: the x for each row's first/second kept value.
  static constexpr bool kRows8 = true;
  static void select_rows8(const float* x4, uint32_t meta, R* x0, R* x1) {
    const R xv = _mm256_broadcast_ps(reinterpret_cast<const __m128*>(x4));
    const __m256i m = _mm256_set1_epi32(static_cast<int>(meta));
    *x0 = _mm256_permutevar_ps(xv, _mm256_srlv_epi32(m, _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14)));
    *x1 = _mm256_permutevar_ps(xv, _mm256_srlv_epi32(m, _mm256_setr_epi32(16, 18, 20, 22, 24, 26, 28, 30)));
  }

  // W/2 float pairs, pair j at tab + 32 j + 2 nibble_j, where nibble_j is the
  // j-th 4-bit field of meta (one 2:4 group each; see nm24_spmv).
  static R pairs(const float* tab, const uint8_t* meta) {
    const double* t = reinterpret_cast<const double*>(tab);
    const __m128d lo = _mm_loadh_pd(_mm_load_sd(t + (meta[0] & 15)), t + 16 + (meta[0] >> 4));
    const __m128d hi = _mm_loadh_pd(_mm_load_sd(t + 32 + (meta[1] & 15)), t + 48 + (meta[1] >> 4));
    return _mm256_castpd_ps(_mm256_set_m128d(hi, lo));
  }
};

}  // namespace zs::simd
