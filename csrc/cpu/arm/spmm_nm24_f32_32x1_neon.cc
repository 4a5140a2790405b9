// NM24 SpMM, neon, tile 32x1 (see spmm_impl.h for the algorithm).
#include "simd/vec_neon.h"
#include "spmm_impl.h"
#include "ukernels.h"

void zs_spmm_nm24_f32_ukernel_32x1__neon(const zs::NmF32& a, const float* x, float* y, int64_t n,
                                         const zs::SpmmParams& p, int64_t rb, int64_t re, float* ws) {
  zs::impl::nm24_rows<zs::simd::Neon>(a, x, y, n, p, rb, re, ws);
}
