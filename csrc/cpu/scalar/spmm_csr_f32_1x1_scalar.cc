// Scalar reference for CSR SpMM: plain loops, the yardstick for SIMD kernels.
#include <algorithm>

#include "ukernels.h"

namespace {
template <class Idx>
void run(const zs::CsrF32& a, const float* x, float* y, int64_t n, const zs::SpmmParams& p,
         int64_t rb, int64_t re) {
  const Idx* col = static_cast<const Idx*>(a.col);
  for (int64_t i = rb; i < re; ++i) {
    float* yr = y + i * n;
    const float b = p.bias ? p.bias[i] : 0.0f;
    for (int64_t j = 0; j < n; ++j) yr[j] = b;
    for (int64_t e = a.row_ptr[i]; e < a.row_ptr[i + 1]; ++e) {
      const float w = a.values[e];
      const float* xr = x + static_cast<int64_t>(col[e]) * n;
      for (int64_t j = 0; j < n; ++j) yr[j] += w * xr[j];
    }
    for (int64_t j = 0; j < n; ++j) yr[j] = std::min(std::max(yr[j], p.min), p.max);
  }
}
}  // namespace

void zs_spmm_csr_f32_ukernel_1x1__scalar(const zs::CsrF32& a, const float* x, float* y, int64_t n,
                                          const zs::SpmmParams& p, int64_t rb, int64_t re, float* /*ws*/) {
  if (a.col_type == zs::IndexType::kU16) {
    run<uint16_t>(a, x, y, n, p, rb, re);
  } else {
    run<uint32_t>(a, x, y, n, p, rb, re);
  }
}
