// SIMD SpMM algorithms, written once over a vector-traits type V
// (simd/vec_avx2.h, vec_avx512.h, vec_neon.h). Each per-ISA kernel file
// includes its traits and this header, and instantiates the entry points at
// the bottom; the ISA lives only in the traits and the compile flags.
//
// V provides: R, W, zero, load, store, bcast, fma(a, b, c) = a*b + c, add,
// clamp, load_part/store_part(p, cnt) touching only p[0, cnt), hsum,
// gather(base, idx16|idx32) and select24(xg, meta) (see vec_avx2.h).
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

// Stores NV accumulators for columns [j0, j0 + NV*W), the last one partial
// (cnt lanes) when PART.
template <class V, int NV, bool PART>
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

template <class V, int NV, bool PART>
inline typename V::R load_x(const float* xrow, int v, int cnt) {
  return (PART && v == NV - 1) ? V::load_part(xrow + v * V::W, cnt) : V::load(xrow + v * V::W);
}

// ---------------------------------------------------------------- CSR, N > 1
// U independent accumulator sets hide the FMA latency when NV is small.
template <class V, class Idx, int NV, int U, bool PART>
void csr_chunk(const CsrF32& a, const float* x, float* y, int64_t n, const Epi<V>& ep,
               int64_t rb, int64_t re, int64_t j0, int cnt) {
  using R = typename V::R;
  const Idx* col = static_cast<const Idx*>(a.col);
  const float* val = a.values;
  for (int64_t i = rb; i < re; ++i) {
    R acc[U][NV];
    for (int u = 0; u < U; ++u)
      for (int v = 0; v < NV; ++v) acc[u][v] = u == 0 ? ep.init(i) : V::zero();
    int64_t e = a.row_ptr[i];
    const int64_t end = a.row_ptr[i + 1];
    for (; e + U <= end; e += U) {
      for (int u = 0; u < U; ++u) {
        const float* xr = x + static_cast<int64_t>(col[e + u]) * n + j0;
        const R w = V::bcast(val[e + u]);
        for (int v = 0; v < NV; ++v) acc[u][v] = V::fma(w, load_x<V, NV, PART>(xr, v, cnt), acc[u][v]);
      }
    }
    for (; e < end; ++e) {
      const float* xr = x + static_cast<int64_t>(col[e]) * n + j0;
      const R w = V::bcast(val[e]);
      for (int v = 0; v < NV; ++v) acc[0][v] = V::fma(w, load_x<V, NV, PART>(xr, v, cnt), acc[0][v]);
    }
    for (int u = 1; u < U; ++u)
      for (int v = 0; v < NV; ++v) acc[0][v] = V::add(acc[0][v], acc[u][v]);
    store_chunk<V, NV, PART>(y + i * n + j0, acc[0], ep, cnt);
  }
}

// ---------------------------------------------------------------- CSR, N == 1
// Matrix-vector: memory-bound on values + indices; x (K floats) sits in L1/L2.
// W nonzeros per step, x gathered by index, two accumulators.
template <class V, class Idx>
void csr_spmv(const CsrF32& a, const float* x, float* y, const SpmmParams& p, int64_t rb,
              int64_t re) {
  using R = typename V::R;
  constexpr int W = V::W;
  const Idx* col = static_cast<const Idx*>(a.col);
  const float* val = a.values;
  for (int64_t i = rb; i < re; ++i) {
    int64_t e = a.row_ptr[i];
    const int64_t end = a.row_ptr[i + 1];
    R acc0 = V::zero(), acc1 = V::zero();
    for (; e + 2 * W <= end; e += 2 * W) {
      acc0 = V::fma(V::load(val + e), V::gather(x, col + e), acc0);
      acc1 = V::fma(V::load(val + e + W), V::gather(x, col + e + W), acc1);
    }
    if (e + W <= end) {
      acc0 = V::fma(V::load(val + e), V::gather(x, col + e), acc0);
      e += W;
    }
    float s = V::hsum(V::add(acc0, acc1));
    for (; e < end; ++e) s += val[e] * x[col[e]];
    if (p.bias) s += p.bias[i];
    y[i] = clampf(s, p.min, p.max);
  }
}

template <class V, class Idx>
void csr_rows_idx(const CsrF32& a, const float* x, float* y, int64_t n, const SpmmParams& p,
                  int64_t rb, int64_t re) {
  constexpr int W = V::W;
  if (n == 1) return csr_spmv<V, Idx>(a, x, y, p, rb, re);
  const Epi<V> ep(p);
  int64_t j0 = 0;
  for (; j0 + 4 * W <= n; j0 += 4 * W) csr_chunk<V, Idx, 4, 2, false>(a, x, y, n, ep, rb, re, j0, W);
  for (; j0 + W <= n; j0 += W) csr_chunk<V, Idx, 1, 4, false>(a, x, y, n, ep, rb, re, j0, W);
  if (j0 < n) csr_chunk<V, Idx, 1, 4, true>(a, x, y, n, ep, rb, re, j0, static_cast<int>(n - j0));
}

template <class V>
void csr_rows(const CsrF32& a, const float* x, float* y, int64_t n, const SpmmParams& p,
              int64_t rb, int64_t re) {
  if (a.col_type == IndexType::kU16) {
    csr_rows_idx<V, uint16_t>(a, x, y, n, p, rb, re);
  } else {
    csr_rows_idx<V, uint32_t>(a, x, y, n, p, rb, re);
  }
}

// ---------------------------------------------------------------- BSR, N > 1
// G rows of a block row at a time, NV vectors of columns: each X row slice is
// loaded once and reused by the G rows (the win of block sparsity).
template <class V, class Idx, int G, int NV, bool PART>
void bsr_group(const BsrF32& a, const float* x, float* y, int64_t n, const Epi<V>& ep, int64_t ib,
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
      const float* xr = x + (c0 + c) * n + j0;
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

template <class V, class Idx, int NV, bool PART>
void bsr_chunk(const BsrF32& a, const float* x, float* y, int64_t n, const Epi<V>& ep,
               int64_t rb, int64_t re, int64_t j0, int cnt) {
  for (int64_t ib = rb; ib < re; ++ib) {
    const int rows = static_cast<int>(min64(a.br, a.m - ib * a.br));
    int r = 0;
    for (; r + 4 <= rows; r += 4) bsr_group<V, Idx, 4, NV, PART>(a, x, y, n, ep, ib, r, j0, cnt);
    for (; r < rows; ++r) bsr_group<V, Idx, 1, NV, PART>(a, x, y, n, ep, ib, r, j0, cnt);
  }
}

// ---------------------------------------------------------------- BSR, N == 1
// Blocks are stored column-major, so a column of a block is br contiguous
// values: y[block rows] += column * x[c]. Vector over rows, W at a time.
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
    if (a.br == 1) {
      float s = 0.0f;
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t c0 = static_cast<int64_t>(bcol[b]) * a.bc;
        const int cols = static_cast<int>(min64(a.bc, a.k - c0));
        const float* blk = a.values + b * a.bc;
        for (int c = 0; c < cols; ++c) s += blk[c] * x[c0 + c];
      }
      if (p.bias) s += p.bias[ib];
      yb[0] = clampf(s, p.min, p.max);
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
void bsr_rows_idx(const BsrF32& a, const float* x, float* y, int64_t n, const SpmmParams& p,
                  int64_t rb, int64_t re) {
  constexpr int W = V::W;
  if (n == 1) return bsr_spmv<V, Idx>(a, x, y, p, rb, re);
  const Epi<V> ep(p);
  int64_t j0 = 0;
  for (; j0 + 2 * W <= n; j0 += 2 * W) bsr_chunk<V, Idx, 2, false>(a, x, y, n, ep, rb, re, j0, W);
  for (; j0 + W <= n; j0 += W) bsr_chunk<V, Idx, 1, false>(a, x, y, n, ep, rb, re, j0, W);
  if (j0 < n) bsr_chunk<V, Idx, 1, true>(a, x, y, n, ep, rb, re, j0, static_cast<int>(n - j0));
}

template <class V>
void bsr_rows(const BsrF32& a, const float* x, float* y, int64_t n, const SpmmParams& p,
              int64_t rb, int64_t re) {
  if (a.bcol_type == IndexType::kU16) {
    bsr_rows_idx<V, uint16_t>(a, x, y, n, p, rb, re);
  } else {
    bsr_rows_idx<V, uint32_t>(a, x, y, n, p, rb, re);
  }
}

// ---------------------------------------------------------------- N:M
inline int nm_offset(const uint8_t* meta, int64_t q, int bits) {
  const int64_t bit = q * bits;
  return (meta[bit >> 3] >> (bit & 7)) & ((1 << bits) - 1);
}

// N > 1: like CSR with the column computed from the group and its offset.
template <class V, int NV, int U, bool PART>
void nm_chunk(const NmF32& a, const float* x, float* y, int64_t n, const Epi<V>& ep, int64_t rb,
              int64_t re, int64_t j0, int cnt) {
  using R = typename V::R;
  const int64_t kept = a.k / a.group * a.n;
  for (int64_t i = rb; i < re; ++i) {
    const float* val = a.values + i * kept;
    const uint8_t* meta = a.meta + i * a.meta_stride;
    R acc[U][NV];
    for (int u = 0; u < U; ++u)
      for (int v = 0; v < NV; ++v) acc[u][v] = u == 0 ? ep.init(i) : V::zero();
    int64_t q = 0;
    for (; q + U <= kept; q += U) {
      for (int u = 0; u < U; ++u) {
        const int64_t col = (q + u) / a.n * a.group + nm_offset(meta, q + u, a.bits);
        const float* xr = x + col * n + j0;
        const R w = V::bcast(val[q + u]);
        for (int v = 0; v < NV; ++v) acc[u][v] = V::fma(w, load_x<V, NV, PART>(xr, v, cnt), acc[u][v]);
      }
    }
    for (; q < kept; ++q) {
      const int64_t col = q / a.n * a.group + nm_offset(meta, q, a.bits);
      const float* xr = x + col * n + j0;
      const R w = V::bcast(val[q]);
      for (int v = 0; v < NV; ++v) acc[0][v] = V::fma(w, load_x<V, NV, PART>(xr, v, cnt), acc[0][v]);
    }
    for (int u = 1; u < U; ++u)
      for (int v = 0; v < NV; ++v) acc[0][v] = V::add(acc[0][v], acc[u][v]);
    store_chunk<V, NV, PART>(y + i * n + j0, acc[0], ep, cnt);
  }
}

// N == 1, 2:4 only: W kept values per step cover 2*W columns of x; the traits
// pick x at the kept positions straight from registers (no gather).
template <class V>
void nm24_spmv(const NmF32& a, const float* x, float* y, const SpmmParams& p, int64_t rb,
               int64_t re) {
  using R = typename V::R;
  constexpr int W = V::W;
  const int64_t kept = a.k / 2;
  for (int64_t i = rb; i < re; ++i) {
    const float* val = a.values + i * kept;
    const uint8_t* meta = a.meta + i * a.meta_stride;
    R acc0 = V::zero(), acc1 = V::zero();
    int64_t q = 0;
    for (; q + 2 * W <= kept; q += 2 * W) {
      uint32_t m0 = 0, m1 = 0;
      std::memcpy(&m0, meta + q / 4, V::kMetaBytes);
      std::memcpy(&m1, meta + (q + W) / 4, V::kMetaBytes);
      acc0 = V::fma(V::load(val + q), V::select24(x + 2 * q, m0), acc0);
      acc1 = V::fma(V::load(val + q + W), V::select24(x + 2 * (q + W), m1), acc1);
    }
    float s = V::hsum(V::add(acc0, acc1));
    for (; q < kept; ++q) s += val[q] * x[q / 2 * 4 + nm_offset(meta, q, 2)];
    if (p.bias) s += p.bias[i];
    y[i] = clampf(s, p.min, p.max);
  }
}

template <class V>
void nm24_rows(const NmF32& a, const float* x, float* y, int64_t n, const SpmmParams& p,
               int64_t rb, int64_t re) {
  constexpr int W = V::W;
  if (n == 1) return nm24_spmv<V>(a, x, y, p, rb, re);
  const Epi<V> ep(p);
  int64_t j0 = 0;
  for (; j0 + 4 * W <= n; j0 += 4 * W) nm_chunk<V, 4, 2, false>(a, x, y, n, ep, rb, re, j0, W);
  for (; j0 + W <= n; j0 += W) nm_chunk<V, 1, 4, false>(a, x, y, n, ep, rb, re, j0, W);
  if (j0 < n) nm_chunk<V, 1, 4, true>(a, x, y, n, ep, rb, re, j0, static_cast<int>(n - j0));
}

}  // namespace
}  // namespace zs::impl
