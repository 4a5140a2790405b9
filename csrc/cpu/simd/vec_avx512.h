// Vector traits for AVX-512F (16 x f32). Included only by files compiled with
// -mavx512f; see spmm_impl.h for the operations it must provide.
#pragma once

#if defined(ZS_EMULATE_AVX512)
// Test builds only (CMake ZEROSKIP_EMULATE_AVX512): SIMDe implements the
// AVX-512 intrinsics with AVX2, so these kernels run on CPUs without AVX-512.
#define SIMDE_ENABLE_NATIVE_ALIASES
#include <simde/x86/avx512.h>
#else
#include <immintrin.h>
#endif

#include <cstdint>
#include <cstring>

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

#if defined(ZS_EMULATE_AVX512)
  // SIMDe lacks these three; the emulation build goes through memory.
  static R load_part(const float* p, int cnt) {
    float b[W] = {};
    std::memcpy(b, p, sizeof(float) * cnt);
    return _mm512_loadu_ps(b);
  }
  static void store_part(float* p, R v, int cnt) {
    float b[W];
    _mm512_storeu_ps(b, v);
    std::memcpy(p, b, sizeof(float) * cnt);
  }
  static float hsum(R v) {
    float b[W];
    _mm512_storeu_ps(b, v);
    float s = 0.0f;
    for (float f : b) s += f;
    return s;
  }
#else
  static __mmask16 mask(int cnt) { return static_cast<__mmask16>((1u << cnt) - 1u); }
  static R load_part(const float* p, int cnt) { return _mm512_maskz_loadu_ps(mask(cnt), p); }
  static void store_part(float* p, R v, int cnt) { _mm512_mask_storeu_ps(p, mask(cnt), v); }
  static float hsum(R v) { return _mm512_reduce_add_ps(v); }
#endif


  static constexpr bool kRows8 = false;  // no SELL-8 2:4 path (vec_avx2.h)

  // W/2 float pairs from the 2:4 pair table (see vec_avx2.h and nm24_spmv).
  static R pairs(const float* tab, const uint8_t* meta) {
    const double* t = reinterpret_cast<const double*>(tab);
    __m128d q[4];
    for (int j = 0; j < 4; ++j)
      q[j] = _mm_loadh_pd(_mm_load_sd(t + 32 * j + (meta[j] & 15)), t + 32 * j + 16 + (meta[j] >> 4));
    const __m256d lo = _mm256_set_m128d(q[1], q[0]);
    const __m256d hi = _mm256_set_m128d(q[3], q[2]);
    return _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castpd256_pd512(lo), hi, 1));
  }
};

}  // namespace zs::simd
