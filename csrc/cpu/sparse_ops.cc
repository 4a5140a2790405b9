#include "sparse_ops.h"

#include <cstring>

#if defined(__SSE2__)
#include <xmmintrin.h>
#endif

#include "dense.h"
#include "spmm.h"

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace zs {
namespace {

// Below this many floats moved a copy runs on the calling thread: waking the
// pool costs more than splitting a pass over L2-resident data saves.
constexpr int64_t kMinParallelCopy = int64_t{1} << 14;
// Transposes go through 8 x 8 blocks: 8 source rows are read along (whole
// 32-byte pieces) and 8 destination rows written along. Walking a 32 x 32
// tile column by column instead reads 32 rows at a stride that is often a
// multiple of 4 KiB (K floats), which all fall in one L1 set and evict each
// other: 64 x 2048 took 470 us that way, 95 us by 8 x 8 blocks (1 thread, Zen 1).
constexpr int64_t kBlk = 8;
// Conv2d with many output positions splits them among the threads in blocks
// of kConvBlock (or tile_n, if wider: a multiple of the kernel's widest column
// chunk, so a block is chunked like the whole image and results do not depend
// on the split):
// a thread im2cols one block into a cache-resident buffer and runs every
// output channel over it. With few positions, rows are split instead (one
// im2col of the image, then the row-parallel driver); whole blocks per
// thread would balance badly. 3x3 convs at 90%, 2 threads, Zen 1:
// 64->64 on 56x56 1.64 ms by blocks vs 2.15 ms by rows, 32->32 on 112x112
// 2.38 vs 4.38 ms; 128->128 on 28x28 (13 blocks) 1.28 ms either way.
constexpr int64_t kConvBlock = 64;
constexpr int64_t kConvMinBlocksPerThread = 8;
// The dense GEMM conv's block of positions: whole register tiles of every ISA (2 to 32 columns).
// Below kMinParallelConvMacs multiply-adds a conv runs on the calling thread.
constexpr int64_t kDenseConvBlock = 128;
constexpr int64_t kMinParallelConvMacs = int64_t{1} << 17;

int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

// body(begin, end) over [0, units) in equal ranges of whole `align` units, on
// up to num_threads() threads when `work` (floats moved) is large enough.
template <class Body>
void parallel_units(int64_t units, int64_t align, int64_t work, Body body) {
  const int64_t blocks = (units + align - 1) / align;
  int64_t parts = work < kMinParallelCopy ? 1 : num_threads();
  if (parts > blocks) parts = blocks;
  if (parts <= 1) {
    body(int64_t{0}, units);
    return;
  }
#if defined(_OPENMP)
#pragma omp parallel for num_threads(static_cast<int>(parts)) schedule(static, 1)
  for (int64_t t = 0; t < parts; ++t) {
    body(min64(blocks * t / parts * align, units), min64(blocks * (t + 1) / parts * align, units));
  }
#else
  body(int64_t{0}, units);
#endif
}

// One 8 x 8 block: dst rows c0.. (8 of them, stride ld_d) from src rows r0..
// (8, stride ld_s). With the baseline vector ISA (SSE2 on x86-64, which every
// x86-64 CPU has; not a runtime choice) as four 4 x 4 register transposes,
// else element by element; the scalar loop gathers 8 strided reads per output
// vector and ran at ~1.5 ns a float (128 x 384 both ways: ~100 us, half of a
// 90%-sparse 384^2 Linear at 128 tokens).
inline void transpose8(const float* src, int64_t ld_s, float* dst, int64_t ld_d) {
#if defined(__SSE2__)
  for (int bi = 0; bi < 8; bi += 4) {
    for (int bj = 0; bj < 8; bj += 4) {
      __m128 r0 = _mm_loadu_ps(src + (bi + 0) * ld_s + bj);
      __m128 r1 = _mm_loadu_ps(src + (bi + 1) * ld_s + bj);
      __m128 r2 = _mm_loadu_ps(src + (bi + 2) * ld_s + bj);
      __m128 r3 = _mm_loadu_ps(src + (bi + 3) * ld_s + bj);
      _MM_TRANSPOSE4_PS(r0, r1, r2, r3);
      _mm_storeu_ps(dst + (bj + 0) * ld_d + bi, r0);
      _mm_storeu_ps(dst + (bj + 1) * ld_d + bi, r1);
      _mm_storeu_ps(dst + (bj + 2) * ld_d + bi, r2);
      _mm_storeu_ps(dst + (bj + 3) * ld_d + bi, r3);
    }
  }
#else
  float b[kBlk][kBlk];
  for (int r = 0; r < kBlk; ++r)
    for (int c = 0; c < kBlk; ++c) b[c][r] = src[r * ld_s + c];
  for (int c = 0; c < kBlk; ++c) std::memcpy(dst + c * ld_d, b[c], sizeof(b[c]));
#endif
}

// Source rows are walked in tiles of kTile so the destination lines a tile
// writes (kTile floats of each of its columns) stay in L1 until filled.
constexpr int64_t kTile = 32;

// Destination rows [cb, ce) (source columns) of the transpose of a rows x
// cols matrix with row stride ld_s into dst (row stride ld_d).
void transpose_cols(const float* src, int64_t ld_s, float* dst, int64_t ld_d, int64_t rows, int64_t cb,
                    int64_t ce) {
  const int64_t rows8 = rows / kBlk * kBlk;
  for (int64_t t0 = 0; t0 < rows8; t0 += kTile) {
    const int64_t t1 = min64(rows8, t0 + kTile);
    int64_t c0 = cb;
    for (; c0 + kBlk <= ce; c0 += kBlk)
      for (int64_t r0 = t0; r0 < t1; r0 += kBlk) transpose8(src + r0 * ld_s + c0, ld_s, dst + c0 * ld_d + r0, ld_d);
    for (; c0 < ce; ++c0)
      for (int64_t r = t0; r < t1; ++r) dst[c0 * ld_d + r] = src[r * ld_s + c0];
  }
  for (int64_t r = rows8; r < rows; ++r)
    for (int64_t c = cb; c < ce; ++c) dst[c * ld_d + r] = src[r * ld_s + c];
}

// The calling thread's scratch buffers: kIn (x^T or the whole image's im2col),
// kOut (y^T); on pool threads, kBlock / kYBlock (conv2d's column blocks);
// kRow (one padded input row of im2col).
enum Slot { kIn, kOut, kBlock, kYBlock, kRow, kSlots };

AlignedBuffer& buffer(Slot slot) {
  thread_local AlignedBuffer b[kSlots];
  return b[slot];
}

// Short runs are copied and cleared inline, 8 floats at a time: a block's
// rows are a few output rows of each of K im2col rows, and libc's memcpy /
// memset per run of 8-32 floats plus 64-bit divisions per run (~40 cycles
// each on Zen 1) made the im2col of 16->32 3x3 on 8x8 cost as much as its
// GEMM (23 us of 43, 1 thread).
inline void copy_run(float* to, const float* from, int64_t n) {
  if (n < 4) {
    for (int64_t t = 0; t < n; ++t) to[t] = from[t];
    return;
  }
  // Whole groups of 4, then the last 4 again (overlapping the previous group).
  int64_t t = 0;
  for (; t + 8 <= n; t += 8) std::memcpy(to + t, from + t, 8 * sizeof(float));
  if (t + 4 <= n) {
    std::memcpy(to + t, from + t, 4 * sizeof(float));
    t += 4;
  }
  if (t < n) std::memcpy(to + n - 4, from + n - 4, 4 * sizeof(float));
}
inline void zero_run(float* to, int64_t n) {
  if (n < 4) {
    for (int64_t t = 0; t < n; ++t) to[t] = 0.0f;
    return;
  }
  int64_t t = 0;
  for (; t + 8 <= n; t += 8) std::memset(to + t, 0, 8 * sizeof(float));
  if (t + 4 <= n) {
    std::memset(to + t, 0, 4 * sizeof(float));
    t += 4;
  }
  if (t < n) std::memset(to + n - 4, 0, 4 * sizeof(float));
}

// Rows [rb, re) and output positions [q0, q1) of one image's im2col matrix
// into dst (row stride ld, position q0 first); row (ci, i, j) is
// ci kh kw + i kw + j, position q is output pixel (q / ow, q % ow).
// im2col_part below, for any row stride: each output row's run of a tap
// bounded by the padding (row strides 1 and 2 take its padded-row path).
void im2col_strided(const float* x, float* dst, int64_t ld, const Conv2dShape& s, int64_t rb, int64_t re,
                    int64_t q0, int64_t q1) {
  if (rb >= re || q0 >= q1) return;
  const int64_t oy0 = q0 / s.ow, ox00 = q0 - oy0 * s.ow;
  int64_t j = rb % s.kw, i = (rb / s.kw) % s.kh, ci = rb / (s.kw * s.kh);
  for (int64_t r = rb; r < re; ++r) {
    const float* plane = x + ci * s.h * s.w;
    // Input column of output column ox: ox sw + off; inside [0, w) for ox in [lo, hi).
    const int64_t off = j * s.dw - s.pad_l;
    const int64_t lo = off >= 0 ? 0 : (s.sw - 1 - off) / s.sw;
    const int64_t hi = s.w - off <= 0 ? 0 : (s.w - off + s.sw - 1) / s.sw;
    float* seg = dst + r * ld;
    int64_t ox0 = ox00, iy = oy0 * s.sh - s.pad_t + i * s.dh;
    for (int64_t q = q0; q < q1; ox0 = 0, iy += s.sh) {
      // One output row's share: columns [ox0, ox1) into seg[0, ox1 - ox0).
      const int64_t ox1 = min64(s.ow, ox0 + (q1 - q));
      const bool inside = iy >= 0 && iy < s.h;
      // [ox0, a) and [b, ox1) read padding, [a, b) the image.
      const int64_t a = inside ? min64(ox1, lo > ox0 ? lo : ox0) : ox1;
      const int64_t b = inside ? min64(ox1, hi > a ? hi : a) : ox1;
      zero_run(seg, a - ox0);
      if (b > a) {
        const float* src = plane + iy * s.w + a * s.sw + off;
        float* to = seg + (a - ox0);
        if (s.sw == 1) {
          copy_run(to, src, b - a);
        } else {
          for (int64_t t = 0; t < b - a; ++t) to[t] = src[t * s.sw];
        }
      }
      zero_run(seg + (b - ox0), ox1 - b);
      seg += ox1 - ox0;
      q += ox1 - ox0;
    }
    if (++j == s.kw) {
      j = 0;
      if (++i == s.kh) {
        i = 0;
        ++ci;
      }
    }
  }
}

// Even elements from[0], from[2], ... into to[0, n); reads from[0, 2n).
inline void copy_even(float* to, const float* from, int64_t n) {
  int64_t t = 0;
#if defined(__SSE2__)
  for (; t + 4 <= n; t += 4) {
    const __m128 a = _mm_loadu_ps(from + 2 * t), b = _mm_loadu_ps(from + 2 * t + 4);
    _mm_storeu_ps(to + t, _mm_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0)));
  }
#endif
  for (; t < n; ++t) to[t] = from[2 * t];
}

// As im2col_strided, for unit strides and whole output rows [q0, q1): the input rows under them are
// laid out a channel at a time, padded, in a patch; then each im2col row (one tap) is written
// front to back, an output row's run at a time, from the patch. For small maps this beats the
// per-output-row layout below, whose runs of a few floats went to kw rows in turn (16 channels of
// 8x8, 3x3: 8.5 -> 4.7 us).
void im2col_rows(const float* x, float* dst, int64_t ld, const Conv2dShape& s, int64_t rb, int64_t re,
                 int64_t q0, int64_t q1) {
  const int64_t oy0 = q0 / s.ow, oy1 = q1 / s.ow, wp = s.w + s.pad_l + s.pad_r;
  const int64_t rows = oy1 - oy0 + (s.kh - 1) * s.dh;  // input rows oy0 - pad_t ..
  float* patch = buffer(kRow).get(static_cast<size_t>(rows * wp));
  int64_t laid = -1;  // the channel in the patch
  for (int64_t r = rb; r < re; ++r) {
    const int64_t j = r % s.kw, i = r / s.kw % s.kh, ci = r / (s.kw * s.kh);
    if (ci != laid) {
      const float* plane = x + ci * s.h * s.w;
      for (int64_t t = 0; t < rows; ++t) {
        float* row = patch + t * wp;
        const int64_t iy = oy0 - s.pad_t + t;
        if (iy < 0 || iy >= s.h) {
          zero_run(row, wp);
          continue;
        }
        zero_run(row, s.pad_l);
        copy_run(row + s.pad_l, plane + iy * s.w, s.w);
        zero_run(row + s.pad_l + s.w, s.pad_r);
      }
      laid = ci;
    }
    const float* src = patch + i * s.dh * wp + j * s.dw;
    float* d = dst + r * ld;
    for (int64_t oy = oy0; oy < oy1; ++oy, src += wp, d += s.ow) copy_run(d, src, s.ow);
  }
}

// As im2col_strided. Row strides 1 and 2: each input row an output row reads
// is first laid out with its left and right padding in `padded`, then each of its kw
// column taps is one straight (or even-element) copy from it, with no bounds
// per tap (16->32 3x3 on 8 maps of 8x8, 1 thread: 241 us with the bounds per
// tap, 212 us this way; 3->32 3x3 stride 2 on 224x224: 1160 and 1030 us).
void im2col_part(const float* x, float* dst, int64_t ld, const Conv2dShape& s, int64_t rb, int64_t re,
                 int64_t q0, int64_t q1) {
  if (s.sw != 1 && s.sw != 2) return im2col_strided(x, dst, ld, s, rb, re, q0, q1);
  if (rb >= re || q0 >= q1) return;
  if (s.sh == 1 && s.sw == 1 && q0 % s.ow == 0 && (q1 - q0) % s.ow == 0)
    return im2col_rows(x, dst, ld, s, rb, re, q0, q1);
  const int64_t oy0 = q0 / s.ow, ox00 = q0 - oy0 * s.ow, len = (s.ow - 1) * s.sw + (s.kw - 1) * s.dw + 1;
  // One float past the end: copy_even reads it (zero, never used).
  float* padded = buffer(kRow).get(static_cast<size_t>(len + 1));
  padded[len] = 0.0f;
  // Columns of `padded` holding the image: [pl, pr), pl = pad_l clipped to len.
  const int64_t pl = min64(s.pad_l, len), pr = min64(len, s.pad_l + s.w);
  int64_t j0 = rb % s.kw, r = rb;
  for (int64_t g = rb / s.kw; r < re; ++g, j0 = 0) {
    // Rows [r, r_end) share channel ci and kernel row i; their taps are j0, j0 + 1, ...
    const int64_t r_end = min64(re, r + s.kw - j0), i = g % s.kh, ci = g / s.kh;
    const float* plane = x + ci * s.h * s.w;
    int64_t ox0 = ox00, iy = oy0 * s.sh - s.pad_t + i * s.dh;
    for (int64_t q = q0; q < q1; ox0 = 0, iy += s.sh) {
      const int64_t n = min64(s.ow - ox0, q1 - q);
      float* seg = dst + (q - q0);
      if (iy < 0 || iy >= s.h) {
        for (int64_t rr = r; rr < r_end; ++rr) zero_run(seg + rr * ld, n);
      } else {
        zero_run(padded, pl);
        if (pr > pl) copy_run(padded + pl, plane + iy * s.w + (pl - s.pad_l), pr - pl);
        zero_run(padded + (pr > pl ? pr : pl), len - (pr > pl ? pr : pl));
        for (int64_t rr = r, j = j0; rr < r_end; ++rr, ++j) {
          const float* from = padded + ox0 * s.sw + j * s.dw;
          if (s.sw == 1) {
            copy_run(seg + rr * ld, from, n);
          } else {
            copy_even(seg + rr * ld, from, n);
          }
        }
      }
      q += n;
    }
    r = r_end;
  }
}

// Batch rows up to which Linear runs the batch-1 kernel once per row (row j of
// y is A @ row j of x, no copies) rather than transposing: batch-1 kernels
// stream the weight near memory speed, while one vector-wide column chunk of
// the N > 1 kernels costs about 2 (CSR), 4 (BSR 4x1) and 3 (2:4) batch-1 calls
// (2048^2 at 90%, AVX2, Zen 1, 2 threads: BSR M=3 171 us row by row vs 237 us
// transposed; CSR M=3 422 vs 295 us).
int64_t rowwise_max(const CsrF32&) { return 2; }
int64_t rowwise_max(const BsrF32&) { return 3; }
int64_t rowwise_max(const NmF32&) { return 2; }

// Whether the blocked Linear driver (see linear) balances m batch rows over
// the threads: blocks are tile_n rows (the kernel's widest column chunk, so
// they are chunked like the whole batch and results do not depend on the
// driver or the thread count), dealt out in equal counts; the busiest thread
// may do at most a quarter more than an equal share.
bool linear_blocks_balance(int64_t m, int64_t nb, int threads) {
  const int64_t units = (m + nb - 1) / nb;
  if (units < threads) return false;
  const int64_t most = min64((units + threads - 1) / threads * nb, m);
  return 4 * most * threads <= 5 * m;
}

template <class View>
void linear(const KernelInfo& k, const View& a, const float* x, float* y, int64_t m, const SpmmParams& p,
            LinearOptions lay) {
  if (m <= 0 || a.m == 0) return;
  if (m == 1) lay.x_t = lay.y_t = false;  // a vector is its own transpose
  // GELU over n contiguous outputs, in place.
  const auto act = [&](float* p0, int64_t n) {
    if (lay.gelu) default_dense_ops().gelu(p0, p0, static_cast<size_t>(n), lay.gelu == 2);
  };
  if (m <= rowwise_max(a)) {
    // Transposed operands of so few rows are turned around here, so that a
    // chain's links compute exactly what the plain layout does.
    const float* xr = x;
    if (lay.x_t) {
      float* buf = buffer(kIn).get(static_cast<size_t>(a.k * m));
      transpose_f32(x, buf, a.k, m);
      xr = buf;
    }
    float* yr = lay.y_t ? buffer(kOut).get(static_cast<size_t>(a.m * m)) : y;
    for (int64_t j = 0; j < m; ++j) spmm(k, a, xr + j * a.k, yr + j * a.m, 1, p);
    act(yr, m * a.m);
    if (lay.y_t) transpose_f32(yr, y, m, a.m);
    return;
  }
  // Blocks of nb batch rows, one thread each: transpose the block into a
  // K x nb panel, run every row of A over it, transpose the M x nb result
  // into y. The panels stay in cache and the three passes need no barrier
  // between them; transposing all of x, running the row-split kernel and
  // transposing all of y cost two extra pool wake-ups and passes over memory
  // (90% sparse, 2 threads, Zen 1: 128 x 384 by 384^2 175 us that way, of
  // which 55 us transposes). Transposed operands are copied by rows instead.
  const int64_t nb = k.tile_n > 8 ? k.tile_n : 8, units = (m + nb - 1) / nb;
  if (linear_blocks_balance(m, nb, num_threads())) {
    parallel_units(units, 1, units * nb * a.k, [&](int64_t ub, int64_t ue) {
      float* col = buffer(kBlock).get(static_cast<size_t>(a.k * nb));
      float* yb = buffer(kYBlock).get(static_cast<size_t>(a.m * nb));
      for (int64_t u = ub; u < ue; ++u) {
        const int64_t q0 = u * nb, w = min64(nb, m - q0);
        if (lay.x_t) {
          for (int64_t r = 0; r < a.k; ++r) std::memcpy(col + r * w, x + r * m + q0, sizeof(float) * w);
        } else {
          transpose_cols(x + q0 * a.k, a.k, col, w, w, 0, a.k);
        }
        spmm_serial(k, a, col, yb, w, p);
        act(yb, a.m * w);
        if (lay.y_t) {
          for (int64_t r = 0; r < a.m; ++r) std::memcpy(y + r * m + q0, yb + r * w, sizeof(float) * w);
        } else {
          transpose_cols(yb, w, y + q0 * a.m, a.m, a.m, 0, w);
        }
      }
    });
    return;
  }
  const float* xt = x;
  if (!lay.x_t) {
    float* buf = buffer(kIn).get(static_cast<size_t>(a.k * m));
    transpose_f32(x, buf, m, a.k);
    xt = buf;
  }
  float* yt = lay.y_t ? y : buffer(kOut).get(static_cast<size_t>(a.m * m));
  spmm(k, a, xt, yt, m, p);
  if (lay.gelu) gelu_f32(default_dense_ops(), yt, yt, static_cast<size_t>(a.m * m), lay.gelu == 2);
  if (!lay.y_t) transpose_f32(yt, y, a.m, m);
}

template <class View>
void conv2d(const KernelInfo& k, const View& a, const float* x, float* y, const Conv2dShape& s,
            const SpmmParams& p) {
  if (s.b <= 0 || a.m == 0 || s.oh <= 0 || s.ow <= 0) return;
  const int64_t in_size = s.c * s.h * s.w, ohw = s.oh * s.ow, out_size = a.m * ohw;
  const bool direct = s.kh == 1 && s.kw == 1 && s.sh == 1 && s.sw == 1 && s.pad_t == 0 && s.pad_l == 0 &&
                      s.pad_b == 0 && s.pad_r == 0;
  if (direct) {
    for (int64_t img = 0; img < s.b; ++img) spmm(k, a, x + img * in_size, y + img * out_size, ohw, p);
    return;
  }
  const int64_t nb = k.tile_n > kConvBlock ? k.tile_n : kConvBlock;
  const int64_t blocks = (ohw + nb - 1) / nb, units = s.b * blocks;
  if (units >= kConvMinBlocksPerThread * num_threads()) {
    parallel_units(units, 1, units * nb * a.k, [&](int64_t ub, int64_t ue) {
      float* col = buffer(kBlock).get(static_cast<size_t>(a.k * nb));
      float* yb = buffer(kYBlock).get(static_cast<size_t>(a.m * nb));
      for (int64_t u = ub; u < ue; ++u) {
        const int64_t img = u / blocks, q0 = u % blocks * nb, w = min64(nb, ohw - q0);
        im2col_part(x + img * in_size, col, w, s, 0, a.k, q0, q0 + w);
        spmm_serial(k, a, col, yb, w, p);
        float* yo = y + img * out_size + q0;
        for (int64_t r = 0; r < a.m; ++r) std::memcpy(yo + r * ohw, yb + r * w, sizeof(float) * w);
      }
    });
    return;
  }
  float* col = buffer(kIn).get(static_cast<size_t>(a.k * ohw));
  for (int64_t img = 0; img < s.b; ++img) {
    im2col_f32(x + img * in_size, col, s);
    spmm(k, a, col, y + img * out_size, ohw, p);
  }
}

}  // namespace

void transpose_f32(const float* src, float* dst, int64_t rows, int64_t cols) {
  if (rows <= 0 || cols <= 0) return;
  if (rows == 1 || cols == 1) {
    std::memcpy(dst, src, sizeof(float) * rows * cols);
    return;
  }
  parallel_units(cols, kBlk, rows * cols,
                 [&](int64_t cb, int64_t ce) { transpose_cols(src, cols, dst, rows, rows, cb, ce); });
}

void im2col_f32(const float* x, float* col, const Conv2dShape& s) {
  const int64_t rows = s.c * s.kh * s.kw, ohw = s.oh * s.ow;
  parallel_units(rows, 1, rows * ohw, [&](int64_t rb, int64_t re) { im2col_part(x, col, ohw, s, rb, re, 0, ohw); });
}

void spmm_linear(const KernelInfo& k, const CsrF32& a, const float* x, float* y, int64_t m, const SpmmParams& p,
                 LinearOptions opts) {
  linear(k, a, x, y, m, p, opts);
}
void spmm_linear(const KernelInfo& k, const BsrF32& a, const float* x, float* y, int64_t m, const SpmmParams& p,
                 LinearOptions opts) {
  linear(k, a, x, y, m, p, opts);
}
void spmm_linear(const KernelInfo& k, const NmF32& a, const float* x, float* y, int64_t m, const SpmmParams& p,
                 LinearOptions opts) {
  linear(k, a, x, y, m, p, opts);
}

void conv2d_dense_f32(const PackedGemmLeft& w, const float* x, float* y, const Conv2dShape& s, float lo,
                      float hi, const float* res) {
  if (s.b <= 0 || w.m() == 0 || s.oh <= 0 || s.ow <= 0) return;
  const int64_t in_size = s.c * s.h * s.w, ohw = s.oh * s.ow, m = static_cast<int64_t>(w.m()), out_size = m * ohw;
  const bool direct = s.kh == 1 && s.kw == 1 && s.sh == 1 && s.sw == 1 && s.pad_t == 0 && s.pad_l == 0 &&
                      s.pad_b == 0 && s.pad_r == 0;
  const int64_t kk = static_cast<int64_t>(w.k()), threads = num_threads();
  // Positions shared out in one parallel region: each thread takes an equal range of the batch's
  // positions (whole column tiles) and, block by block, im2cols it into a cache-resident buffer (a
  // 1x1 conv reads x in place) and runs every output channel over it. The thread that im2cols a
  // column is the one that reads it: an im2col split by rows left half of each thread's columns in
  // the other core's cache (2 threads: 3->16 3x3 on 32x32 43 -> 29 us, 16->32 on 8x8 32 -> 28, on
  // 3 maps of 8x8 115 -> 48).
  // Otherwise (a small map with more output channels than positions) whole images, the GEMM split
  // by channel panels: a 7x7 map split by positions leaves ragged column tiles on each thread.
  const int64_t nb = kDenseConvBlock, units = s.b * ((ohw + nb - 1) / nb);
  if (m <= ohw || units >= kConvMinBlocksPerThread * threads || (s.b >= threads && s.b % threads == 0)) {
    const int64_t np = static_cast<int64_t>(w.ops().gemm_np), total = s.b * ohw,
                  tiles = (total + np - 1) / np;
    const int64_t macs = total * kk * m;  // the multiply-adds decide, not the floats copied
    parallel_units(tiles, 1, macs < kMinParallelConvMacs ? 0 : macs, [&](int64_t tb, int64_t te) {
      float* col = direct ? nullptr : buffer(kBlock).get(static_cast<size_t>(kk * nb));
      for (int64_t p = tb * np, end = min64(te * np, total); p < end;) {
        const int64_t img = p / ohw, q0 = p % ohw, n = min64(min64(nb, ohw - q0), end - p);
        float* yo = y + img * out_size + q0;
        const float* ro = res ? res + img * out_size + q0 : nullptr;
        if (direct) {
          gemm_left_f32(w, x + img * in_size + q0, size_t(ohw), yo, size_t(ohw), size_t(n), lo, hi, true, ro);
        } else {
          im2col_part(x + img * in_size, col, n, s, 0, kk, q0, q0 + n);
          gemm_left_f32(w, col, size_t(n), yo, size_t(ohw), size_t(n), lo, hi, true, ro);
        }
        p += n;
      }
    });
    return;
  }
  float* col = direct ? nullptr : buffer(kIn).get(static_cast<size_t>(kk * ohw));
  for (int64_t img = 0; img < s.b; ++img) {
    const float* xi = x + img * in_size;
    if (!direct) {
      im2col_f32(xi, col, s);
      xi = col;
    }
    gemm_left_f32(w, xi, size_t(ohw), y + img * out_size, size_t(ohw), size_t(ohw), lo, hi, false,
                  res ? res + img * out_size : nullptr);
  }
}

void spmm_conv2d(const KernelInfo& k, const CsrF32& a, const float* x, float* y, const Conv2dShape& s,
                 const SpmmParams& p) {
  conv2d(k, a, x, y, s, p);
}
void spmm_conv2d(const KernelInfo& k, const BsrF32& a, const float* x, float* y, const Conv2dShape& s,
                 const SpmmParams& p) {
  conv2d(k, a, x, y, s, p);
}
void spmm_conv2d(const KernelInfo& k, const NmF32& a, const float* x, float* y, const Conv2dShape& s,
                 const SpmmParams& p) {
  conv2d(k, a, x, y, s, p);
}

}  // namespace zs
