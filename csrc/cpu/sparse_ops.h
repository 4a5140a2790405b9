// Graph-level ops over the SpMM driver (spmm.h): Linear and 2-D convolution
// with a sparse weight. Both reduce to Y = clamp(A @ X + bias) with A the
// sparse weight (one row per output feature / channel): Linear by transposing
// the activations in and the result out, Conv by im2col. Scratch is
// thread_local (two callers never share it) and the copies run on the same
// OpenMP pool as the kernels.
//
// Preconditions (checked by the binding, asserted nowhere else): arrays are
// float32, contiguous and do not overlap `y`; sizes match the view.
#pragma once

#include <cstdint>

#include "dense.h"
#include "registry.h"
#include "zeroskip/spmm.h"

namespace zs {

// Linear: y (m x a.m) = clamp(x (m x a.k) @ A^T + bias), bias per column of y
// (per row of A). Up to 2 or 3 rows (per format, measured) run the batch-1
// kernel on each row of x as a column; more rows transpose x into a.k x m
// scratch, run the kernel into a.m x m scratch and transpose that into y.
// Where a Linear's operands lie: x (M, K) and y (M, N) row-major by default;
// x_t: x is given as its transpose (K, M), y_t: y is written as (N, M). A
// chain of sparse Linears passes the transposed form between its links and
// skips two transposes per link. gelu: GELU applied after the epilogue (1:
// erf form, 2: tanh form) while the output block is still in cache.
struct LinearOptions {
  bool x_t = false, y_t = false;
  int gelu = 0;
};

void spmm_linear(const KernelInfo& k, const CsrF32& a, const float* x, float* y, int64_t m, const SpmmParams& p,
                 LinearOptions opts = {});
void spmm_linear(const KernelInfo& k, const BsrF32& a, const float* x, float* y, int64_t m, const SpmmParams& p,
                 LinearOptions opts = {});
void spmm_linear(const KernelInfo& k, const NmF32& a, const float* x, float* y, int64_t m, const SpmmParams& p,
                 LinearOptions opts = {});

// A 2-D convolution, NCHW, groups == 1, zero padding:
// OH = (H + pad_t + pad_b - dh (KH - 1) - 1) / sh + 1, likewise OW; all >= 1.
struct Conv2dShape {
  int64_t b, c, h, w;         // input
  int64_t kh, kw;             // kernel window
  int64_t sh, sw;             // strides
  int64_t pad_t, pad_l, pad_b, pad_r;
  int64_t dh, dw;             // dilations
  int64_t oh, ow;             // output
};

// Output size along one axis; < 1 when the window does not fit.
inline int64_t conv_out_size(int64_t in, int64_t k, int64_t stride, int64_t pad0, int64_t pad1, int64_t dil) {
  const int64_t span = dil * (k - 1) + 1;
  const int64_t room = in + pad0 + pad1 - span;
  return room < 0 ? 0 : room / stride + 1;
}

// y (b x a.m x oh x ow) = clamp(conv(x (b x c x h x w), W) + bias), where A is
// W[a.m, c, kh, kw] as an a.m x (c kh kw) matrix (column (ci kh + i) kw + j).
// A 1x1, stride 1, unpadded window multiplies each image directly. Any other
// is im2col'd: with many output positions, in blocks of columns that the
// threads share out (each block in a cache-resident buffer); with few, the
// whole image into (c kh kw) x (oh ow) scratch, then the row-parallel driver.
// Both chunk columns alike: the result does not depend on the thread count.
void spmm_conv2d(const KernelInfo& k, const CsrF32& a, const float* x, float* y, const Conv2dShape& s,
                 const SpmmParams& p);
void spmm_conv2d(const KernelInfo& k, const BsrF32& a, const float* x, float* y, const Conv2dShape& s,
                 const SpmmParams& p);
void spmm_conv2d(const KernelInfo& k, const NmF32& a, const float* x, float* y, const Conv2dShape& s,
                 const SpmmParams& p);

// The same convolution with a dense weight packed for the weight-left GEMM
// (dense.h): y = clamp(conv(x, W) + bias, lo, hi), the bias packed with W; a
// 1x1 unit-stride unpadded window multiplies each image directly, any other
// goes through the whole image's im2col. res (as y, not overlapping it), when
// given, is added before the clamp (a residual connection).
void conv2d_dense_f32(const PackedGemmLeft& w, const float* x, float* y, const Conv2dShape& s, float lo, float hi,
                      const float* res = nullptr);

// dst (cols x rows) = src (rows x cols)^T, both row-major; cache-blocked, and
// split across the kernel threads when large.
void transpose_f32(const float* src, float* dst, int64_t rows, int64_t cols);

// One image's im2col: col ((c kh kw) x (oh ow)) from x (c x h x w), zeros
// where the window reads padding; split across the kernel threads when large.
void im2col_f32(const float* x, float* col, const Conv2dShape& s);

}  // namespace zs
