// Dense kernel drivers: ISA choice (through zs::isa_supported, registry.cc)
// and the split of large calls across the kernel threads (spmm.cc's pool and
// thread count: ZEROSKIP_NUM_THREADS / set_num_threads).
#include "dense.h"

#include <cstdint>
#include <vector>

#include "spmm.h"

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace zs {
namespace {

const DenseOps* const kTable[] = {
    &kDenseScalar,
#if defined(__aarch64__)
    &kDenseNeon,
#endif
#if defined(__x86_64__) || defined(_M_X64)
    &kDenseAvx2,
    &kDenseAvx512,
#endif
};

// Below these sizes a call runs on the calling thread: waking the pool costs
// more than it saves (measured with bench/dense.py on a 2-core Zen 1).
constexpr size_t kMinParallelMacs = size_t{1} << 17;   // gemm: n_rows * k * m
constexpr size_t kMinParallelElems = size_t{1} << 14;  // gelu / softmax elements
constexpr size_t kMinParallelDwMacs = size_t{1} << 17;  // depthwise conv: outputs * KH * KW
// Depthwise conv: padded input rows per band are kept near this many floats (L1/L2 resident).
constexpr size_t kDwBandFloats = size_t{1} << 14;

int parts_for(size_t work, size_t min_work, size_t units) {
  if (work < min_work || units < 2) return 1;
  int parts = num_threads();
  if (static_cast<size_t>(parts) > units) parts = static_cast<int>(units);
  return parts < 1 ? 1 : parts;
}

// body(t, parts) for t in [0, parts), on `parts` threads.
template <class Body>
void run_parts(int parts, Body body) {
  if (parts <= 1) {
    body(0, 1);
    return;
  }
#if defined(_OPENMP)
#pragma omp parallel for num_threads(parts) schedule(static, 1)
  for (int t = 0; t < parts; ++t) body(t, parts);
#else
  body(0, 1);
#endif
}

// A 64-byte aligned start inside `buf` (16 floats of slack).
size_t aligned_offset(const std::vector<float>& buf) {
  const auto addr = reinterpret_cast<uintptr_t>(buf.data());
  return ((64 - addr % 64) % 64) / sizeof(float);
}

// The rows of w (rows x k, row-major) in panels of `width` rows, k-major (panel p, step j:
// w[p width + r][j] for r < width, 0 past the last row), then the bias padded likewise (0 when
// null): gemm_packed_floats(width, rows, k) floats at dst. Both packed GEMMs use it, with the
// panel width of their register tile (output columns for a Linear, output channels for a conv).
void pack_panels(const float* w, const float* bias, size_t rows, size_t k, size_t width, float* dst) {
  const size_t panels = (rows + width - 1) / width;
  for (size_t p = 0; p < panels; ++p) {
    float* d = dst + p * width * k;
    for (size_t r = 0; r < width; ++r) {
      const size_t row = p * width + r;
      if (row >= rows) {
        for (size_t j = 0; j < k; ++j) d[j * width + r] = 0.0f;
        continue;
      }
      const float* src = w + row * k;
      for (size_t j = 0; j < k; ++j) d[j * width + r] = src[j];
    }
  }
  float* b = dst + panels * width * k;
  for (size_t r = 0; r < panels * width; ++r) b[r] = bias && r < rows ? bias[r] : 0.0f;
}

// Start of part t of `parts` over `units` units of `align`.
size_t split(size_t units, size_t align, int t, int parts) {
  const size_t blocks = (units + align - 1) / align;
  const size_t b = blocks * static_cast<size_t>(t) / static_cast<size_t>(parts) * align;
  return b < units ? b : units;
}

}  // namespace

const DenseOps* const* dense_table(size_t* count) {
  *count = sizeof(kTable) / sizeof(kTable[0]);
  return kTable;
}

const DenseOps* dense_ops(Isa isa) {
  for (const DenseOps* o : kTable)
    if (o->isa == isa) return isa_supported(isa) ? o : nullptr;
  return nullptr;
}

const DenseOps& default_dense_ops() {
  static const DenseOps* best = [] {
    const DenseOps* b = &kDenseScalar;
    for (const DenseOps* o : kTable)
      if (isa_supported(o->isa)) b = o;  // kTable is ordered slowest first
    return b;
  }();
  return *best;
}

void gelu_f32(const DenseOps& ops, const float* x, float* y, size_t n, bool tanh_approx) {
  const int parts = parts_for(n, kMinParallelElems, n / 1024);
  run_parts(parts, [&](int t, int p) {
    const size_t b = split(n, 64, t, p), e = split(n, 64, t + 1, p);
    if (b < e) ops.gelu(x + b, y + b, e - b, tanh_approx);
  });
}

void softmax_f32(const DenseOps& ops, const float* x, float* y, size_t rows, size_t cols) {
  const int parts = parts_for(rows * cols, kMinParallelElems, rows);
  run_parts(parts, [&](int t, int p) {
    const size_t b = split(rows, 1, t, p), e = split(rows, 1, t + 1, p);
    if (b < e) ops.softmax(x + b * cols, y + b * cols, e - b, cols);
  });
}

void gemm_small_f32(const DenseOps& ops, const float* w, const float* x, const float* bias, float* y, size_t n_rows,
                    size_t k, size_t m, float clamp_min, float clamp_max) {
  if (n_rows == 0 || m == 0) return;
  const int parts = parts_for(n_rows * k * m, kMinParallelMacs, n_rows / 16);
  run_parts(parts, [&](int t, int p) {
    ops.gemm(w, x, bias, y, n_rows, k, m, split(n_rows, 16, t, p), split(n_rows, 16, t + 1, p), clamp_min,
             clamp_max);
  });
}

PackedGemm::PackedGemm(const DenseOps& ops, const float* w, const float* bias, size_t n, size_t k)
    : ops_(&ops), n_(n), k_(k), off_(0), buf_(gemm_packed_floats(ops.gemm_np, n, k) + 16) {
  off_ = aligned_offset(buf_);
  pack_panels(w, bias, n, k, ops.gemm_np, buf_.data() + off_);
}

PackedGemmLeft::PackedGemmLeft(const DenseOps& ops, const float* w, const float* bias, size_t m, size_t k)
    : ops_(&ops), m_(m), k_(k), off_(0), buf_(gemm_packed_floats(ops.gemm_mr, m, k) + 16) {
  off_ = aligned_offset(buf_);
  pack_panels(w, bias, m, k, ops.gemm_mr, buf_.data() + off_);
}

void gemm_left_f32(const PackedGemmLeft& w, const float* x, size_t ldx, float* y, size_t ldy, size_t n, float lo,
                   float hi, bool serial, const float* res) {
  const DenseOps& ops = w.ops();
  const size_t m = w.m(), mr = ops.gemm_mr, np = ops.gemm_np, panels = (m + mr - 1) / mr;
  if (m == 0 || n == 0) return;
  const bool clamp = lo > -__builtin_inff() || hi < __builtin_inff();
  GemmLeftArgs a{w.data(), x, ldx, y, ldy, m, n, w.k(), clamp, lo, hi, res};
  std::vector<float> bias_step, ones;
  if (a.k == 0) {
    // y = clamp(bias): one step of k whose weights are the bias, times x = 1, with a zero bias.
    bias_step.assign(gemm_packed_floats(mr, m, 1), 0.0f);
    for (size_t r = 0; r < panels * mr; ++r) bias_step[r] = a.wp[r];
    ones.assign(n, 1.0f);
    a.wp = bias_step.data();
    a.x = ones.data();
    a.ldx = n;
    a.k = 1;
  }
  const size_t col_tiles = (n + np - 1) / np;
  const int parts = serial ? 1 : parts_for(m * n * a.k, kMinParallelMacs, col_tiles > panels ? col_tiles : panels);
  // Split what is larger: by columns every thread streams all of w (m x k), by row panels all of
  // x (k x n). Columns also when the panels are too few to share out.
  const bool by_cols = m <= n ? col_tiles >= static_cast<size_t>(parts) : panels < static_cast<size_t>(parts);
  run_parts(parts, [&](int t, int p) {
    thread_local AlignedBuffer scratch;
    float* xs = scratch.get(ops.gemm_left_scratch);
    if (by_cols) {
      ops.gemm_left(a, 0, panels, split(n, np, t, p), split(n, np, t + 1, p), xs);
    } else {
      ops.gemm_left(a, split(panels, 1, t, p), split(panels, 1, t + 1, p), 0, n, xs);
    }
  });
}

void gemm_f32(const PackedGemm& w, const float* x, size_t ldx, float* y, size_t ldy, size_t m, GemmAct act,
              float lo, float hi) {
  const DenseOps& ops = w.ops();
  const size_t n = w.n(), np = ops.gemm_np, mr = ops.gemm_mr, panels = (n + np - 1) / np;
  if (m == 0 || n == 0) return;
  const bool clamp = lo > -__builtin_inff() || hi < __builtin_inff();
  GemmArgs a{w.data(), x, ldx, y, ldy, m, n, w.k(), act, clamp, lo, hi};
  std::vector<float> bias_step, ones;
  if (a.k == 0) {
    // y = act(bias): one step of k whose weights are the bias (a k = 0 buffer holds just the
    // padded bias), times x = 1, with a zero bias.
    bias_step.assign(gemm_packed_floats(np, n, 1), 0.0f);
    for (size_t c = 0; c < panels * np; ++c) bias_step[c] = a.wp[c];
    ones.assign(m, 1.0f);
    a.wp = bias_step.data();
    a.x = ones.data();
    a.ldx = 1;
    a.k = 1;
  }
  const size_t row_tiles = (m + mr - 1) / mr;
  const int parts = parts_for(m * n * a.k, kMinParallelMacs, panels > row_tiles ? panels : row_tiles);
  // Panels to each thread when there are enough of them (every thread reads all of x), else rows.
  const bool by_panels = panels >= 2 * static_cast<size_t>(parts) || panels >= row_tiles;
  run_parts(parts, [&](int t, int p) {
    if (by_panels) {
      ops.gemm_packed(a, 0, m, split(panels, 1, t, p), split(panels, 1, t + 1, p));
    } else {
      ops.gemm_packed(a, split(m, mr, t, p), split(m, mr, t + 1, p), 0, panels);
    }
  });
}

void conv1x1_nchw_f32(const PackedGemm& w, const float* x, float* y, size_t batch, size_t hw, float lo,
                      float hi, const float* res) {
  const DenseOps& ops = w.ops();
  const size_t n = w.n(), np = ops.gemm_np, mr = ops.gemm_mr, panels = (n + np - 1) / np, q = batch * hw;
  if (n == 0 || q == 0) return;
  const bool clamp = lo > -__builtin_inff() || hi < __builtin_inff();
  const GemmNchwArgs a{w.data(), x, y, res, hw, n, w.k(), clamp, lo, hi};
  const size_t row_tiles = (q + mr - 1) / mr;
  const int parts =
      parts_for(q * n * (a.k ? a.k : 1), kMinParallelMacs, panels > row_tiles ? panels : row_tiles);
  // Panels to each thread when there are enough of them (every thread reads all of x), else positions.
  const bool by_panels = panels >= 2 * static_cast<size_t>(parts) || panels >= row_tiles;
  run_parts(parts, [&](int t, int p) {
    if (by_panels) {
      ops.gemm_nchw(a, split(panels, 1, t, p), split(panels, 1, t + 1, p), 0, q);
    } else {
      ops.gemm_nchw(a, 0, panels, split(q, mr, t, p), split(q, mr, t + 1, p));
    }
  });
}

void dwconv2d_f32(const DenseOps& ops, const float* x, const float* w, const float* bias, float* y,
                  const DwConvShape& s, float clamp_min, float clamp_max) {
  if (s.n == 0 || s.c == 0 || s.oh == 0 || s.ow == 0) return;
  const size_t planes = s.n * s.c, units = planes * s.oh;
  // Scratch: a band of padded rows for the widest vectors (16 lanes), at least one output row's.
  const size_t wp = dwconv_row_floats(s, 16), span = s.dh * (s.kh - 1) + 1;
  size_t band = kDwBandFloats / (wp * s.sh);
  band = band < 1 ? 1 : (band > s.oh ? s.oh : band);
  const size_t scratch_n = wp * ((band - 1) * s.sh + span) + 16;  // + 16: copy_row's last store
  const int parts = parts_for(units * s.ow * s.kh * s.kw, kMinParallelDwMacs, units);
  // Whole planes per part when there are enough of them, else rows.
  const size_t align = planes >= 4 * static_cast<size_t>(parts) ? s.oh : 1;
  run_parts(parts, [&](int t, int p) {
    const size_t b = split(units, align, t, p), e = split(units, align, t + 1, p);
    if (b >= e) return;
    thread_local std::vector<float> scratch;
    if (scratch.size() < scratch_n) scratch.resize(scratch_n);
    ops.dwconv(x, w, bias, y, s, b, e, scratch.data(), scratch_n, clamp_min, clamp_max);
  });
}

void layernorm_f32(const DenseOps& ops, const float* x, const float* r, const float* scale, const float* bias,
                   float* y, size_t rows, size_t n, float eps) {
  const int parts = parts_for(rows * n, kMinParallelElems, rows);
  run_parts(parts, [&](int t, int p) {
    const size_t b = split(rows, 1, t, p), e = split(rows, 1, t + 1, p);
    if (b < e) ops.layernorm(x + b * n, r ? r + b * n : nullptr, scale, bias, y + b * n, e - b, n, eps);
  });
}

void attention_f32(const DenseOps& ops, const AttnShape& s, const float* q, const float* kt, const float* v,
                   const float* mask, float* o) {
  const size_t units = s.units();
  if (units == 0 || s.dv == 0) return;
  const size_t need = attn_scratch_floats(s, 16);
  const int parts = parts_for(s.b * s.h * s.sq * s.sk * (s.d + s.dv), kMinParallelMacs, units);
  run_parts(parts, [&](int t, int p) {
    const size_t b = split(units, 1, t, p), e = split(units, 1, t + 1, p);
    if (b >= e) return;
    thread_local std::vector<float> scratch;
    if (scratch.size() < need) scratch.resize(need);
    ops.attention(s, q, kt, v, mask, o, b, e, scratch.data());
  });
}

void dwconv2d_f32(const float* x, const float* w, const float* bias_or_null, float* y, size_t N, size_t C, size_t H,
                  size_t W, size_t KH, size_t KW, size_t stride_h, size_t stride_w, size_t pad_top, size_t pad_left,
                  size_t pad_bottom, size_t pad_right, size_t dil_h, size_t dil_w, float clamp_min,
                  float clamp_max) {
  if (KH == 0 || KW == 0 || stride_h == 0 || stride_w == 0 || dil_h == 0 || dil_w == 0) return;
  DwConvShape s{N, C, H, W, KH, KW, stride_h, stride_w, pad_top, pad_left, pad_bottom, pad_right, dil_h, dil_w,
                dwconv_out_size(H, KH, stride_h, pad_top, pad_bottom, dil_h),
                dwconv_out_size(W, KW, stride_w, pad_left, pad_right, dil_w)};
  dwconv2d_f32(default_dense_ops(), x, w, bias_or_null, y, s, clamp_min, clamp_max);
}

void gelu_f32(const float* x, float* y, size_t n, bool tanh_approx) {
  gelu_f32(default_dense_ops(), x, y, n, tanh_approx);
}

void softmax_f32(const float* x, float* y, size_t rows, size_t cols) {
  softmax_f32(default_dense_ops(), x, y, rows, cols);
}

void gemv_f32(const float* w, const float* x, const float* bias_or_null, float* y, size_t n_rows, size_t k,
              float clamp_min, float clamp_max) {
  gemm_small_f32(default_dense_ops(), w, x, bias_or_null, y, n_rows, k, 1, clamp_min, clamp_max);
}

void gemm_small_f32(const float* w, const float* x, const float* bias, float* y, size_t n_rows, size_t k, size_t m,
                    float clamp_min, float clamp_max) {
  gemm_small_f32(default_dense_ops(), w, x, bias, y, n_rows, k, m, clamp_min, clamp_max);
}

}  // namespace zs
