// Scalar reference for CSR SpMM: plain loops, the yardstick for SIMD kernels.
#include <algorithm>

#include "ukernels.h"

void zs_spmm_csr_f32_ukernel_1x1__scalar(const zs::CsrF32& a, const float* x, float* y, int64_t n,
                                          const zs::SpmmParams& p, int64_t rb, int64_t re, float* /*ws*/) {
  for (int64_t i = rb; i < re; ++i) {
    float* yr = y + i * n;
    const float b = p.bias ? p.bias[i] : 0.0f;
    for (int64_t j = 0; j < n; ++j) yr[j] = b;
    int64_t col = 0;
    for (int64_t e = a.row_ptr[i]; e < a.row_ptr[i + 1]; ++e) {
      col += a.delta[e];
      const float w = a.values[e];
      const float* xr = x + col * n;
      for (int64_t j = 0; j < n; ++j) yr[j] += w * xr[j];
    }
    for (int64_t j = 0; j < n; ++j) yr[j] = std::min(std::max(yr[j], p.min), p.max);
  }
}
