// Dense float32 kernels (GELU, softmax, GEMV/small GEMM), written once over a
// vector-traits type V and instantiated per ISA (see dense.h).
//
// V provides the SpMM traits' zero, load, store, bcast, fma(a, b, c) = a*b + c,
// add, clamp, load_part/store_part, hsum (simd/vec_*.h), plus:
//   mul, sub, div
//   max(lo, v), min(hi, v)   return v when v is NaN (NaN propagates)
//   select_lt(a, b, t, f)    a < b ? t : f, per lane
//   hsums<N>(v, out)          out[i] = hsum(v[i]) for i < N
//   pow2_rounded(t)          2^n for t = n + 1.5 * 2^23 (n integer in [-127, 127];
//                            n = -127 gives 0): ((bits(t) << 23) + (127 << 23))
//   even(a, b), odd(a, b)    the even / odd floats of the 2W at p, given a = load(p),
//                            b = load(p + W), in an ISA-specific lane order that
//                            unshuffle(v) puts back in memory order (the same
//                            order for both, so sums of them stay consistent)
//
// Accuracy (measured by tests/test_dense_kernels.py against float64):
//   exp      Cephes-style: n = round(x log2 e), r = x - n ln2 (two-part ln2),
//            degree-6 polynomial, times 2^n built from n's bits: about 1-2 ulp;
//            exp(-inf) = 0; results under 2^-126 flush to 0 (see exp).
//   gelu     0.5 x (1 + erf(x / sqrt 2)) with a rational erf (see gelu_erf):
//            erf within ~3.5e-7 absolute, so |error| <~ 1.8e-7 |x| + a few ulp.
//   gelu_tanh 0.5 x (1 + tanh(u)) computed as x * sigmoid(2u) = x e / (1 + e),
//            e = exp(2u): a few ulp relative, also far in the negative tail.
//   dwconv   bias + taps in row-major filter order, one FMA each.
#pragma once

#include <cstddef>

// Internal linkage only: a file compiled with -mavx512f must not hand the
// linker an out-of-line helper that an AVX2 file would then call.
namespace zs::dense_impl {
namespace {

template <class V>
struct Impl {
  using R = typename V::R;
  static constexpr int W = V::W;

  // 1.5 * 2^23: adding and subtracting it rounds a float in (-2^22, 2^22) to
  // the nearest integer.
  static constexpr float kRound = 12582912.0f;

  // exp(x) for x <= 88 (and NaN -> NaN, -inf -> 0). Results below 2^-126
  // (x < -87.3) flush to 0 (or come out as 2^-126-scale normals), which both
  // callers tolerate: softmax terms under 1.2e-38 of the row's largest, and
  // sigmoid values that small in the tanh GELU.
  static R exp(R x) {
    x = V::max(V::bcast(-88.0f), x);  // n >= -127, whose 2^n below is exactly 0
    const R t = V::fma(x, V::bcast(1.44269504088896341f), V::bcast(kRound));
    const R n = V::sub(t, V::bcast(kRound));
    R r = V::fma(n, V::bcast(-0.693145751953125f), x);
    r = V::fma(n, V::bcast(-1.428606765330187e-06f), r);
    R p = V::bcast(1.9875691500e-4f);
    p = V::fma(p, r, V::bcast(1.3981999507e-3f));
    p = V::fma(p, r, V::bcast(8.3334519073e-3f));
    p = V::fma(p, r, V::bcast(4.1665795894e-2f));
    p = V::fma(p, r, V::bcast(1.6666665459e-1f));
    p = V::fma(p, r, V::bcast(5.0000001201e-1f));
    p = V::fma(p, V::mul(r, r), r);
    p = V::add(p, V::bcast(1.0f));
    return V::mul(p, V::pow2_rounded(t));
  }

  // gelu(x) = x (1 + erf(z)) / 2, z = x / sqrt 2, with erf(z) = z P(z^2) / Q(z^2)
  // on |z| <= 4 (P degree 6, Q degree 4 in z^2: the odd rational Eigen and
  // XLA use; max error 6.5e-8 in exact arithmetic, about 3.5e-7 absolute in
  // float32 with FMA, 5e-7 without), clamped to [-1, 1]. Below x = -5.7, gelu is -0 (|true|
  // < 4e-8), which also makes gelu(-inf) = 0 rather than -inf * 0.
  // (An MLAS-style split, polynomial near 0 and 1 - exp(-G) elsewhere, is more
  // accurate in the negative tail but 2.5x slower here: slower than torch.)
  static R gelu_erf(R x) {
    const R z = V::clamp(V::mul(x, V::bcast(0.70710678118654752f)), V::bcast(-4.0f), V::bcast(4.0f));
    const R z2 = V::mul(z, z);
    R p = V::bcast(-2.72614225801306e-10f);
    p = V::fma(p, z2, V::bcast(2.77068142495902e-08f));
    p = V::fma(p, z2, V::bcast(-2.10102402082508e-06f));
    p = V::fma(p, z2, V::bcast(-5.69250639462346e-05f));
    p = V::fma(p, z2, V::bcast(-7.34990630326855e-04f));
    p = V::fma(p, z2, V::bcast(-2.95459980854025e-03f));
    p = V::fma(p, z2, V::bcast(-1.60960333262415e-02f));
    p = V::mul(p, z);
    R q = V::bcast(-1.45660718464996e-05f);
    q = V::fma(q, z2, V::bcast(-2.13374055278905e-04f));
    q = V::fma(q, z2, V::bcast(-1.68282697438203e-03f));
    q = V::fma(q, z2, V::bcast(-7.37332916720468e-03f));
    q = V::fma(q, z2, V::bcast(-1.42647390514189e-02f));
    const R erf = V::clamp(V::div(p, q), V::bcast(-1.0f), V::bcast(1.0f));
    const R h = V::mul(x, V::bcast(0.5f));
    return V::select_lt(x, V::bcast(-5.7f), V::bcast(-0.0f), V::fma(h, erf, h));
  }

  static R gelu_tanh(R x) {
    // 0.5 x (1 + tanh(u)) = x sigmoid(2u), u = sqrt(2/pi) (x + 0.044715 x^3).
    // Below x = -12 the result is 0 (or -0); clamping x there keeps -inf from
    // making -inf * 0.
    const R xm = V::max(V::bcast(-12.0f), x);
    const R x2 = V::mul(xm, xm);
    const R u2 = V::mul(xm, V::fma(x2, V::bcast(0.0713548162726f), V::bcast(1.5957691216057308f)));
    // sigmoid(20) rounds to 1; exp flushes below e^-87.3 (y then 0 instead of < 1e-36).
    const R e = exp(V::min(V::bcast(20.0f), u2));
    return V::mul(xm, V::div(e, V::add(e, V::bcast(1.0f))));
  }

  // Four independent vectors per step: the polynomials are long dependency
  // chains, and the out-of-order window alone does not overlap enough of them.
  template <R (*F)(R)>
  static void map(const float* x, float* y, size_t n) {
    size_t i = 0;
    for (; i + 4 * W <= n; i += 4 * W) {
      const R a = F(V::load(x + i)), b = F(V::load(x + i + W));
      const R c = F(V::load(x + i + 2 * W)), d = F(V::load(x + i + 3 * W));
      V::store(y + i, a);
      V::store(y + i + W, b);
      V::store(y + i + 2 * W, c);
      V::store(y + i + 3 * W, d);
    }
    for (; i + W <= n; i += W) V::store(y + i, F(V::load(x + i)));
    if (i < n) V::store_part(y + i, F(V::load_part(x + i, int(n - i))), int(n - i));
  }

  static void gelu(const float* x, float* y, size_t n, bool tanh_approx) {
    if (tanh_approx) {
      map<gelu_tanh>(x, y, n);
    } else {
      map<gelu_erf>(x, y, n);
    }
  }

  static float hmax(R v) {
    float b[W];
    V::store(b, v);
    float m = b[0];
    for (int i = 1; i < W; ++i) m = b[i] > m ? b[i] : m;
    return m;
  }

  // One row: max-subtract, exp, sum, scale. A row holding NaN, +inf, or only
  // -inf gives NaN everywhere, like torch.softmax.
  static void softmax_row(const float* x, float* y, size_t n) {
    size_t j = 0;
    float mx = -__builtin_inff();
    if (n >= size_t(W)) {
      R m0 = V::load(x), m1 = m0;
      for (j = W; j + 2 * W <= n; j += 2 * W) {
        m0 = V::max(m0, V::load(x + j));
        m1 = V::max(m1, V::load(x + j + W));
      }
      for (; j + W <= n; j += W) m0 = V::max(m0, V::load(x + j));
      mx = hmax(V::max(m0, m1));
    }
    for (; j < n; ++j) mx = x[j] > mx ? x[j] : mx;

    const R vm = V::bcast(mx);
    R s0 = V::zero(), s1 = V::zero();
    float sum = 0.0f;
    j = 0;
    // The lane sums are folded into `sum` every 64 vectors, so rounding grows
    // with n / (64 W) + 64 rather than n / W.
    for (size_t blk = 0; j + 2 * W <= n; j += 2 * W) {
      const R a = exp(V::sub(V::load(x + j), vm)), b = exp(V::sub(V::load(x + j + W), vm));
      V::store(y + j, a);
      V::store(y + j + W, b);
      s0 = V::add(s0, a);
      s1 = V::add(s1, b);
      if (++blk == 32) {
        sum += V::hsum(V::add(s0, s1));
        s0 = s1 = V::zero();
        blk = 0;
      }
    }
    for (; j + W <= n; j += W) {
      const R a = exp(V::sub(V::load(x + j), vm));
      V::store(y + j, a);
      s0 = V::add(s0, a);
    }
    sum += V::hsum(V::add(s0, s1));
    if (j < n) {
      const int c = int(n - j);
      V::store_part(y + j, exp(V::sub(V::load_part(x + j, c), vm)), c);
      for (; j < n; ++j) sum += y[j];
    }
    const R inv = V::bcast(1.0f / sum);
    j = 0;
    for (; j + W <= n; j += W) V::store(y + j, V::mul(V::load(y + j), inv));
    if (j < n) V::store_part(y + j, V::mul(V::load_part(y + j, int(n - j)), inv), int(n - j));
  }

  static void softmax(const float* x, float* y, size_t rows, size_t cols) {
    for (size_t r = 0; r < rows; ++r) softmax_row(x + r * cols, y + r * cols, cols);
  }

  // NR weight rows x M batch rows of dot products over k, K unrolled U times.
  // out[b * ldo + r] = sum_j w[r * k + j] * x[b * k + j].
  template <int NR, int M, int U>
  static void dots(const float* w, const float* x, size_t k, float* out, size_t ldo) {
    R acc[U][NR][M];
    for (int u = 0; u < U; ++u)
      for (int r = 0; r < NR; ++r)
        for (int b = 0; b < M; ++b) acc[u][r][b] = V::zero();
    size_t j = 0;
    for (; j + U * W <= k; j += U * W) {
      for (int u = 0; u < U; ++u) {
        R xv[M];
        for (int b = 0; b < M; ++b) xv[b] = V::load(x + b * k + j + u * W);
        for (int r = 0; r < NR; ++r) {
          const R wv = V::load(w + r * k + j + u * W);
          for (int b = 0; b < M; ++b) acc[u][r][b] = V::fma(wv, xv[b], acc[u][r][b]);
        }
      }
    }
    for (; j + W <= k; j += W) {
      R xv[M];
      for (int b = 0; b < M; ++b) xv[b] = V::load(x + b * k + j);
      for (int r = 0; r < NR; ++r) {
        const R wv = V::load(w + r * k + j);
        for (int b = 0; b < M; ++b) acc[0][r][b] = V::fma(wv, xv[b], acc[0][r][b]);
      }
    }
    if (j < k) {
      const int c = int(k - j);
      R xv[M];
      for (int b = 0; b < M; ++b) xv[b] = V::load_part(x + b * k + j, c);
      for (int r = 0; r < NR; ++r) {
        const R wv = V::load_part(w + r * k + j, c);
        for (int b = 0; b < M; ++b) acc[U > 1 ? 1 : 0][r][b] = V::fma(wv, xv[b], acc[U > 1 ? 1 : 0][r][b]);
      }
    }
    for (int b = 0; b < M; ++b) {
      R s[NR];
      for (int r = 0; r < NR; ++r) {
        s[r] = acc[0][r][b];
        for (int u = 1; u < U; ++u) s[r] = V::add(s[r], acc[u][r][b]);
      }
      V::template hsums<NR>(s, out + b * ldo);
    }
  }

  // Rows [rb, re) of y (m x n) for at most 4 batch rows, M of them.
  template <int NR, int M, int U>
  static void gemm_rows(const float* w, const float* x, float* y, size_t n, size_t k, size_t rb, size_t re) {
    size_t i = rb;
    for (; i + NR <= re; i += NR) dots<NR, M, U>(w + i * k, x, k, y + i, n);
    for (; i < re; ++i) dots<1, M, 2>(w + i * k, x, k, y + i, n);
  }

  static void gemm(const float* w, const float* x, const float* bias, float* y, size_t n, size_t k, size_t m,
                   size_t rb, size_t re, float lo, float hi) {
    if (rb >= re) return;
    for (size_t b0 = 0; b0 < m; b0 += 4) {
      const float* xb = x + b0 * k;
      float* yb = y + b0 * n;
      switch (m - b0 >= 4 ? 4 : m - b0) {
        case 1: gemm_rows<8, 1, 1>(w, xb, yb, n, k, rb, re); break;
        case 2: gemm_rows<4, 2, 1>(w, xb, yb, n, k, rb, re); break;
        case 3: gemm_rows<4, 3, 1>(w, xb, yb, n, k, rb, re); break;
        default: gemm_rows<2, 4, 1>(w, xb, yb, n, k, rb, re); break;
      }
    }
    const bool clamp = lo > -__builtin_inff() || hi < __builtin_inff();
    if (!bias && !clamp) return;
    for (size_t b = 0; b < m; ++b) {
      float* yr = y + b * n;
      for (size_t i = rb; i < re; ++i) {
        float v = yr[i] + (bias ? bias[i] : 0.0f);
        if (clamp) v = v < lo ? lo : (v > hi ? hi : v);  // NaN stays NaN
        yr[i] = v;
      }
    }
  }

  // ---- packed GEMM (see DenseOps::gemm_packed) ----
  //
  // A register tile of MR rows x 2W columns (AVX2: 6 x 16, 12 accumulators)
  // walks one panel of the packed weight: per step of k, two vector loads of
  // the panel and one broadcast of x per row. k goes in chunks (kc floats of
  // a panel fit in half of L1), rows in blocks of kMC; partial sums wait in y
  // between chunks, and the epilogue (bias, GELU, clamp) runs on the registers
  // after the last chunk.
  static constexpr int kNP = 2 * W;
  static constexpr int kMR = W == 8 ? 6 : 8;
  // Rows of x per block: a block's k chunk stays in L1/L2 while every panel passes over it.
  static constexpr size_t kMC = 8 * kMR;

  // An MR x 2W accumulator tile of y (row stride ldy) holding `cols` <= 2W valid columns: zeros on
  // the first k chunk, else the partial sums y holds; and back. Both GEMMs' tiles use these.
  template <int MR>
  static void tile_load(R (&acc)[MR][2], const float* y, size_t ldy, int cols, bool first) {
    const int c0 = cols < W ? cols : W, c1 = cols - W;  // columns in each vector (c1 <= 0: none)
    for (int r = 0; r < MR; ++r) {
      if (first) {
        acc[r][0] = acc[r][1] = V::zero();
      } else {
        acc[r][0] = c0 == W ? V::load(y + r * ldy) : V::load_part(y + r * ldy, c0);
        const float* y1 = y + r * ldy + W;
        acc[r][1] = c1 == W ? V::load(y1) : c1 > 0 ? V::load_part(y1, c1) : V::zero();
      }
    }
  }

  template <int MR>
  static void tile_store(const R (&acc)[MR][2], float* y, size_t ldy, int cols) {
    const int c0 = cols < W ? cols : W, c1 = cols - W;
    for (int r = 0; r < MR; ++r) {
      if (c0 == W) V::store(y + r * ldy, acc[r][0]); else V::store_part(y + r * ldy, acc[r][0], c0);
      if (c1 == W) {
        V::store(y + r * ldy + W, acc[r][1]);
      } else if (c1 > 0) {
        V::store_part(y + r * ldy + W, acc[r][1], c1);
      }
    }
  }

  // `bias` (the panel's, padded) is given with the last k chunk only: the epilogue's cue.
  template <int MR>
  static void gemm_tile(const float* bp, const float* x, size_t ldx, size_t kc, float* y, size_t ldy, int cols,
                        bool first, const float* bias, const GemmArgs& a) {
    R acc[MR][2];
    tile_load<MR>(acc, y, ldy, cols, first);
    for (size_t j = 0; j < kc; ++j) {
      const R b0 = V::load(bp + j * kNP), b1 = V::load(bp + j * kNP + W);
      for (int r = 0; r < MR; ++r) {
        const R xv = V::bcast(x[r * ldx + j]);
        acc[r][0] = V::fma(xv, b0, acc[r][0]);
        acc[r][1] = V::fma(xv, b1, acc[r][1]);
      }
    }
    if (bias) {
      const R lo = V::bcast(a.lo), hi = V::bcast(a.hi), v0 = V::load(bias), v1 = V::load(bias + W);
      for (int r = 0; r < MR; ++r)
        for (int h = 0; h < 2; ++h) {
          R v = V::add(acc[r][h], h ? v1 : v0);
          if (a.act == GemmAct::kGeluErf) v = gelu_erf(v);
          if (a.act == GemmAct::kGeluTanh) v = gelu_tanh(v);
          if (a.clamp) v = V::clamp(v, lo, hi);
          acc[r][h] = v;
        }
    }
    tile_store<MR>(acc, y, ldy, cols);
  }

  template <int MR>
  static void gemm_rows(const float* bp, const float* x, size_t kc, float* y, int cols, bool first,
                        const float* bias, const GemmArgs& a, size_t rb, size_t re) {
    size_t i = rb;
    for (; i + MR <= re; i += MR)
      gemm_tile<MR>(bp, x + i * a.ldx, a.ldx, kc, y + i * a.ldy, a.ldy, cols, first, bias, a);
    if (i == re) return;
    if constexpr (MR > 1) gemm_rows<MR - 1>(bp, x, kc, y, cols, first, bias, a, i, re);
  }

  static void gemm_packed(const GemmArgs& a, size_t rb, size_t re, size_t pb, size_t pe) {
    if (rb >= re || pb >= pe || a.k == 0) return;
    // k chunks keep a panel's chunk in L1 while every row tile of a block passes over it. One row
    // tile uses it once: then the panels stream front to back unchunked, which the hardware prefetch
    // follows better than 16 KB runs a panel (kNP k floats) apart (four 2048 x 2048 Linears at batch 8, weights
    // from memory, 2 threads: 2.8 -> 1.95 ms).
    const size_t kc_max = re - rb <= size_t(kMR) ? a.k : 4096 / kNP;
    const size_t chunks = (a.k + kc_max - 1) / kc_max;
    const size_t kc_even = (a.k + chunks - 1) / chunks;
    const float* bias_all = a.wp + (a.n + kNP - 1) / kNP * kNP * a.k;
    for (size_t k0 = 0; k0 < a.k; k0 += kc_even) {
      const size_t kc = a.k - k0 < kc_even ? a.k - k0 : kc_even;
      const bool first = k0 == 0, last = k0 + kc == a.k;
      for (size_t i0 = rb; i0 < re; i0 += kMC) {
        const size_t i1 = re - i0 < kMC ? re : i0 + kMC;
        for (size_t p = pb; p < pe; ++p) {
          const size_t c0 = p * kNP;
          const int cols = a.n - c0 < size_t(kNP) ? int(a.n - c0) : kNP;
          gemm_rows<kMR>(a.wp + p * kNP * a.k + k0 * kNP, a.x + k0, kc, a.y + c0, cols, first,
                         last ? bias_all + c0 : nullptr, a, i0, i1);
        }
      }
    }
  }

  // ---- 1x1 convolution over NCHW positions (see DenseOps::gemm_nchw) ----
  //
  // The Linear packing's tile turned around: MR positions (broadcast from x,
  // one input plane apart per step of k) x 2W output channels (the panel's two
  // vectors), the whole of k in registers, so a map of 7x7 positions wastes no
  // lanes. The tile goes back through a buffer on the stack, channel by channel:
  // where its MR positions sit side by side in one map (all tiles but those
  // that cross an image's end), the buffer is turned around and each channel's
  // MR outputs are one part vector; else MR x 2W scalar stores (the vector way,
  // 2 threads: 160->960 on 7x7 118 -> 90 us, 24->144 on 56x56 1435 -> 296).
  // Either way the write-back is worth it only when k is large: the planner
  // times this against the weight-left GEMM. Each sum runs over k in order, as
  // in the weight-left GEMM.
  template <int MR>
  static void nchw_tile(const float* bp, const float* const* xr, float* const* yr, const float* const* rr,
                        int rows, int cols, const float* bias, const GemmNchwArgs& a) {
    R acc[MR][2];
    for (int r = 0; r < MR; ++r) acc[r][0] = acc[r][1] = V::zero();
    for (size_t j = 0, o = 0; j < a.k; ++j, o += a.hw) {
      const R b0 = V::load(bp + j * kNP), b1 = V::load(bp + j * kNP + W);
      for (int r = 0; r < MR; ++r) {
        const R xv = V::bcast(xr[r][o]);
        acc[r][0] = V::fma(xv, b0, acc[r][0]);
        acc[r][1] = V::fma(xv, b1, acc[r][1]);
      }
    }
    alignas(64) float t[MR][kNP];
    const R v0 = V::load(bias), v1 = V::load(bias + W);
    for (int r = 0; r < MR; ++r) {
      V::store(t[r], V::add(acc[r][0], v0));
      V::store(t[r] + W, V::add(acc[r][1], v1));
    }
    const float lo = a.lo, hi = a.hi;
    if (rows == MR && MR <= W && yr[MR - 1] == yr[0] + (MR - 1)) {
      // MR positions side by side in one map: each channel's run is one part vector.
      alignas(64) float u[kNP][MR];
      for (int r = 0; r < MR; ++r)
        for (int c = 0; c < kNP; ++c) u[c][r] = t[r][c];
      const R lov = V::bcast(lo), hiv = V::bcast(hi);
      for (int c = 0; c < cols; ++c) {
        const size_t off = size_t(c) * a.hw;
        R v = V::load_part(u[c], MR);
        if (rr) v = V::add(v, V::load_part(rr[0] + off, MR));
        if (a.clamp) v = V::clamp(v, lov, hiv);
        V::store_part(yr[0] + off, v, MR);
      }
      return;
    }
    for (int c = 0; c < cols; ++c) {
      const size_t off = size_t(c) * a.hw;
      for (int r = 0; r < rows; ++r) {
        float v = t[r][c];
        if (rr) v += rr[r][off];
        if (a.clamp) v = v < lo ? lo : (v > hi ? hi : v);  // NaN stays NaN
        yr[r][off] = v;
      }
    }
  }

  static void gemm_nchw(const GemmNchwArgs& a, size_t pb, size_t pe, size_t qb, size_t qe) {
    if (pb >= pe || qb >= qe) return;
    const float* bias_all = a.wp + (a.n + kNP - 1) / kNP * kNP * a.k;
    // Positions in blocks whose x (k planes' worth) stays in L2 while every panel passes over it.
    size_t qblock = (size_t(1) << 16) / (a.k ? a.k : 1) / kMR * kMR;
    if (qblock < size_t(kMR)) qblock = kMR;
    for (size_t q0 = qb; q0 < qe; q0 += qblock) {
      const size_t q1 = qe - q0 < qblock ? qe : q0 + qblock;
      for (size_t p = pb; p < pe; ++p) {
        const size_t c0 = p * kNP;
        const int cols = a.n - c0 < size_t(kNP) ? int(a.n - c0) : kNP;
        for (size_t q = q0; q < q1; q += kMR) {
          const int rows = q1 - q < size_t(kMR) ? int(q1 - q) : kMR;
          const float* xr[kMR];
          float* yr[kMR];
          const float* rr[kMR];
          for (int r = 0; r < kMR; ++r) {
            const size_t at = q + size_t(r < rows ? r : rows - 1), img = at / a.hw, pos = at % a.hw;
            const size_t yo = (img * a.n + c0) * a.hw + pos;
            xr[r] = a.x + img * a.k * a.hw + pos;
            yr[r] = a.y + yo;
            rr[r] = a.res ? a.res + yo : nullptr;
          }
          nchw_tile<kMR>(a.wp + p * kNP * a.k, xr, yr, a.res ? rr : nullptr, rows, cols, bias_all + c0, a);
        }
      }
    }
  }

  // ---- packed GEMM, weight on the left (see DenseOps::gemm_left) ----
  //
  // Y = W @ X for NCHW convolutions: a register tile of MR rows (output
  // channels, broadcast from the packed panel) x 2W columns (output
  // positions). Each chunk of kc rows x kNC columns of X is first copied into
  // `xs` as column panels of 2W floats per row, contiguous and zero-padded
  // past n: the tiles then stream it in order (read in place, every row of a
  // tile is another page and the loads miss the TLB), and every row panel of
  // W reuses the copy. k in chunks as in gemm_packed.
  static constexpr size_t kNC = 8 * kNP;
  static constexpr size_t kLeftKc = 256;

  static void pack_x(const float* x, size_t ldx, size_t kc, size_t j0, size_t j1, float* xs) {
    for (size_t j = j0, t = 0; j < j1; j += kNP, ++t) {
      float* d = xs + t * kc * kNP;
      const int cols = j1 - j < size_t(kNP) ? int(j1 - j) : kNP;
      if (cols == kNP) {
        for (size_t kk = 0; kk < kc; ++kk) {
          V::store(d + kk * kNP, V::load(x + kk * ldx + j));
          V::store(d + kk * kNP + W, V::load(x + kk * ldx + j + W));
        }
      } else {
        for (size_t kk = 0; kk < kc; ++kk)
          for (int c = 0; c < kNP; ++c) d[kk * kNP + c] = c < cols ? x[kk * ldx + j + c] : 0.0f;
      }
    }
  }

  // HALF: a tail tile of at most W columns, one vector per row (a 7x7 map is 3 tiles of 16 columns
  // and one of 1: computing that one as a full tile cost a fifth of the GEMM).
  template <int MR, bool HALF = false>
  static void gemm_left_tile(const float* ap, const float* xs, size_t kc, float* y, size_t ldy, int cols,
                             bool first, const float* bias, const GemmLeftArgs& a) {
    R acc[MR][2];
    tile_load<MR>(acc, y, ldy, cols, first);
    for (size_t j = 0; j < kc; ++j) {
      const R b0 = V::load(xs + j * kNP);
      if constexpr (HALF) {
        for (int r = 0; r < MR; ++r) acc[r][0] = V::fma(V::bcast(ap[j * kMR + r]), b0, acc[r][0]);
      } else {
        const R b1 = V::load(xs + j * kNP + W);
        for (int r = 0; r < MR; ++r) {
          const R av = V::bcast(ap[j * kMR + r]);
          acc[r][0] = V::fma(av, b0, acc[r][0]);
          acc[r][1] = V::fma(av, b1, acc[r][1]);
        }
      }
    }
    if (bias) {  // the last k chunk: bias per row, the residual, then the clamp
      const R lo = V::bcast(a.lo), hi = V::bcast(a.hi);
      R res[MR][2];
      if (a.res) tile_load<MR>(res, a.res + (y - a.y), ldy, cols, false);
      for (int r = 0; r < MR; ++r) {
        const R bv = V::bcast(bias[r]);
        for (int h = 0; h < 2; ++h) {
          R v = V::add(acc[r][h], bv);
          if (a.res) v = V::add(v, res[r][h]);
          if (a.clamp) v = V::clamp(v, lo, hi);
          acc[r][h] = v;
        }
      }
    }
    tile_store<MR>(acc, y, ldy, cols);
  }

  template <int MR>
  static void gemm_left_panel(const float* ap, const float* xs, size_t kc, float* y, bool first, const float* bias,
                              const GemmLeftArgs& a, size_t j0, size_t j1) {
    for (size_t j = j0, t = 0; j < j1; j += kNP, ++t) {
      const int cols = j1 - j < size_t(kNP) ? int(j1 - j) : kNP;
      if (cols <= W) {
        gemm_left_tile<MR, true>(ap, xs + t * kc * kNP, kc, y + j, a.ldy, cols, first, bias, a);
      } else {
        gemm_left_tile<MR>(ap, xs + t * kc * kNP, kc, y + j, a.ldy, cols, first, bias, a);
      }
    }
  }

  template <int MR>
  static void gemm_left_rows(int rows, const float* ap, const float* xs, size_t kc, float* y, bool first,
                             const float* bias, const GemmLeftArgs& a, size_t j0, size_t j1) {
    if (rows == MR) return gemm_left_panel<MR>(ap, xs, kc, y, first, bias, a, j0, j1);
    if constexpr (MR > 1) gemm_left_rows<MR - 1>(rows, ap, xs, kc, y, first, bias, a, j0, j1);
  }

  // xs: a scratch of kLeftKc * kNC floats (DenseOps::gemm_left_scratch).
  static void gemm_left(const GemmLeftArgs& a, size_t pb, size_t pe, size_t cb, size_t ce, float* xs) {
    if (pb >= pe || cb >= ce || a.k == 0) return;
    const size_t chunks = (a.k + kLeftKc - 1) / kLeftKc, kc_even = (a.k + chunks - 1) / chunks;
    const float* bias_all = a.wp + (a.m + kMR - 1) / kMR * kMR * a.k;
    for (size_t k0 = 0; k0 < a.k; k0 += kc_even) {
      const size_t kc = a.k - k0 < kc_even ? a.k - k0 : kc_even;
      const bool first = k0 == 0, last = k0 + kc == a.k;
      for (size_t j0 = cb; j0 < ce; j0 += kNC) {
        const size_t j1 = ce - j0 < kNC ? ce : j0 + kNC;
        pack_x(a.x + k0 * a.ldx, a.ldx, kc, j0, j1, xs);
        for (size_t p = pb; p < pe; ++p) {
          const size_t r0 = p * kMR;
          const int rows = a.m - r0 < size_t(kMR) ? int(a.m - r0) : kMR;
          gemm_left_rows<kMR>(rows, a.wp + p * kMR * a.k + k0 * kMR, xs, kc, a.y + r0 * a.ldy, first,
                              last ? bias_all + r0 : nullptr, a, j0, j1);
        }
      }
    }
  }

  // ---- depthwise conv2d (see DenseOps::dwconv) ----
  //
  // Input rows are first copied into `scratch` with their zero padding (left,
  // right, and past the right end as far as whole output vectors read), a band
  // of output rows at a time, so every output column runs the same vector code
  // with no bounds checks. Stride 1 loads W consecutive floats per tap. For
  // stride 2 each padded row is stored split: its even columns, then (`half`
  // = ceil(row / 2) floats on) its odd ones, so every tap is one contiguous load (tap offset
  // 2m reads evens from m, 2m + 1 odds from m). Splitting once per input row
  // replaced an even/odd shuffle per tap and output row (3x3 stride 2, 1
  // thread, Zen 1: 96 channels of 112x112 746 -> 636 us, 144 of 56x56 265 ->
  // 227, 192 of 28x28 113 -> 93; rows narrower than 2W, as 576 of 14x14, lose
  // a little: 128 -> 141). Larger strides gather through a small buffer.

  // W inputs p[0], p[sw], ..., p[(W - 1) sw] (SW = 0: stride sw at run time).
  template <int SW>
  static R ld(const float* p, size_t sw) {
    if constexpr (SW == 1) {
      return V::load(p);
    } else {
      float t[W];
      for (int i = 0; i < W; ++i) t[i] = p[size_t(i) * sw];
      return V::load(t);
    }
  }

  static void put(float* y, R v, size_t cnt) {
    if (cnt >= size_t(W)) {
      V::store(y, v);
    } else {  // not store_part: a masked store is microcoded and slow on some x86 (Zen 1)
      float t[W];
      V::store(t, v);
      for (int i = 0; i < W; ++i)
        if (size_t(i) < cnt) y[i] = t[i];
    }
  }

  // Acc[r][u] += taps of filter row kh for output row r, vector u of the W * U
  // columns at `r0` (row r's tap row kh starts at r0 + r * ors; for stride 2,
  // r0 is the split row's even part offset by the output column, the odd part
  // `half` floats on).
  template <int SW, int K, int RB, int U>
  static void dw_taps(R (&acc)[RB][U], const float* r0, size_t ors, const float* wr, size_t kw_n, size_t dw,
                      size_t sw, size_t half) {
    if constexpr (SW == 2 && K == 3) {
      // Taps 0, 1, 2: evens at the column, odds at the column, evens one on.
      const R w0 = V::bcast(wr[0]), w1 = V::bcast(wr[1]), w2 = V::bcast(wr[2]);
      for (int r = 0; r < RB; ++r)
        for (int u = 0; u < U; ++u) {
          const float* q = r0 + size_t(r) * ors + size_t(u) * W;
          acc[r][u] = V::fma(w0, V::load(q), acc[r][u]);
          acc[r][u] = V::fma(w1, V::load(q + half), acc[r][u]);
          acc[r][u] = V::fma(w2, V::load(q + 1), acc[r][u]);
        }
    } else if constexpr (SW == 2) {
      for (size_t kw = 0; kw < kw_n; ++kw) {
        const R wv = V::bcast(wr[kw]);
        const size_t t = kw * dw, off = (t & 1 ? half : 0) + (t >> 1);
        for (int r = 0; r < RB; ++r)
          for (int u = 0; u < U; ++u)
            acc[r][u] = V::fma(wv, V::load(r0 + size_t(r) * ors + off + size_t(u) * W), acc[r][u]);
      }
    } else {
      for (size_t kw = 0; kw < kw_n; ++kw) {
        const R wv = V::bcast(wr[kw]);
        for (int r = 0; r < RB; ++r)
          for (int u = 0; u < U; ++u)
            acc[r][u] =
                V::fma(wv, ld<SW>(r0 + size_t(r) * ors + kw * dw + size_t(u) * W * sw, sw), acc[r][u]);
      }
    }
  }

  // RB output rows of ow_n columns from padded rows: output row r's tap row kh
  // is at in + r * ors + kh * trs. K = 3: 3x3 filter, dilation 1; K = 0: any
  // kh_n x kw_n filter, column dilation dw. Rows and column vectors are
  // interleaved so that RB * U independent FMA chains hide the FMA latency.
  template <int SW, int K, int RB, int U>
  static void dw_rows(const float* in, size_t ors, size_t trs, const float* wk, R b, float* y, size_t ldy,
                      size_t ow_n, size_t kh_n, size_t kw_n, size_t dw, size_t sw, size_t half, R lo, R hi) {
    if constexpr (K != 0) kh_n = kw_n = K, dw = 1;
    if constexpr (SW != 0) sw = SW;
    const size_t cs = SW == 2 ? 1 : sw;  // floats per output column in `in` (split rows: 1)
    size_t ow = 0;
    for (; ow + U * W <= ow_n; ow += U * W) {
      R acc[RB][U];
      for (int r = 0; r < RB; ++r)
        for (int u = 0; u < U; ++u) acc[r][u] = b;
      for (size_t kh = 0; kh < kh_n; ++kh)
        dw_taps<SW, K, RB, U>(acc, in + kh * trs + ow * cs, ors, wk + kh * kw_n, kw_n, dw, sw, half);
      for (int r = 0; r < RB; ++r)
        for (int u = 0; u < U; ++u)
          put(y + size_t(r) * ldy + ow + size_t(u) * W, V::clamp(acc[r][u], lo, hi), W);
    }
    for (; ow < ow_n; ow += W) {
      // A last partial vector is recomputed over the W columns ending at ow_n
      // instead (same values where it overlaps), so that it is a full store.
      const size_t o = ow + W > ow_n && ow_n >= size_t(W) ? ow_n - W : ow;
      R acc[RB][1];
      for (int r = 0; r < RB; ++r) acc[r][0] = b;
      for (size_t kh = 0; kh < kh_n; ++kh)
        dw_taps<SW, K, RB, 1>(acc, in + kh * trs + o * cs, ors, wk + kh * kw_n, kw_n, dw, sw, half);
      for (int r = 0; r < RB; ++r) put(y + size_t(r) * ldy + o, V::clamp(acc[r][0], lo, hi), ow_n - o);
    }
  }

  // d[0, n) = src[0, n) by vectors; the last one is a full store of a partial
  // load, whose lanes past n are zeros: d[n, roundup(n, W)) becomes 0.
  static void copy_row(float* d, const float* src, size_t n) {
    size_t j = 0;
    for (; j + W <= n; j += W) V::store(d + j, V::load(src + j));
    if (j < n) V::store(d + j, V::load_part(src + j, int(n - j)));
  }

  // Row n of src into a split row (see dwconv): padded column p = pad_l + j goes
  // to d[p / 2] when p is even, d[half + p / 2] when odd.
  static void copy_row_split(float* d, size_t half, size_t room, const float* src, size_t n, size_t pad_l) {
    float* ev = d + (pad_l % 2 ? half + pad_l / 2 : pad_l / 2);        // src[0], src[2], ...
    float* od = d + (pad_l % 2 ? (pad_l + 1) / 2 : half + pad_l / 2);  // src[1], src[3], ...
    auto pairs = [&](size_t k) {                                       // src[2k, 2k + 2W)
      const R a = V::load(src + 2 * k), c = V::load(src + 2 * k + W);
      V::store(ev + k, V::unshuffle(V::even(a, c)));
      V::store(od + k, V::unshuffle(V::odd(a, c)));
    };
    size_t k = 0;
    for (; 2 * k + 2 * W <= n; k += W) pairs(k);
    if (2 * k == n) return;
    if (n % 2 == 0 && n >= 2 * W) {
      pairs(n / 2 - W);  // the last 2W floats again, overlapping: the same values where it does
    } else if (n < 2 * W && (pad_l + 1) / 2 + W <= room) {
      // A narrow row: partial loads (lanes past n read as 0) and whole stores, whose lanes past the
      // row land on its right padding (zeros) inside both parts (`room`: the smaller part's size).
      const R a = n >= size_t(W) ? V::load(src) : V::load_part(src, int(n));
      const R c = n > size_t(W) ? V::load_part(src + W, int(n - W)) : V::zero();
      V::store(ev, V::unshuffle(V::even(a, c)));
      V::store(od, V::unshuffle(V::odd(a, c)));
    } else {
      for (size_t j = 2 * k; j < n; j += 2) ev[j / 2] = src[j];
      for (size_t j = 2 * k + 1; j < n; j += 2) od[j / 2] = src[j];
    }
  }

  template <int SW, int K>
  static void dw_band(const float* buf, size_t wp, const DwConvShape& s, const float* wk, R b, float* y,
                      size_t rows, R lo, R hi) {
    const size_t ors = s.sh * wp, trs = s.dh * wp, half = (wp + 1) / 2;
    // 4 rows x 1 vector: measured faster than 4 x 2, 4 x 3, 6 x 1 and 8 x 1 on Zen 1.
    size_t i = 0;
    for (; i + 4 <= rows; i += 4)
      dw_rows<SW, K, 4, 1>(buf + i * ors, ors, trs, wk, b, y + i * s.ow, s.ow, s.ow, s.kh, s.kw, s.dw, s.sw,
                           half, lo, hi);
    for (; i + 2 <= rows; i += 2)
      dw_rows<SW, K, 2, 2>(buf + i * ors, ors, trs, wk, b, y + i * s.ow, s.ow, s.ow, s.kh, s.kw, s.dw, s.sw,
                           half, lo, hi);
    for (; i < rows; ++i)
      dw_rows<SW, K, 1, 4>(buf + i * ors, ors, trs, wk, b, y + i * s.ow, s.ow, s.ow, s.kh, s.kw, s.dw, s.sw,
                           half, lo, hi);
  }

  static void dwconv(const float* x, const float* w, const float* bias, float* y, const DwConvShape& s,
                     size_t ub, size_t ue, float* scratch, size_t scratch_n, float lo, float hi) {
    if (ub >= ue || s.oh == 0 || s.ow == 0) return;
    const size_t wp = dwconv_row_floats(s, W);
    const size_t span = s.dh * (s.kh - 1) + 1;  // padded rows under one output row
    const size_t cap = (scratch_n - 16) / wp;   // >= span (see DenseOps::dwconv)
    size_t band = (cap - span) / s.sh + 1;
    if (band > 4) band &= ~size_t{3};  // whole 4-row blocks (dw_band)
    const bool k3 = s.kh == 3 && s.kw == 3 && s.dh == 1 && s.dw == 1;
    const R vlo = V::bcast(lo), vhi = V::bcast(hi);
    size_t layout_r0 = ~size_t{0}, layout_n = 0;  // the rows scratch is laid out for
    for (size_t u = ub; u < ue;) {
      const size_t plane = u / s.oh, o0 = u % s.oh;
      const size_t o1 = s.oh < o0 + (ue - u) ? s.oh : o0 + (ue - u);
      const size_t ch = plane % s.c;
      const float* xp = x + plane * s.h * s.w;
      const float* wk = w + ch * s.kh * s.kw;
      const R b = V::bcast(bias ? bias[ch] : 0.0f);
      for (size_t ob = o0; ob < o1; ob += band) {
        const size_t rows = o1 - ob < band ? o1 - ob : band;
        // Padded rows [ob sh, ob sh + n_in) hold input rows ih = r - pad_t.
        // Only their data changes from one band to the next of the same rows
        // (every plane, when a plane fits in one band): zero the rest only
        // when the band's rows change.
        const size_t r0 = ob * s.sh, n_in = (rows - 1) * s.sh + span;
        if (r0 != layout_r0 || n_in != layout_n) {
          for (size_t i = 0; i < n_in * wp; ++i) scratch[i] = 0.0f;
          layout_r0 = r0;
          layout_n = n_in;
        }
        for (size_t i = 0; i < n_in; ++i) {
          const size_t r = r0 + i;
          if (r < s.pad_t || r - s.pad_t >= s.h) continue;
          if (s.sw == 2) {
            copy_row_split(scratch + i * wp, (wp + 1) / 2, wp / 2, xp + (r - s.pad_t) * s.w, s.w, s.pad_l);
          } else {
            copy_row(scratch + i * wp + s.pad_l, xp + (r - s.pad_t) * s.w, s.w);
          }
        }
        float* yo = y + plane * s.oh * s.ow + ob * s.ow;
        if (k3 && s.sw == 1) {
          dw_band<1, 3>(scratch, wp, s, wk, b, yo, rows, vlo, vhi);
        } else if (k3 && s.sw == 2) {
          dw_band<2, 3>(scratch, wp, s, wk, b, yo, rows, vlo, vhi);
        } else if (s.sw == 1) {
          dw_band<1, 0>(scratch, wp, s, wk, b, yo, rows, vlo, vhi);
        } else if (s.sw == 2) {
          dw_band<2, 0>(scratch, wp, s, wk, b, yo, rows, vlo, vhi);
        } else {
          dw_band<0, 0>(scratch, wp, s, wk, b, yo, rows, vlo, vhi);
        }
      }
      u += o1 - o0;
    }
  }

  // ---- layer normalisation over rows, optionally of a sum (residual add) ----
  // y = (z - mean) / sqrt(var + eps) * scale + bias with z = x (+ r, stored
  // into y on the first pass), var the mean squared deviation: three passes
  // over a row, which sits in L1. Four partial sums per pass: one chain of
  // dependent adds (or FMAs) would bound each pass by the add latency
  // (128 rows of 384 floats, AVX2, Zen 1, 1 thread: 33 us with one chain, 25
  // with four).
  static R sum4(const R* a) { return V::add(V::add(a[0], a[1]), V::add(a[2], a[3])); }

  static void layernorm(const float* x, const float* r, const float* scale, const float* bias, float* y,
                        size_t rows, size_t n, float eps) {
    for (size_t i = 0; i < rows; ++i) {
      const float* xi = x + i * n;
      const float* ri = r ? r + i * n : nullptr;
      float* yi = y + i * n;
      R acc[4] = {V::zero(), V::zero(), V::zero(), V::zero()};
      float tail = 0.0f;
      size_t j = 0;
      if (ri) {
        for (; j + 4 * W <= n; j += 4 * W)
          for (int u = 0; u < 4; ++u) {
            const R z = V::add(V::load(xi + j + u * W), V::load(ri + j + u * W));
            V::store(yi + j + u * W, z);
            acc[u] = V::add(acc[u], z);
          }
        for (; j < n; ++j) {
          yi[j] = xi[j] + ri[j];
          tail += yi[j];
        }
        xi = yi;
      } else {
        for (; j + 4 * W <= n; j += 4 * W)
          for (int u = 0; u < 4; ++u) acc[u] = V::add(acc[u], V::load(xi + j + u * W));
        for (; j < n; ++j) tail += xi[j];
      }
      const float mean = (V::hsum(sum4(acc)) + tail) / float(n);
      const R vm = V::bcast(mean);
      acc[0] = acc[1] = acc[2] = acc[3] = V::zero();
      tail = 0.0f;
      for (j = 0; j + 4 * W <= n; j += 4 * W)
        for (int u = 0; u < 4; ++u) {
          const R d = V::sub(V::load(xi + j + u * W), vm);
          acc[u] = V::fma(d, d, acc[u]);
        }
      for (; j < n; ++j) tail += (xi[j] - mean) * (xi[j] - mean);
      const float rstd = 1.0f / __builtin_sqrtf((V::hsum(sum4(acc)) + tail) / float(n) + eps);
      const R vr = V::bcast(rstd);
      for (j = 0; j + W <= n; j += W) {
        const R t = V::mul(V::mul(V::sub(V::load(xi + j), vm), vr), V::load(scale + j));
        V::store(yi + j, bias ? V::add(t, V::load(bias + j)) : t);
      }
      for (; j < n; ++j) yi[j] = (xi[j] - mean) * rstd * scale[j] + (bias ? bias[j] : 0.0f);
    }
  }

  // ---- attention: o = softmax(scale * q @ kt + mask) @ v, per (batch, head) ----
  // Per head, K^T and V are packed once (zero-padded to whole vectors:
  // D x skp and Sk x dvp), then query rows go in tiles of R:
  //   scores: R rows x 2 vectors of keys per step (each K^T vector reused by
  //     R rows), scaled, masked and max-tracked as they are stored;
  //   exp(s - max) in place, summed (8 vectors in flight: the polynomial is a
  //     long dependency chain; 12 heads of 128 x 128, D=32, 1 thread, Zen 1:
  //     1146 us with 4, 1115 with 8);
  //   R x Dv outputs from the unnormalised weights (each V vector reused by R
  //     rows), times 1 / sum as they are stored.
  // One pass over the scores besides the two products; they stay in L1.
  // A row holding NaN or +inf, or only -inf, gives NaN (as softmax does).
  static size_t round_w(size_t n) { return (n + W - 1) / W * W; }

  // s[j] = exp(s[j] - mx) for j < n; returns their sum.
  static float exp_shifted(float* s, size_t n, float mx) {
    const R vm = V::bcast(mx);
    constexpr int U = 8;
    R a[U];
    for (int u = 0; u < U; ++u) a[u] = V::zero();
    size_t j = 0;
    for (; j + U * W <= n; j += U * W) {
      R e[U];
      for (int u = 0; u < U; ++u) e[u] = exp(V::sub(V::load(s + j + u * W), vm));
      for (int u = 0; u < U; ++u) {
        V::store(s + j + u * W, e[u]);
        a[u] = V::add(a[u], e[u]);
      }
    }
    for (; j + W <= n; j += W) {
      const R e = exp(V::sub(V::load(s + j), vm));
      V::store(s + j, e);
      a[0] = V::add(a[0], e);
    }
    for (int u = 1; u < U; ++u) a[0] = V::add(a[0], a[u]);
    float sum = V::hsum(a[0]);
    if (j < n) {
      const int c = int(n - j);
      V::store_part(s + j, exp(V::sub(V::load_part(s + j, c), vm)), c);
      for (; j < n; ++j) sum += s[j];
    }
    return sum;
  }

  template <int RT>
  static void attn_tile(const AttnShape& s, const float* qp, const float* ktp, const float* vp,
                        const float* const* mrow, float* sc, float* const* orow) {
    const size_t skp = round_w(s.sk), dvp = round_w(s.dv), d = s.d;
    const size_t sk_full = s.sk / W * W;  // keys in whole vectors
    const bool vec_mask = mrow && s.m[3] == 1;
    const R vs = V::bcast(s.scale);
    R vmax[RT];
    for (int r = 0; r < RT; ++r) vmax[r] = V::bcast(-__builtin_inff());
    for (size_t j = 0; j < skp; j += 2 * W) {
      const int nv = j + 2 * W <= skp ? 2 : 1;
      R acc[RT][2];
      for (int r = 0; r < RT; ++r) acc[r][0] = acc[r][1] = V::zero();
      if (nv == 2) {
        for (size_t c = 0; c < d; ++c) {
          const R k0 = V::load(ktp + c * skp + j), k1 = V::load(ktp + c * skp + j + W);
          for (int r = 0; r < RT; ++r) {
            const R qb = V::bcast(qp[r * d + c]);
            acc[r][0] = V::fma(qb, k0, acc[r][0]);
            acc[r][1] = V::fma(qb, k1, acc[r][1]);
          }
        }
      } else {
        for (size_t c = 0; c < d; ++c) {
          const R k0 = V::load(ktp + c * skp + j);
          for (int r = 0; r < RT; ++r) acc[r][0] = V::fma(V::bcast(qp[r * d + c]), k0, acc[r][0]);
        }
      }
      for (int r = 0; r < RT; ++r)
        for (int v = 0; v < nv; ++v) {
          const size_t jv = j + size_t(v) * W;
          R t = acc[r][v];
          if (vec_mask && jv < sk_full) {
            t = V::fma(t, vs, V::load(mrow[r] + jv));
          } else if (!mrow) {
            t = V::mul(t, vs);
          }  // else: scaled and masked element by element below
          V::store(sc + r * skp + jv, t);
          if (jv < sk_full && (vec_mask || !mrow)) vmax[r] = V::max(vmax[r], t);
        }
    }
    float inv[RT];
    for (int r = 0; r < RT; ++r) {
      float* row = sc + r * skp;
      float mx = hmax(vmax[r]);
      // Keys past the whole vectors, and every key of a mask read element by element. Without a mask
      // every stored vector is already scaled; with one, only the whole vectors of a contiguous mask.
      for (size_t j = (vec_mask || !mrow) ? sk_full : 0; j < s.sk; ++j) {
        if (mrow) row[j] = row[j] * s.scale + mrow[r][static_cast<ptrdiff_t>(j) * s.m[3]];
        mx = row[j] > mx ? row[j] : mx;
      }
      inv[r] = 1.0f / exp_shifted(row, s.sk, mx);
    }
    for (size_t c = 0; c < dvp; c += 2 * W) {
      const int nv = c + 2 * W <= dvp ? 2 : 1;
      R acc[RT][2];
      for (int r = 0; r < RT; ++r) acc[r][0] = acc[r][1] = V::zero();
      if (nv == 2) {
        for (size_t j = 0; j < s.sk; ++j) {
          const R v0 = V::load(vp + j * dvp + c), v1 = V::load(vp + j * dvp + c + W);
          for (int r = 0; r < RT; ++r) {
            const R pb = V::bcast(sc[r * skp + j]);
            acc[r][0] = V::fma(pb, v0, acc[r][0]);
            acc[r][1] = V::fma(pb, v1, acc[r][1]);
          }
        }
      } else {
        for (size_t j = 0; j < s.sk; ++j) {
          const R v0 = V::load(vp + j * dvp + c);
          for (int r = 0; r < RT; ++r) acc[r][0] = V::fma(V::bcast(sc[r * skp + j]), v0, acc[r][0]);
        }
      }
      for (int r = 0; r < RT; ++r) {
        const R vi = V::bcast(inv[r]);
        for (int v = 0; v < nv; ++v) {
          const size_t c0 = c + size_t(v) * W;
          const R o = V::mul(acc[r][v], vi);
          if (c0 + W <= s.dv) {
            V::store(orow[r] + c0, o);
          } else if (c0 < s.dv) {
            V::store_part(orow[r] + c0, o, int(s.dv - c0));
          }
        }
      }
    }
  }

  // Units [ub, ue) of s.units() (head-major: unit u is rows [u % blocks *
  // kAttnRows, ...) of head u / blocks). ws holds attn_scratch_floats(s, W).
  static void attention(const AttnShape& s, const float* q, const float* kt, const float* v, const float* mask,
                        float* o, size_t ub, size_t ue, float* ws) {
    const size_t skp = round_w(s.sk), dvp = round_w(s.dv), blocks = s.row_blocks();
    float* ktp = ws;
    float* vp = ktp + s.d * skp;
    float* qp = vp + s.sk * dvp;
    float* sc = qp + kAttnTile * s.d;
    size_t packed = ~size_t{0};
    for (size_t u = ub; u < ue; ++u) {
      const size_t bh = u / blocks, b = bh / s.h, h = bh % s.h;
      const auto at = [&](const ptrdiff_t* st, size_t i, size_t j) {
        return static_cast<ptrdiff_t>(b) * st[0] + static_cast<ptrdiff_t>(h) * st[1] +
               static_cast<ptrdiff_t>(i) * st[2] + static_cast<ptrdiff_t>(j) * st[3];
      };
      if (bh != packed) {
        for (size_t c = 0; c < s.d; ++c) {
          float* dst = ktp + c * skp;
          for (size_t j = 0; j < s.sk; ++j) dst[j] = kt[at(s.kt, c, j)];
          for (size_t j = s.sk; j < skp; ++j) dst[j] = 0.0f;
        }
        for (size_t j = 0; j < s.sk; ++j) {
          float* dst = vp + j * dvp;
          for (size_t c = 0; c < s.dv; ++c) dst[c] = v[at(s.v, j, c)];
          for (size_t c = s.dv; c < dvp; ++c) dst[c] = 0.0f;
        }
        packed = bh;
      }
      const size_t i0 = u % blocks * kAttnRows, i1 = i0 + kAttnRows < s.sq ? i0 + kAttnRows : s.sq;
      for (size_t i = i0; i < i1;) {
        const int rt = i + kAttnTile <= i1 ? kAttnTile : 1;
        const float* mrow[kAttnTile];
        float* orow[kAttnTile];
        for (int r = 0; r < rt; ++r) {
          for (size_t c = 0; c < s.d; ++c) qp[r * s.d + c] = q[at(s.q, i + r, c)];
          mrow[r] = mask ? mask + at(s.m, i + r, 0) : nullptr;
          orow[r] = o + at(s.o, i + r, 0);
        }
        if (rt == kAttnTile) {
          attn_tile<kAttnTile>(s, qp, ktp, vp, mask ? mrow : nullptr, sc, orow);
        } else {
          attn_tile<1>(s, qp, ktp, vp, mask ? mrow : nullptr, sc, orow);
        }
        i += static_cast<size_t>(rt);
      }
    }
  }
};

}  // namespace
}  // namespace zs::dense_impl

// Defines the DenseOps table `name` for traits V and ISA `isa`.
#define ZS_DENSE_OPS(name, V, isa_)                                                                  \
  namespace zs {                                                                                      \
  const DenseOps name = {isa_, &dense_impl::Impl<V>::gelu, &dense_impl::Impl<V>::softmax,           \
                         &dense_impl::Impl<V>::gemm, &dense_impl::Impl<V>::dwconv,                 \
                         &dense_impl::Impl<V>::attention, &dense_impl::Impl<V>::layernorm,                 \
                         size_t(dense_impl::Impl<V>::kNP), size_t(dense_impl::Impl<V>::kMR),               \
                         dense_impl::Impl<V>::kLeftKc * dense_impl::Impl<V>::kNC,                          \
                         &dense_impl::Impl<V>::gemm_packed, &dense_impl::Impl<V>::gemm_left,               \
                         &dense_impl::Impl<V>::gemm_nchw};                                                 \
  }
