// Scalar reference for N:M SpMM (any n:m with packed in-group offsets).
#include <algorithm>

#include "ukernels.h"

void zs_spmm_nm_f32_ukernel_1x1__scalar(const zs::NmF32& a, const float* x, float* y, int64_t n,
                                         const zs::SpmmParams& p, int64_t rb, int64_t re, float* /*ws*/) {
  const int64_t kept = a.k / a.group * a.n;
  const int mask = (1 << a.bits) - 1;
  for (int64_t i = rb; i < re; ++i) {
    float* yr = y + i * n;
    const float b = p.bias ? p.bias[i] : 0.0f;
    for (int64_t j = 0; j < n; ++j) yr[j] = b;
    const uint8_t* meta = a.meta + i * a.meta_stride;
    for (int64_t q = 0; q < kept; ++q) {
      const int64_t bit = q * a.bits;
      const int64_t col = q / a.n * a.group + ((meta[bit / 8] >> (bit % 8)) & mask);
      const float w = a.values[i * kept + q];
      const float* xr = x + col * n;
      for (int64_t j = 0; j < n; ++j) yr[j] += w * xr[j];
    }
    for (int64_t j = 0; j < n; ++j) yr[j] = std::min(std::max(yr[j], p.min), p.max);
  }
}
