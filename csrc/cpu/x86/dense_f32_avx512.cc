// Dense kernels, AVX-512F (see dense_impl.h).
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ < 13
// GCC 12's _mm512_undefined_* (used inside max/min/slli intrinsics) self-initialise
// and trip -Wuninitialized once inlined; fixed in GCC 13.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include "dense.h"
#include "dense_impl.h"
#include "simd/vec_avx512.h"

namespace {

struct Avx512Dense : zs::simd::Avx512 {
  static R mul(R a, R b) { return _mm512_mul_ps(a, b); }
  static R sub(R a, R b) { return _mm512_sub_ps(a, b); }
  static R div(R a, R b) { return _mm512_div_ps(a, b); }
  static R max(R lo, R v) { return _mm512_max_ps(lo, v); }  // second operand on NaN
  static R min(R hi, R v) { return _mm512_min_ps(hi, v); }
  static R select_lt(R a, R b, R t, R f) { return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(a, b, _CMP_LT_OQ), f, t); }
  template <int N>
  static void hsums(const R* v, float* out) {
    for (int i = 0; i < N; ++i) out[i] = hsum(v[i]);
  }
  // vpermt2ps picks across both vectors in memory order: no unshuffle needed.
  static R even(R a, R b) {
    return _mm512_permutex2var_ps(a, _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30), b);
  }
  static R odd(R a, R b) {
    return _mm512_permutex2var_ps(a, _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31), b);
  }
  static R unshuffle(R v) { return v; }
  static R pow2_rounded(R t) {
    const __m512i bits = _mm512_slli_epi32(_mm512_castps_si512(t), 23);
    return _mm512_castsi512_ps(_mm512_add_epi32(bits, _mm512_set1_epi32(127 << 23)));
  }
};

}  // namespace

ZS_DENSE_OPS(kDenseAvx512, Avx512Dense, Isa::kAvx512)
