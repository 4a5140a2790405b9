// Vector traits for AVX-512F (16 x f32). Included only by files compiled with
// -mavx512f; see spmm_impl.h for the operations it must provide.
#pragma once

#include <immintrin.h>

#include <cstdint>

namespace zs::simd {

struct Avx512 {
  using R = __m512;
  static constexpr int W = 16;

  static R zero() { return _mm512_setzero_ps(); }
  static R load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, R v) { _mm512_storeu_ps(p, v); }
  static R bcast(float f) { return _mm512_set1_ps(f); }
  static R fma(R a, R b, R c) { return _mm512_fmadd_ps(a, b, c); }
  static R add(R a, R b) { return _mm512_add_ps(a, b); }
  static R clamp(R v, R lo, R hi) { return _mm512_min_ps(hi, _mm512_max_ps(lo, v)); }  // NaN-propagating, see vec_avx2.h

  static __mmask16 mask(int cnt) { return static_cast<__mmask16>((1u << cnt) - 1u); }
  static R load_part(const float* p, int cnt) { return _mm512_maskz_loadu_ps(mask(cnt), p); }
  static void store_part(float* p, R v, int cnt) { _mm512_mask_storeu_ps(p, mask(cnt), v); }
  static float hsum(R v) { return _mm512_reduce_add_ps(v); }


  static constexpr int kMetaBytes = W / 4;
  static R select24(const float* xg, uint32_t meta) {
    const __m512i shifts =
        _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i base =
        _mm512_setr_epi32(0, 0, 4, 4, 8, 8, 12, 12, 16, 16, 20, 20, 24, 24, 28, 28);
    __m512i off = _mm512_and_si512(_mm512_srlv_epi32(_mm512_set1_epi32(static_cast<int>(meta)), shifts),
                                   _mm512_set1_epi32(3));
    // One two-source permute covers all 32 x values of the 8 groups.
    return _mm512_permutex2var_ps(_mm512_loadu_ps(xg), _mm512_add_epi32(off, base),
                                  _mm512_loadu_ps(xg + 16));
  }
};

}  // namespace zs::simd
