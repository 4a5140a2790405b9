// Scalar reference for BSR SpMM (any block shape, blocks stored column-major).
#include <algorithm>

#include "ukernels.h"

namespace {
template <class Idx>
void run(const zs::BsrF32& a, const float* x, float* y, int64_t n, const zs::SpmmParams& p,
         int64_t rb, int64_t re) {
  const Idx* bcol = static_cast<const Idx*>(a.bcol);
  for (int64_t ib = rb; ib < re; ++ib) {
    const int64_t r0 = ib * a.br;
    const int64_t rows = std::min<int64_t>(a.br, a.m - r0);
    for (int64_t r = 0; r < rows; ++r) {
      float* yr = y + (r0 + r) * n;
      const float b = p.bias ? p.bias[r0 + r] : 0.0f;
      for (int64_t j = 0; j < n; ++j) yr[j] = b;
    }
    for (int64_t blk = a.brow_ptr[ib]; blk < a.brow_ptr[ib + 1]; ++blk) {
      const int64_t c0 = static_cast<int64_t>(bcol[blk]) * a.bc;
      const int64_t cols = std::min<int64_t>(a.bc, a.k - c0);
      const float* v = a.values + blk * a.br * a.bc;
      for (int64_t c = 0; c < cols; ++c) {
        const float* xr = x + (c0 + c) * n;
        for (int64_t r = 0; r < rows; ++r) {
          const float w = v[c * a.br + r];
          float* yr = y + (r0 + r) * n;
          for (int64_t j = 0; j < n; ++j) yr[j] += w * xr[j];
        }
      }
    }
    for (int64_t r = 0; r < rows; ++r) {
      float* yr = y + (r0 + r) * n;
      for (int64_t j = 0; j < n; ++j) yr[j] = std::min(std::max(yr[j], p.min), p.max);
    }
  }
}
}  // namespace

void zs_spmm_bsr_f32_ukernel_1x1__scalar(const zs::BsrF32& a, const float* x, float* y, int64_t n,
                                          const zs::SpmmParams& p, int64_t rb, int64_t re, float* /*ws*/) {
  if (a.bcol_type == zs::IndexType::kU16) {
    run<uint16_t>(a, x, y, n, p, rb, re);
  } else {
    run<uint32_t>(a, x, y, n, p, rb, re);
  }
}
