// CSR SpMM, avx2, tile 64x1 (see spmm_impl.h for the algorithm).
#include "simd/vec_avx2.h"
#include "spmm_impl.h"
#include "ukernels.h"

void zs_spmm_csr_f32_ukernel_64x1__avx2(const zs::CsrF32& a, const float* x, float* y, int64_t n,
                                        const zs::SpmmParams& p, int64_t rb, int64_t re, float* ws) {
  zs::impl::csr_rows<zs::simd::Avx2>(a, x, y, n, p, rb, re, ws);
}
