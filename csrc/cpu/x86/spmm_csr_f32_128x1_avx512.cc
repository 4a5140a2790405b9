// CSR SpMM, avx512, tile 128x1 (see spmm_impl.h for the algorithm).
#include "simd/vec_avx512.h"
#include "spmm_impl.h"
#include "ukernels.h"

void zs_spmm_csr_f32_ukernel_128x1__avx512(const zs::CsrF32& a, const float* x, float* y, int64_t n,
                                          const zs::SpmmParams& p, int64_t rb, int64_t re, float* ws) {
  zs::impl::csr_rows<zs::simd::Avx512>(a, x, y, n, p, rb, re, ws);
}
