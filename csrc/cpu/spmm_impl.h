// SIMD SpMM algorithms, written once over a vector-traits type V
// (simd/vec_avx2.h, vec_avx512.h, vec_neon.h). Each per-ISA kernel file
// includes its traits and this header, and instantiates the entry points at
// the bottom; the ISA lives only in the traits and the compile flags.
//
// V provides: R, W, zero, load, store, bcast, fma(a, b, c) = a*b + c, add,
// clamp, load_part/store_part(p, cnt) touching only p[0, cnt), hsum,
// pairs(tab, meta), and kRows8 (+ select_rows8 when true) (see vec_avx2.h).
//
// Layout of the N > 1 paths (after XNNPACK's SpMM): X is K x N row-major, so
// each nonzero A[i, k] scales a contiguous slice of row k of X. The N
// dimension is cut into chunks of NV vectors; for one chunk the rows of a
// thread's range are swept, so the K x chunk slice of X stays in L2.
#pragma once

#include <cstdint>
#include <cstring>

#include "zeroskip/spmm.h"

// Everything here has internal linkage (anonymous namespace) and avoids
// std::min/max: a kernel file compiled with -mavx512f must not hand the linker
// an out-of-line helper that an AVX2 file would then call.
namespace zs::impl {
namespace {

inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
inline int mini(int a, int b) { return a < b ? a : b; }
inline float clampf(float v, float lo, float hi) { return v < lo ? lo : (v > hi ? hi : v); }

template <class V>
struct Epi {
  typename V::R lo, hi;
  const float* bias;
  explicit Epi(const SpmmParams& p) : lo(V::bcast(p.min)), hi(V::bcast(p.max)), bias(p.bias) {}
  typename V::R init(int64_t row) const { return bias ? V::bcast(bias[row]) : V::zero(); }
};

// Chunk kinds (the PART template argument): every vector whole; the last
// vector partial (cnt lanes), in X and in Y; the last vector partial in Y only,
// X coming from a panel zero-padded to whole vectors (see sweep_columns).
constexpr int kWhole = 0, kPartial = 1, kPaddedX = 2;

// Stores NV accumulators for columns [j0, j0 + NV*W), the last one partial
// (cnt lanes) when PART.
template <class V, int NV, int PART>
inline void store_chunk(float* yrow, const typename V::R* acc, const Epi<V>& e, int cnt) {
  for (int v = 0; v < NV; ++v) {
    typename V::R r = V::clamp(acc[v], e.lo, e.hi);
    if (PART && v == NV - 1) {
      V::store_part(yrow + v * V::W, r, cnt);
    } else {
      V::store(yrow + v * V::W, r);
    }
  }
}

template <class V, int NV, int PART>
inline typename V::R load_x(const float* xrow, int v, int cnt) {
  return (PART == kPartial && v == NV - 1) ? V::load_part(xrow + v * V::W, cnt) : V::load(xrow + v * V::W);
}

// Columns [j0, j0 + width) of X: row k starts at p + k * ld.
struct XSlice {
  const float* p;
  int64_t ld;
};

// With a workspace, copies the slice into a dense K x width panel first. X's
// own row stride (4N bytes) is often a power of two, which maps every row of a
// column chunk onto the same few cache sets; the panel is contiguous, so the
// K x chunk working set really stays in L2. Costs one pass over X.
inline XSlice slice(const float* x, int64_t k, int64_t n, int64_t j0, int width, float* ws) {
  if (!ws) return {x + j0, n};
  for (int64_t r = 0; r < k; ++r) std::memcpy(ws + r * width, x + r * n + j0, sizeof(float) * width);
  return {ws, width};
}

// The partial last columns [j0, j0 + cnt) of X as a K x W panel, zero-padded
// to whole vectors, so that the kernel loads them with plain vector loads.
inline XSlice padded_slice(const float* x, int64_t k, int64_t n, int64_t j0, int cnt, int w, float* ws) {
  for (int64_t r = 0; r < k; ++r) {
    std::memcpy(ws + r * w, x + r * n + j0, sizeof(float) * cnt);
    std::memset(ws + r * w + cnt, 0, sizeof(float) * (w - cnt));
  }
  return {ws, w};
}

// Column sweep for N > 1: chunks of MAXNV (8, 4 or 2) vectors, then narrower
// ones, then the partial rest; f.run<NV, U, PART>(slice, j0, cnt) computes one
// chunk for the thread's rows. The partial rest reads a zero-padded copy (K x W
// floats, within the workspace) when there is one: masked loads, one per
// nonzero, cost about 3 plain ones on Zen 1 (vmaskmovps; 2048^2 at 90%, N=2,
// 1 thread: 1.94 ms masked vs 0.58 ms for all of N=8), and NEON builds them
// from scalars. Wide chunks matter on CPUs where the loads, not the FMAs, are
// the limit: each nonzero costs a broadcast, an index and a value
// load besides its NV vector loads, and the weight is streamed once per chunk
// (4096^2 at 90%, N=128, AVX2 on Zen 1: 26.5 ms with 8-vector chunks vs 30 ms
// with 4).
template <class V, int MAXNV, class F>
void sweep_columns(const float* x, int64_t k, int64_t n, float* ws, const F& f) {
  constexpr int W = V::W;
  float* panel = n > MAXNV * W ? ws : nullptr;
  int64_t j0 = 0;
  if constexpr (MAXNV >= 8)
    for (; j0 + 8 * W <= n; j0 += 8 * W) f.template run<8, 1, kWhole>(slice(x, k, n, j0, 8 * W, panel), j0, W);
  if constexpr (MAXNV >= 4)
    for (; j0 + 4 * W <= n; j0 += 4 * W) f.template run<4, 2, kWhole>(slice(x, k, n, j0, 4 * W, panel), j0, W);
  for (; j0 + 2 * W <= n; j0 += 2 * W) f.template run<2, 4, kWhole>(slice(x, k, n, j0, 2 * W, panel), j0, W);
  for (; j0 + W <= n; j0 += W) f.template run<1, 4, kWhole>(slice(x, k, n, j0, W, panel), j0, W);
  if (j0 < n) {
    const int cnt = static_cast<int>(n - j0);
    if (ws) {
      f.template run<1, 4, kPaddedX>(padded_slice(x, k, n, j0, cnt, W, ws), j0, cnt);
    } else {
      f.template run<1, 4, kPartial>(slice(x, k, n, j0, cnt, nullptr), j0, cnt);
    }
  }
}

// Nonzeros ahead whose X rows are prefetched: rows are random, so the
// hardware prefetcher cannot guess them. 2048^2 at 90%, N=64 and 128, 2
// threads, Zen 1: 4 ahead 17.3 / 17.1 GMAC/s, 8 ahead 18.0 / 17.5, 16 ahead
// 17.5 / 16.5, 32 ahead 12.5 / 12.9.
constexpr int kPrefetch = 8;
// One prefetch per kPrefetchStride bytes of an X row slice: the hardware
// fetches the lines after the first as the row is read, and every prefetch
// takes a load slot from the FMAs' operands (2048^2 and 384x1536 at 90%,
// N=64, 1 thread, Zen 1: a prefetch per 64-byte line 9.1 / 9.3 GMAC/s, per
// 128 bytes 9.7 / 9.9, per 256 bytes 10.3 / 10.2).
constexpr int kPrefetchStride = 256;

// ---------------------------------------------------------------- CSR, N > 1
// Columns come as 8-bit deltas (see CsrF32): a running column per stream, one
// add per nonzero. U independent accumulator sets hide the FMA latency when NV
// is small.
template <class V, int NV, int U, int PART, bool PF>
void csr_chunk_pf(const CsrF32& a, XSlice xs, float* y, int64_t n, const Epi<V>& ep,
                  int64_t rb, int64_t re, int64_t j0, int cnt) {
  using R = typename V::R;
  const uint8_t* d = a.delta;
  const float* val = a.values;
  for (int64_t i = rb; i < re; ++i) {
    R acc[U][NV];
    for (int u = 0; u < U; ++u)
      for (int v = 0; v < NV; ++v) acc[u][v] = u == 0 ? ep.init(i) : V::zero();
    int64_t e = a.row_ptr[i];
    const int64_t end = a.row_ptr[i + 1];
    int64_t c = 0;   // column of the last nonzero used
    int64_t cp = 0;  // column of the last nonzero prefetched
    int64_t ep_ = e;
    for (; PF && ep_ < end && ep_ < e + kPrefetch; ++ep_) cp += d[ep_];
    for (; e + U <= end; e += U) {
      for (int u = 0; PF && u < U && ep_ < end; ++u, ++ep_) {
        cp += d[ep_];
        const char* pf = reinterpret_cast<const char*>(xs.p + cp * xs.ld);
        for (int v = 0; v < NV * V::W * 4; v += kPrefetchStride) __builtin_prefetch(pf + v, 0, 3);
      }
      for (int u = 0; u < U; ++u) {
        c += d[e + u];
        const float* xr = xs.p + c * xs.ld;
        const R w = V::bcast(val[e + u]);
        for (int v = 0; v < NV; ++v) acc[u][v] = V::fma(w, load_x<V, NV, PART>(xr, v, cnt), acc[u][v]);
      }
    }
    for (; e < end; ++e) {
      c += d[e];
      const float* xr = xs.p + c * xs.ld;
      const R w = V::bcast(val[e]);
      for (int v = 0; v < NV; ++v) acc[0][v] = V::fma(w, load_x<V, NV, PART>(xr, v, cnt), acc[0][v]);
    }
    for (int u = 1; u < U; ++u)
      for (int v = 0; v < NV; ++v) acc[0][v] = V::add(acc[0][v], acc[u][v]);
    store_chunk<V, NV, PART>(y + i * n + j0, acc[0], ep, cnt);
  }
}

// Prefetching X rows pays only when the X slice does not sit in L2 anyway
// (4096^2 at 90%, N=8, 1 thread: 2.30 ms without, 2.70 ms with), or, for
// slices of 4+ vectors (one prefetch per 4+ loads), beyond L1 (1536x384 at
// 90%, N=64, 1 thread: 9.1-9.3 GMAC/s without, 9.6-9.8 with).
constexpr int64_t kPrefetchMinBytes = 256 << 10;
constexpr int64_t kPrefetchMinBytesWide = 64 << 10;

template <class V, int NV, int U, int PART>
void csr_chunk(const CsrF32& a, XSlice xs, float* y, int64_t n, const Epi<V>& ep,
               int64_t rb, int64_t re, int64_t j0, int cnt) {
  if (a.k * xs.ld * int64_t{sizeof(float)} > (NV >= 4 ? kPrefetchMinBytesWide : kPrefetchMinBytes)) {
    csr_chunk_pf<V, NV, U, PART, true>(a, xs, y, n, ep, rb, re, j0, cnt);
  } else {
    csr_chunk_pf<V, NV, U, PART, false>(a, xs, y, n, ep, rb, re, j0, cnt);
  }
}

// ---------------------------------------------------------------- CSR, N == 1
// Matrix-vector streams the weight once: 5 bytes a nonzero (fp32 value + 8-bit
// column delta) against 6 with uint16 indices; x (K floats) stays in L1/L2. Scalar loads beat an 8-wide gather on AMD (Zen 1: 0.68 vs
// 1.04 ms for 4096^2 at 90%, 2 threads); four accumulators hide FMA latency.
// The column running sum is one add a nonzero, off the FMA chains.
template <class V>
void csr_spmv(const CsrF32& a, const float* x, float* y, const SpmmParams& p, int64_t rb,
              int64_t re) {
  const uint8_t* d = a.delta;
  const float* val = a.values;
  for (int64_t i = rb; i < re; ++i) {
    int64_t e = a.row_ptr[i];
    const int64_t end = a.row_ptr[i + 1];
    float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
    int64_t c = 0;
    for (; e + 8 <= end; e += 8) {
      uint64_t dd;
      std::memcpy(&dd, d + e, 8);  // 8 deltas in one load
      int64_t g[8];
      for (int j = 0; j < 8; ++j) g[j] = static_cast<int64_t>((dd >> (8 * j)) & 255);
      // Column sums as a shallow tree, not a chain of 8 dependent adds.
      const int64_t p01 = g[0] + g[1], p23 = g[2] + g[3], p45 = g[4] + g[5], p67 = g[6] + g[7];
      const int64_t c1 = c + p01, c3 = c1 + p23, c5 = c3 + p45, c7 = c5 + p67;
      s0 += val[e] * x[c + g[0]];
      s1 += val[e + 1] * x[c1];
      s2 += val[e + 2] * x[c1 + g[2]];
      s3 += val[e + 3] * x[c3];
      s0 += val[e + 4] * x[c3 + g[4]];
      s1 += val[e + 5] * x[c5];
      s2 += val[e + 6] * x[c5 + g[6]];
      s3 += val[e + 7] * x[c7];
      c = c7;
    }
    for (; e < end; ++e) {
      c += d[e];
      s0 += val[e] * x[c];
    }
    float s = (s0 + s1) + (s2 + s3);
    if (p.bias) s += p.bias[i];
    y[i] = clampf(s, p.min, p.max);
  }
}

template <class V>
struct CsrRun {
  const CsrF32& a;
  float* y;
  int64_t n, rb, re;
  Epi<V> ep;
  template <int NV, int U, int PART>
  void run(XSlice xs, int64_t j0, int cnt) const {
    csr_chunk<V, NV, U, PART>(a, xs, y, n, ep, rb, re, j0, cnt);
  }
};

template <class V>
void csr_rows(const CsrF32& a, const float* x, float* y, int64_t n, const SpmmParams& p,
              int64_t rb, int64_t re, float* ws) {
  if (n == 1) return csr_spmv<V>(a, x, y, p, rb, re);
  sweep_columns<V, 8>(x, a.k, n, ws, CsrRun<V>{a, y, n, rb, re, Epi<V>(p)});
}

// ---------------------------------------------------------------- BSR, N > 1
// G rows of a block row at a time, NV vectors of columns: each X row slice is
// loaded once and reused by the G rows (the win of block sparsity).
template <class V, class Idx, int G, int NV, int PART>
void bsr_group(const BsrF32& a, XSlice xs, float* y, int64_t n, const Epi<V>& ep, int64_t ib,
               int r, int64_t j0, int cnt) {
  using R = typename V::R;
  const Idx* bcol = static_cast<const Idx*>(a.bcol);
  const int64_t r0 = ib * a.br + r;
  R acc[G][NV];
  for (int g = 0; g < G; ++g)
    for (int v = 0; v < NV; ++v) acc[g][v] = ep.init(r0 + g);
  for (int64_t b = a.brow_ptr[ib]; b < a.brow_ptr[ib + 1]; ++b) {
    const int64_t c0 = static_cast<int64_t>(bcol[b]) * a.bc;
    const int cols = static_cast<int>(min64(a.bc, a.k - c0));
    const float* blk = a.values + b * a.br * a.bc + r;
    for (int c = 0; c < cols; ++c) {
      const float* xr = xs.p + (c0 + c) * xs.ld;
      R xv[NV];
      for (int v = 0; v < NV; ++v) xv[v] = load_x<V, NV, PART>(xr, v, cnt);
      for (int g = 0; g < G; ++g) {
        const R w = V::bcast(blk[c * a.br + g]);
        for (int v = 0; v < NV; ++v) acc[g][v] = V::fma(w, xv[v], acc[g][v]);
      }
    }
  }
  for (int g = 0; g < G; ++g) store_chunk<V, NV, PART>(y + (r0 + g) * n + j0, acc[g], ep, cnt);
}

template <class V, class Idx, int NV, int PART>
void bsr_chunk(const BsrF32& a, XSlice xs, float* y, int64_t n, const Epi<V>& ep,
               int64_t rb, int64_t re, int64_t j0, int cnt) {
  for (int64_t ib = rb; ib < re; ++ib) {
    const int rows = static_cast<int>(min64(a.br, a.m - ib * a.br));
    int r = 0;
    for (; r + 4 <= rows; r += 4) bsr_group<V, Idx, 4, NV, PART>(a, xs, y, n, ep, ib, r, j0, cnt);
    for (; r < rows; ++r) bsr_group<V, Idx, 1, NV, PART>(a, xs, y, n, ep, ib, r, j0, cnt);
  }
}

// ---------------------------------------------------------------- BSR, N == 1
// Blocks are stored column-major, so a column of a block is br contiguous
// values: y[block rows] += column * x[c]. Vector over rows, W at a time.
// Blocks of at most 4 rows, shorter than a vector: fixed-size accumulators
// that stay in registers (and vectorize at 128 bits for BR = 4), instead of
// masked vector loads per block column.
template <int BR, class Idx>
void bsr_short_rows(const BsrF32& a, const Idx* bcol, const float* x, int64_t ib, float* out) {
  float s[BR] = {};
  const int64_t b0 = a.brow_ptr[ib], b1 = a.brow_ptr[ib + 1];
  if (a.bc == 1) {
    // r x 1 blocks (the common 4x1 pattern): no column loop; two sums per row
    // so consecutive blocks do not wait on each other's FMA.
    float t[BR] = {};
    int64_t b = b0;
    for (; b + 2 <= b1; b += 2) {
      const float x0 = x[bcol[b]], x1 = x[bcol[b + 1]];
      for (int r = 0; r < BR; ++r) {
        s[r] += a.values[b * BR + r] * x0;
        t[r] += a.values[(b + 1) * BR + r] * x1;
      }
    }
    if (b < b1)
      for (int r = 0; r < BR; ++r) s[r] += a.values[b * BR + r] * x[bcol[b]];
    for (int r = 0; r < BR; ++r) out[r] = s[r] + t[r];
    return;
  }
  for (int64_t b = b0; b < b1; ++b) {
    const int64_t c0 = static_cast<int64_t>(bcol[b]) * a.bc;
    const int cols = static_cast<int>(min64(a.bc, a.k - c0));
    const float* blk = a.values + b * BR * a.bc;
    for (int c = 0; c < cols; ++c) {
      const float xv = x[c0 + c];
      for (int r = 0; r < BR; ++r) s[r] += blk[c * BR + r] * xv;
    }
  }
  for (int r = 0; r < BR; ++r) out[r] = s[r];
}

template <class V, class Idx>
void bsr_spmv(const BsrF32& a, const float* x, float* y, const SpmmParams& p, int64_t rb,
              int64_t re) {
  using R = typename V::R;
  constexpr int W = V::W;
  const Idx* bcol = static_cast<const Idx*>(a.bcol);
  const Epi<V> ep(p);
  for (int64_t ib = rb; ib < re; ++ib) {
    const int rows = static_cast<int>(min64(a.br, a.m - ib * a.br));
    const int64_t b0 = a.brow_ptr[ib], b1 = a.brow_ptr[ib + 1];
    float* yb = y + ib * a.br;
    if (a.br <= 4 && a.br < W) {
      float acc[4];
      switch (a.br) {
        case 1: bsr_short_rows<1, Idx>(a, bcol, x, ib, acc); break;
        case 2: bsr_short_rows<2, Idx>(a, bcol, x, ib, acc); break;
        case 3: bsr_short_rows<3, Idx>(a, bcol, x, ib, acc); break;
        default: bsr_short_rows<4, Idx>(a, bcol, x, ib, acc); break;
      }
      for (int r = 0; r < rows; ++r) yb[r] = clampf(acc[r] + (p.bias ? p.bias[ib * a.br + r] : 0.0f), p.min, p.max);
      continue;
    }
    for (int r = 0; r < rows; r += W) {
      const int cnt = mini(W, rows - r);
      R acc = V::zero();
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t c0 = static_cast<int64_t>(bcol[b]) * a.bc;
        const int cols = static_cast<int>(min64(a.bc, a.k - c0));
        const float* blk = a.values + b * a.br * a.bc + r;
        // Block padding rows hold zeros, so reading a full vector inside the
        // block is safe as long as it stays within br.
        if (r + W <= a.br) {
          for (int c = 0; c < cols; ++c) acc = V::fma(V::load(blk + c * a.br), V::bcast(x[c0 + c]), acc);
        } else {
          for (int c = 0; c < cols; ++c)
            acc = V::fma(V::load_part(blk + c * a.br, a.br - r), V::bcast(x[c0 + c]), acc);
        }
      }
      if (p.bias) acc = V::add(acc, V::load_part(p.bias + ib * a.br + r, cnt));
      acc = V::clamp(acc, ep.lo, ep.hi);
      if (cnt == W) {
        V::store(yb + r, acc);
      } else {
        V::store_part(yb + r, acc, cnt);
      }
    }
  }
}

template <class V, class Idx>
struct BsrRun {
  const BsrF32& a;
  float* y;
  int64_t n, rb, re;
  Epi<V> ep;
  template <int NV, int U, int PART>
  void run(XSlice xs, int64_t j0, int cnt) const {
    bsr_chunk<V, Idx, NV, PART>(a, xs, y, n, ep, rb, re, j0, cnt);
  }
};

template <class V, class Idx>
void bsr_rows_idx(const BsrF32& a, const float* x, float* y, int64_t n, const SpmmParams& p,
                  int64_t rb, int64_t re, float* ws) {
  if (n == 1) return bsr_spmv<V, Idx>(a, x, y, p, rb, re);
  sweep_columns<V, 2>(x, a.k, n, ws, BsrRun<V, Idx>{a, y, n, rb, re, Epi<V>(p)});
}

template <class V>
void bsr_rows(const BsrF32& a, const float* x, float* y, int64_t n, const SpmmParams& p,
              int64_t rb, int64_t re, float* ws) {
  if (a.bcol_type == IndexType::kU16) {
    bsr_rows_idx<V, uint16_t>(a, x, y, n, p, rb, re, ws);
  } else {
    bsr_rows_idx<V, uint32_t>(a, x, y, n, p, rb, re, ws);
  }
}

// ---------------------------------------------------------------- N:M
// 2:4, 2-bit offsets: kept value q sits in group q / 2, at column 4 * (q / 2)
// plus its offset (compile-time shifts; a runtime n or m would cost a division).
inline int64_t nm24_col(const uint8_t* meta, int64_t q) {
  return (q >> 1) * 4 + ((meta[q >> 2] >> ((q & 3) * 2)) & 3);
}

// N > 1: like csr_chunk with the column computed from the group and offset.
// Kept as its own loop on purpose: folding both into one loop over a column
// cursor cost 12% on CSR (N=128) and 60% on 2:4 (N=8, where the columns are
// sequential and X-row prefetch only adds work), 4096^2, 1 thread, AVX2.
template <class V, int NV, int U, int PART>
void nm24_chunk(const NmF32& a, XSlice xs, float* y, int64_t n, const Epi<V>& ep, int64_t rb,
                int64_t re, int64_t j0, int cnt) {
  using R = typename V::R;
  const int64_t kept = a.k / 2;
  for (int64_t i = rb; i < re; ++i) {
    const float* val = a.values + i * kept;
    const uint8_t* meta = a.meta + i * a.meta_stride;
    R acc[U][NV];
    for (int u = 0; u < U; ++u)
      for (int v = 0; v < NV; ++v) acc[u][v] = u == 0 ? ep.init(i) : V::zero();
    int64_t q = 0;
    for (; q + U <= kept; q += U) {
      for (int u = 0; u < U; ++u) {
        const float* xr = xs.p + nm24_col(meta, q + u) * xs.ld;
        const R w = V::bcast(val[q + u]);
        for (int v = 0; v < NV; ++v) acc[u][v] = V::fma(w, load_x<V, NV, PART>(xr, v, cnt), acc[u][v]);
      }
    }
    for (; q < kept; ++q) {
      const float* xr = xs.p + nm24_col(meta, q) * xs.ld;
      const R w = V::bcast(val[q]);
      for (int v = 0; v < NV; ++v) acc[0][v] = V::fma(w, load_x<V, NV, PART>(xr, v, cnt), acc[0][v]);
    }
    for (int u = 1; u < U; ++u)
      for (int v = 0; v < NV; ++v) acc[0][v] = V::add(acc[0][v], acc[u][v]);
    store_chunk<V, NV, PART>(y + i * n + j0, acc[0], ep, cnt);
  }
}

// SELL-8 block of 8 rows, one row a lane (AVX2; see NmF32::vals8): per group,
// one broadcast of 4 x values serves 8 rows, and two in-lane permutes pick each
// row's kept x. No tables, no horizontal sums.
template <class V>
void nm24_rows8(const NmF32& a, const float* x, float* y, const SpmmParams& p, const Epi<V>& ep,
                int64_t blk) {
  using R = typename V::R;
  const int64_t groups = a.k / 4;
  const float* v = a.vals8 + blk * groups * 16;
  const uint32_t* mt = a.meta8 + blk * groups;
  R acc0 = V::zero(), acc1 = V::zero(), acc2 = V::zero(), acc3 = V::zero();
  int64_t g = 0;
  for (; g + 2 <= groups; g += 2) {
    R x0, x1, x2, x3;
    V::select_rows8(x + 4 * g, mt[g], &x0, &x1);
    V::select_rows8(x + 4 * g + 4, mt[g + 1], &x2, &x3);
    acc0 = V::fma(V::load(v + g * 16), x0, acc0);
    acc1 = V::fma(V::load(v + g * 16 + 8), x1, acc1);
    acc2 = V::fma(V::load(v + g * 16 + 16), x2, acc2);
    acc3 = V::fma(V::load(v + g * 16 + 24), x3, acc3);
  }
  if (g < groups) {
    R x0, x1;
    V::select_rows8(x + 4 * g, mt[g], &x0, &x1);
    acc0 = V::fma(V::load(v + g * 16), x0, acc0);
    acc1 = V::fma(V::load(v + g * 16 + 8), x1, acc1);
  }
  R s = V::add(V::add(acc0, acc1), V::add(acc2, acc3));
  if (p.bias) s = V::add(s, V::load(p.bias + blk * 8));
  V::store(y + blk * 8, V::clamp(s, ep.lo, ep.hi));
}

// N == 1, 2:4 only, rows outside SELL-8 blocks. Selecting the kept x values
// of a row costs shuffles on every step; instead each thread first tabulates,
// for every group g and every 4-bit meta nibble (o0 | o1 << 2), the pair
// (x[4g + o0], x[4g + o1]) (K/4 x 16 pairs, tiny next to M rows of work). A
// group of a row then costs one 8-byte load at tab + 32 g + 2 nibble, and
// V::pairs assembles W/2 of them.
template <class V>
void nm24_spmv(const NmF32& a, const float* x, float* y, const SpmmParams& p, int64_t rb,
               int64_t re, float* tab) {
  using R = typename V::R;
  constexpr int W = V::W;
  const int64_t groups = a.k / 4, kept = a.k / 2;
  for (int64_t g = 0; g < groups; ++g)
    for (int nib = 0; nib < 16; ++nib) {
      tab[g * 32 + nib * 2] = x[4 * g + (nib & 3)];
      tab[g * 32 + nib * 2 + 1] = x[4 * g + (nib >> 2)];
    }
  const Epi<V> ep(p);
  for (int64_t i = rb; i < re; ++i) {
    if constexpr (V::kRows8) {
      if (i % 8 == 0 && i + 8 <= re && i + 8 <= a.m8) {
        nm24_rows8<V>(a, x, y, p, ep, i / 8);
        i += 7;
        continue;
      }
    }
    const float* val = a.values + i * kept;
    const uint8_t* meta = a.meta + i * a.meta_stride;
    R acc0 = V::zero(), acc1 = V::zero();
    int64_t q = 0;
    for (; q + 2 * W <= kept; q += 2 * W) {
      acc0 = V::fma(V::load(val + q), V::pairs(tab + q * 16, meta + q / 4), acc0);
      acc1 = V::fma(V::load(val + q + W), V::pairs(tab + (q + W) * 16, meta + (q + W) / 4), acc1);
    }
    float s = V::hsum(V::add(acc0, acc1));
    for (; q < kept; ++q) s += val[q] * x[nm24_col(meta, q)];
    if (p.bias) s += p.bias[i];
    y[i] = clampf(s, p.min, p.max);
  }
}

template <class V>
struct Nm24Run {
  const NmF32& a;
  float* y;
  int64_t n, rb, re;
  Epi<V> ep;
  template <int NV, int U, int PART>
  void run(XSlice xs, int64_t j0, int cnt) const {
    nm24_chunk<V, NV, U, PART>(a, xs, y, n, ep, rb, re, j0, cnt);
  }
};

template <class V>
void nm24_rows(const NmF32& a, const float* x, float* y, int64_t n, const SpmmParams& p,
               int64_t rb, int64_t re, float* ws) {
  if (n == 1) return nm24_spmv<V>(a, x, y, p, rb, re, ws);
  sweep_columns<V, 8>(x, a.k, n, ws, Nm24Run<V>{a, y, n, rb, re, Epi<V>(p)});
}

}  // namespace
}  // namespace zs::impl
