// Dense float32 kernels for the ops that torch runs slowly here: GELU (erf and
// tanh forms), softmax over the last dim, batch-1..small Linear (GEMV), and
// depthwise 2-D convolution (NCHW).
// One table of function pointers per ISA (dense_impl.h, instantiated in
// scalar/dense_f32_scalar.cc, x86/dense_f32_{avx2,avx512}.cc,
// arm/dense_f32_neon.cc); the ISA is picked at run time with
// zs::isa_supported (registry.cc), like the SpMM kernels.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "registry.h"

namespace zs {

// A depthwise 2-D convolution (groups == C, one KH x KW filter per channel),
// NCHW float32, zero padding: OH = (H + pad_t + pad_b - dil_h (KH - 1) - 1) / stride_h + 1,
// likewise OW (both > 0 here).
struct DwConvShape {
  size_t n, c, h, w, kh, kw, sh, sw, pad_t, pad_l, pad_b, pad_r, dh, dw, oh, ow;
};

// Floats in one zero-padded input row of the depthwise kernel for vectors of
// `lanes` floats: the padded width, and enough past it that every vector the
// kernel loads (output width rounded up to whole vectors) stays inside; a
// multiple of `lanes`.
inline size_t dwconv_row_floats(const DwConvShape& s, size_t lanes) {
  const size_t owr = (s.ow + lanes - 1) / lanes * lanes;
  const size_t need = (owr - 1) * s.sw + (s.kw - 1) * s.dw + 1 + (s.sw == 2 ? lanes : 0);
  const size_t padded = s.pad_l + s.w + s.pad_r;
  return ((need > padded ? need : padded) + lanes - 1) / lanes * lanes;  // whole vectors
}

// Attention over heads: o = softmax(scale * q @ kt + mask) @ v for each
// (batch b, head h): q is Sq x D, kt D x Sk, v Sk x Dv, mask Sq x Sk (optional),
// o Sq x Dv. Every operand is addressed through strides in floats, [b, h, row,
// col] (0 broadcasts; any sign), so permuted views need no copy; o's column
// stride must be 1.
constexpr size_t kAttnRows = 16;  // query rows per work unit
constexpr int kAttnTile = 4;      // query rows per register tile
struct AttnShape {
  size_t b, h, sq, sk, d, dv;
  float scale;
  ptrdiff_t q[4], kt[4], v[4], m[4], o[4];
  size_t row_blocks() const { return (sq + kAttnRows - 1) / kAttnRows; }
  size_t units() const { return b * h * row_blocks(); }
};

// Scratch floats one thread's attention needs for vectors of `lanes` floats.
inline size_t attn_scratch_floats(const AttnShape& s, size_t lanes) {
  const size_t skp = (s.sk + lanes - 1) / lanes * lanes, dvp = (s.dv + lanes - 1) / lanes * lanes;
  return s.d * skp + s.sk * dvp + kAttnTile * s.d + kAttnTile * skp;
}

// The packed GEMM: y = act(x @ w^T + bias) with w (n x k) copied once into
// panels of `gemm_np` output columns, k-major (panel p, step j: w[p np + c][j]
// for c < np, 0 past n), followed by the bias padded to whole panels (0 when
// there is none). x is m x k with row stride ldx, y m x n with row stride ldy.
// The activation comes before the clamp (Relu and Clip are clamps).
enum class GemmAct : int { kNone = 0, kGeluErf = 1, kGeluTanh = 2 };
struct GemmArgs {
  const float* wp;  // gemm_pack_f32's buffer for this ISA's gemm_np
  const float* x;
  size_t ldx;
  float* y;
  size_t ldy;
  size_t m, n, k;
  GemmAct act;
  bool clamp;
  float lo, hi;
};

// The packed GEMM with the weight on the left (NCHW convolution as W @ im2col):
// y (m x n, row stride ldy) = clamp(w @ x + bias[row]) for x (k x n, row stride
// ldx); w (m x k) packed into panels of gemm_mr rows, k-major (panel p, step
// j: w[p mr + r][j] for r < mr, 0 past m), then the bias padded likewise.
struct GemmLeftArgs {
  const float* wp;
  const float* x;
  size_t ldx;
  float* y;
  size_t ldy;
  size_t m, n, k;
  bool clamp;
  float lo, hi;
  const float* res = nullptr;  // added before the clamp; laid out as y
};

// A 1x1 convolution (stride 1, no padding) of a batch of NCHW maps through the
// Linear packing of its weight (n output channels x k input channels, see
// GemmArgs): y[b][c][p] = clamp(sum_j w[c][j] x[b][j][p] + bias[c] + res[b][c][p]),
// positions counted across the batch (q = b hw + p). res may be null.
struct GemmNchwArgs {
  const float* wp;
  const float* x;
  float* y;
  const float* res;
  size_t hw, n, k;
  bool clamp;
  float lo, hi;
};

// Floats in a packed GEMM weight for panels of np columns.
inline size_t gemm_packed_floats(size_t np, size_t n, size_t k) { return (n + np - 1) / np * np * (k + 1); }

struct DenseOps {
  Isa isa;
  // y[i] = gelu(x[i]); exact (erf) form, or the tanh form when tanh_approx.
  void (*gelu)(const float* x, float* y, size_t n, bool tanh_approx);
  // Softmax along each of `rows` contiguous rows of `cols` floats.
  void (*softmax)(const float* x, float* y, size_t rows, size_t cols);
  // Rows [rb, re) of the Linear layer y = clamp(x @ w^T + bias, lo, hi):
  // w is n_rows x k, x is m x k, y is m x n_rows, all row-major; bias may be null.
  void (*gemm)(const float* w, const float* x, const float* bias, float* y, size_t n_rows, size_t k, size_t m,
               size_t rb, size_t re, float lo, float hi);
  // Output rows [ub, ue) of the depthwise convolution, rows counted across all
  // N * C planes (row u is row u % oh of plane u / oh): y = clamp(conv(x, w) + bias, lo, hi);
  // w is C x KH x KW, bias may be null. scratch holds scratch_n floats, at least
  // dwconv_row_floats(s, 16) * (dh (KH - 1) + 1) + 16 (zero-padded input rows).
  void (*dwconv)(const float* x, const float* w, const float* bias, float* y, const DwConvShape& s, size_t ub,
                 size_t ue, float* scratch, size_t scratch_n, float lo, float hi);
  // Work units [ub, ue) of s.units() (see AttnShape); mask may be null; ws
  // holds attn_scratch_floats(s, 16) floats.
  void (*attention)(const AttnShape& s, const float* q, const float* kt, const float* v, const float* mask, float* o,
                    size_t ub, size_t ue, float* ws);
  // Layer normalisation of `rows` contiguous rows of n floats, of x + r when r
  // is given: y = (z - mean) / sqrt(var + eps) * scale + bias (bias may be
  // null); y may be x (or r).
  void (*layernorm)(const float* x, const float* r, const float* scale, const float* bias, float* y, size_t rows,
                    size_t n, float eps);
  // Output columns per panel of the packed GEMM weight, and rows per register tile.
  size_t gemm_np, gemm_mr;
  // Scratch floats per thread of gemm_left.
  size_t gemm_left_scratch;
  // Rows [rb, re) x panels [pb, pe) of the packed GEMM (see GemmArgs).
  void (*gemm_packed)(const GemmArgs& a, size_t rb, size_t re, size_t pb, size_t pe);
  // Row panels [pb, pe) x columns [cb, ce) of the weight-left GEMM (see GemmLeftArgs), with a
  // thread's scratch of gemm_left_scratch floats (its copies of X).
  void (*gemm_left)(const GemmLeftArgs& a, size_t pb, size_t pe, size_t cb, size_t ce, float* scratch);
  // Output channel panels [pb, pe) x positions [qb, qe) of a 1x1 convolution (see GemmNchwArgs).
  void (*gemm_nchw)(const GemmNchwArgs& a, size_t pb, size_t pe, size_t qb, size_t qe);
};

// Every ISA compiled into this build, fastest last (may include ones this CPU lacks).
const DenseOps* const* dense_table(size_t* count);
// The table for `isa` if compiled in and runnable here, else null.
const DenseOps* dense_ops(Isa isa);
// The fastest ISA this CPU runs (never null: scalar).
const DenseOps& default_dense_ops();

// Drivers: split large calls across the kernel threads (zs::num_threads()).
void gelu_f32(const DenseOps& ops, const float* x, float* y, size_t n, bool tanh_approx);
void softmax_f32(const DenseOps& ops, const float* x, float* y, size_t rows, size_t cols);
void gemm_small_f32(const DenseOps& ops, const float* w, const float* x, const float* bias, float* y, size_t n_rows,
                    size_t k, size_t m, float clamp_min, float clamp_max);
void dwconv2d_f32(const DenseOps& ops, const float* x, const float* w, const float* bias, float* y,
                  const DwConvShape& s, float clamp_min, float clamp_max);
void layernorm_f32(const DenseOps& ops, const float* x, const float* r_or_null, const float* scale,
                   const float* bias_or_null, float* y, size_t rows, size_t n, float eps);
// A Linear weight w (n x k, row-major) and bias (n floats, or null) packed
// once for one ISA's gemm_packed, 64-byte aligned.
class PackedGemm {
 public:
  PackedGemm(const DenseOps& ops, const float* w, const float* bias, size_t n, size_t k);
  const DenseOps& ops() const { return *ops_; }
  size_t n() const { return n_; }
  size_t k() const { return k_; }
  const float* data() const { return buf_.data() + off_; }
  size_t bytes() const { return gemm_packed_floats(ops_->gemm_np, n_, k_) * sizeof(float); }

 private:
  const DenseOps* ops_;
  size_t n_, k_, off_;
  std::vector<float> buf_;
};

// A convolution weight w (m x k: output channels x C KH KW, row-major) and bias
// (m floats, or null) packed once for one ISA's gemm_left, 64-byte aligned.
class PackedGemmLeft {
 public:
  PackedGemmLeft(const DenseOps& ops, const float* w, const float* bias, size_t m, size_t k);
  const DenseOps& ops() const { return *ops_; }
  size_t m() const { return m_; }
  size_t k() const { return k_; }
  const float* data() const { return buf_.data() + off_; }
  size_t bytes() const { return gemm_packed_floats(ops_->gemm_mr, m_, k_) * sizeof(float); }

 private:
  const DenseOps* ops_;
  size_t m_, k_, off_;
  std::vector<float> buf_;
};

// y (m x n, row stride ldy) = clamp(w @ x + bias [+ res]) for x (k x n, row
// stride ldx), split across the kernel threads (by columns, or by row panels
// when n is small) unless `serial`. res, when given, is laid out as y (row
// stride ldy) and must not overlap it. Each output's sum runs in the same
// order however it is split.
void gemm_left_f32(const PackedGemmLeft& w, const float* x, size_t ldx, float* y, size_t ldy, size_t n, float lo,
                   float hi, bool serial = false, const float* res = nullptr);

// y (m x n, row stride ldy) = clamp(act(x @ w^T + bias), lo, hi) for x (m x k,
// row stride ldx), split across the kernel threads; clamp only when lo > -inf
// or hi < inf.
void gemm_f32(const PackedGemm& w, const float* x, size_t ldx, float* y, size_t ldy, size_t m, GemmAct act,
              float lo, float hi);
// A 1x1 convolution, stride 1, no padding, NCHW: x (batch, w.k(), hw), y
// (batch, w.n(), hw) = clamp(w x + bias [+ res]), with the output channels in
// the vectors and the positions broadcast (a map of few positions leaves the
// weight-left GEMM's position tiles part empty). res, when given, is laid out
// as y. Split across the kernel threads.
void conv1x1_nchw_f32(const PackedGemm& w, const float* x, float* y, size_t batch, size_t hw, float lo, float hi,
                      const float* res = nullptr);
void attention_f32(const DenseOps& ops, const AttnShape& s, const float* q, const float* kt, const float* v,
                   const float* mask_or_null, float* o);

// The same with the default ISA.
void gelu_f32(const float* x, float* y, size_t n, bool tanh_approx);
void softmax_f32(const float* x, float* y, size_t rows, size_t cols);
void gemv_f32(const float* w, const float* x, const float* bias_or_null, float* y, size_t n_rows, size_t k,
              float clamp_min, float clamp_max);
void gemm_small_f32(const float* w, const float* x, const float* bias, float* y, size_t n_rows, size_t k, size_t m,
                    float clamp_min = -__builtin_inff(), float clamp_max = __builtin_inff());
// Depthwise conv2d, NCHW: x (N, C, H, W), w (C, 1, KH, KW), y (N, C, OH, OW);
// output sizes from the formula above (nothing is written when either is <= 0).
void dwconv2d_f32(const float* x, const float* w, const float* bias_or_null, float* y, size_t N, size_t C, size_t H,
                  size_t W, size_t KH, size_t KW, size_t stride_h, size_t stride_w, size_t pad_top, size_t pad_left,
                  size_t pad_bottom, size_t pad_right, size_t dil_h, size_t dil_w,
                  float clamp_min = -__builtin_inff(), float clamp_max = __builtin_inff());
// Output size along one axis (0 when the window does not fit).
inline size_t dwconv_out_size(size_t in, size_t k, size_t stride, size_t pad0, size_t pad1, size_t dil) {
  const size_t span = dil * (k - 1) + 1;
  return in + pad0 + pad1 < span ? 0 : (in + pad0 + pad1 - span) / stride + 1;
}

// Per-ISA tables (defined in the per-ISA files).
extern const DenseOps kDenseScalar;
#if defined(__x86_64__) || defined(_M_X64)
extern const DenseOps kDenseAvx2;
extern const DenseOps kDenseAvx512;
#endif
#if defined(__aarch64__)
extern const DenseOps kDenseNeon;
#endif

}  // namespace zs
