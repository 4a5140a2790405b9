// Dense kernels, AVX2 + FMA (see dense_impl.h).
#include "dense.h"
#include "dense_impl.h"
#include "simd/vec_avx2.h"

namespace {

struct Avx2Dense : zs::simd::Avx2 {
  static R mul(R a, R b) { return _mm256_mul_ps(a, b); }
  static R sub(R a, R b) { return _mm256_sub_ps(a, b); }
  static R div(R a, R b) { return _mm256_div_ps(a, b); }
  static R max(R lo, R v) { return _mm256_max_ps(lo, v); }  // second operand on NaN
  static R min(R hi, R v) { return _mm256_min_ps(hi, v); }
  static R select_lt(R a, R b, R t, R f) { return _mm256_blendv_ps(f, t, _mm256_cmp_ps(a, b, _CMP_LT_OQ)); }
  // Eight sums at once by an hadd tree (the GEMV's 8-row blocks), else one by one.
  template <int N>
  static void hsums(const R* v, float* out) {
    if constexpr (N == 8) {
      const R h0 = _mm256_hadd_ps(_mm256_hadd_ps(v[0], v[1]), _mm256_hadd_ps(v[2], v[3]));
      const R h1 = _mm256_hadd_ps(_mm256_hadd_ps(v[4], v[5]), _mm256_hadd_ps(v[6], v[7]));
      _mm256_storeu_ps(out, _mm256_add_ps(_mm256_permute2f128_ps(h0, h1, 0x20), _mm256_permute2f128_ps(h0, h1, 0x31)));
    } else {
      for (int i = 0; i < N; ++i) out[i] = hsum(v[i]);
    }
  }
  // vshufps keeps to 128-bit halves: even(a, b) = p0 p2 p8 p10 p4 p6 p12 p14,
  // columns 0 1 4 5 2 3 6 7; unshuffle swaps the middle 64-bit pairs back.
  static R even(R a, R b) { return _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0)); }
  static R odd(R a, R b) { return _mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1)); }
  static R unshuffle(R v) {
    return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(v), _MM_SHUFFLE(3, 1, 2, 0)));
  }
  static R pow2_rounded(R t) {
    const __m256i bits = _mm256_slli_epi32(_mm256_castps_si256(t), 23);
    return _mm256_castsi256_ps(_mm256_add_epi32(bits, _mm256_set1_epi32(127 << 23)));
  }
};

}  // namespace

ZS_DENSE_OPS(kDenseAvx2, Avx2Dense, Isa::kAvx2)
