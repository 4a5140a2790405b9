// BSR SpMM, neon, tile 8x4 (see spmm_impl.h for the algorithm).
#include "simd/vec_neon.h"
#include "spmm_impl.h"
#include "ukernels.h"

void zs_spmm_bsr_f32_ukernel_8x4__neon(const zs::BsrF32& a, const float* x, float* y, int64_t n,
                                       const zs::SpmmParams& p, int64_t rb, int64_t re, float* ws) {
  zs::impl::bsr_rows<zs::simd::Neon>(a, x, y, n, p, rb, re, ws);
}
