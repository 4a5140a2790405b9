#include "pool.h"

#include <cmath>  // INFINITY, NAN
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "spmm.h"

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace zs {
namespace {

// Below this many taps a call runs on the calling thread.
constexpr int64_t kMinParallelTaps = int64_t{1} << 15;

// Taps [lo, hi) of a window starting at `start` (tap t reads start + t dil)
// that land inside [0, size).
struct Taps {
  int64_t lo, hi;
};

Taps taps(int64_t start, int64_t k, int64_t dil, int64_t size) {
  int64_t lo = start >= 0 ? 0 : (-start + dil - 1) / dil;
  int64_t hi = size - start <= 0 ? 0 : (size - start + dil - 1) / dil;
  if (hi > k) hi = k;
  if (lo > hi) lo = hi;
  return {lo, hi};
}

// Per call: for each output row its row taps inside the image; for each
// column tap j the outputs [ox_lo, ox_hi) whose tap j is inside; for each
// output column the number of column taps inside (average's divisor).
struct Plan {
  std::vector<Taps> rows;    // [oh]
  std::vector<Taps> by_tap;  // [kw]: output columns
  std::vector<float> ncols;  // [ow]
};

Plan make_plan(const Pool2dShape& s) {
  Plan p;
  p.rows.resize(static_cast<size_t>(s.oh));
  for (int64_t oy = 0; oy < s.oh; ++oy) p.rows[oy] = taps(oy * s.sh - s.pad_t, s.kh, s.dh, s.h);
  p.by_tap.resize(static_cast<size_t>(s.kw));
  for (int64_t j = 0; j < s.kw; ++j) {
    // ox sw - pad_l + j dw in [0, w)  <=>  ox in [lo, hi)
    const int64_t off = j * s.dw - s.pad_l;
    int64_t lo = off >= 0 ? 0 : (-off + s.sw - 1) / s.sw;
    int64_t hi = s.w - off <= 0 ? 0 : (s.w - off + s.sw - 1) / s.sw;
    if (hi > s.ow) hi = s.ow;
    if (lo > hi) lo = hi;
    p.by_tap[j] = {lo, hi};
  }
  p.ncols.assign(static_cast<size_t>(s.ow), 0.0f);
  for (int64_t j = 0; j < s.kw; ++j)
    for (int64_t ox = p.by_tap[j].lo; ox < p.by_tap[j].hi; ++ox) p.ncols[ox] += 1.0f;
  return p;
}

template <PoolKind K>
inline float combine(float m, float v) {
  // Max: NaN wins, `v > m || v != v` keeps the first NaN (max semantics of torch and ONNX).
  if (K == PoolKind::kMax) return (v > m || v != v) ? v : m;
  return m + v;
}

// One plane, an output row at a time, in two passes: the window's rows inside
// the image are combined element-wise into one row (contiguous, vectorised),
// then each column tap is one pass along that row. Combining every tap into
// the output row in place took ~1 ns a tap (MaxPool 2x2 on 16x32x32: 17 us).
template <PoolKind K>
void plane(const float* x, float* y, const Pool2dShape& s, const Plan& p, float* acc) {
  const float full = static_cast<float>(s.kh * s.kw);
  for (int64_t oy = 0; oy < s.oh; ++oy) {
    const int64_t y0 = oy * s.sh - s.pad_t;
    const Taps r = p.rows[oy];
    float* yr = y + oy * s.ow;
    if (r.hi <= r.lo) {
      // No row of the window inside: max -inf, average NaN (no taps) or 0 (all padding).
      const float none = K == PoolKind::kMax ? -INFINITY : K == PoolKind::kAvg ? NAN : 0.0f;
      for (int64_t ox = 0; ox < s.ow; ++ox) yr[ox] = none;
      continue;
    }
    const float* first = x + (y0 + r.lo * s.dh) * s.w;
    for (int64_t t = 0; t < s.w; ++t) acc[t] = first[t];
    for (int64_t i = r.lo + 1; i < r.hi; ++i) {
      const float* row = x + (y0 + i * s.dh) * s.w;
      for (int64_t t = 0; t < s.w; ++t) acc[t] = combine<K>(acc[t], row[t]);
    }
    if (s.kw == 2 && s.sw == 2 && s.dw == 1 && s.pad_l == 0 && p.by_tap[1].hi == s.ow) {
      // 2x2 / stride 2 (most pooling layers): both taps of every output inside, one pass.
      for (int64_t ox = 0; ox < s.ow; ++ox) yr[ox] = combine<K>(acc[2 * ox], acc[2 * ox + 1]);
    } else {
      for (int64_t ox = 0; ox < s.ow; ++ox) yr[ox] = K == PoolKind::kMax ? -INFINITY : 0.0f;
      for (int64_t j = 0; j < s.kw; ++j) {
        const Taps c = p.by_tap[j];
        const float* src = acc + j * s.dw - s.pad_l;
        const int64_t sw = s.sw;
        for (int64_t ox = c.lo; ox < c.hi; ++ox) yr[ox] = combine<K>(yr[ox], src[ox * sw]);
      }
    }
    if (K != PoolKind::kMax) {
      const float nrows = static_cast<float>(r.hi - r.lo);
      for (int64_t ox = 0; ox < s.ow; ++ox) {
        const float count = K == PoolKind::kAvgIncludePad ? full : nrows * p.ncols[ox];
        yr[ox] = count > 0 ? yr[ox] / count : NAN;
      }
    }
  }
}

// 2x2 windows, stride 2, no padding or dilation (most pooling layers): both input rows of an
// output row at once, four outputs per step with the baseline vector ISA. The same sums in the
// same order as plane()'s (average: (a0 + b0) + (a1 + b1), then / 4). Max takes maxps, which
// drops NaNs, and notes whether the row had any: such a row is done again by combine(), which
// keeps them. plane() took ~2 ns an output for this (MaxPool on 16x32x32: 9.5 us).
template <PoolKind K>
void plane2x2(const float* x, float* y, const Pool2dShape& s) {
  for (int64_t oy = 0; oy < s.oh; ++oy) {
    const float *a = x + 2 * oy * s.w, *b = a + s.w;
    float* yr = y + oy * s.ow;
    int64_t ox = 0;
#if defined(__SSE2__)
    const __m128 quarter = _mm_set1_ps(0.25f);
    __m128 nan = _mm_setzero_ps();
    for (; ox + 4 <= s.ow; ox += 4) {
      const __m128 a0 = _mm_loadu_ps(a + 2 * ox), a1 = _mm_loadu_ps(a + 2 * ox + 4);
      const __m128 b0 = _mm_loadu_ps(b + 2 * ox), b1 = _mm_loadu_ps(b + 2 * ox + 4);
      if (K == PoolKind::kMax) {
        nan = _mm_or_ps(nan, _mm_or_ps(_mm_cmpunord_ps(a0, b0), _mm_cmpunord_ps(a1, b1)));
        const __m128 r0 = _mm_max_ps(a0, b0), r1 = _mm_max_ps(a1, b1);
        const __m128 ev = _mm_shuffle_ps(r0, r1, _MM_SHUFFLE(2, 0, 2, 0));
        _mm_storeu_ps(yr + ox, _mm_max_ps(ev, _mm_shuffle_ps(r0, r1, _MM_SHUFFLE(3, 1, 3, 1))));
      } else {
        const __m128 r0 = _mm_add_ps(a0, b0), r1 = _mm_add_ps(a1, b1);
        const __m128 ev = _mm_shuffle_ps(r0, r1, _MM_SHUFFLE(2, 0, 2, 0));
        const __m128 od = _mm_shuffle_ps(r0, r1, _MM_SHUFFLE(3, 1, 3, 1));
        _mm_storeu_ps(yr + ox, _mm_mul_ps(_mm_add_ps(ev, od), quarter));
      }
    }
    if (_mm_movemask_ps(nan)) ox = 0;
#endif
    for (; ox < s.ow; ++ox) {
      const float l = combine<K>(a[2 * ox], b[2 * ox]), r = combine<K>(a[2 * ox + 1], b[2 * ox + 1]);
      yr[ox] = K == PoolKind::kMax ? combine<K>(l, r) : (l + r) / 4.0f;
    }
  }
}

// A window covering the whole unpadded plane (global pooling): one pass over
// contiguous memory, four partial results.
void whole_plane(const float* x, float* y, int64_t n, PoolKind kind) {
  if (kind == PoolKind::kMax) {
    float m[4] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY};
    bool nan = false;
    int64_t i = 0;
    for (; i + 4 <= n; i += 4)
      for (int u = 0; u < 4; ++u) {
        const float v = x[i + u];
        m[u] = v > m[u] ? v : m[u];
        nan |= v != v;
      }
    for (; i < n; ++i) {
      m[0] = x[i] > m[0] ? x[i] : m[0];
      nan |= x[i] != x[i];
    }
    const float a = m[0] > m[1] ? m[0] : m[1], b = m[2] > m[3] ? m[2] : m[3];
    *y = nan ? NAN : (a > b ? a : b);
    return;
  }
  float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  int64_t i = 0;
  for (; i + 4 <= n; i += 4)
    for (int u = 0; u < 4; ++u) acc[u] += x[i + u];
  for (; i < n; ++i) acc[0] += x[i];
  *y = ((acc[0] + acc[1]) + (acc[2] + acc[3])) / static_cast<float>(n);
}

void run_plane(const float* x, float* y, const Pool2dShape& s, PoolKind kind, const Plan& p) {
  thread_local std::vector<float> acc;
  if (acc.size() < static_cast<size_t>(s.w)) acc.resize(static_cast<size_t>(s.w));
  if (s.kh == s.h && s.kw == s.w && s.oh == 1 && s.ow == 1 && s.pad_t == 0 && s.pad_l == 0 && s.pad_b == 0 &&
      s.pad_r == 0)
    return whole_plane(x, y, s.h * s.w, kind);
  if (s.kh == 2 && s.kw == 2 && s.sh == 2 && s.sw == 2 && s.dh == 1 && s.dw == 1 && s.pad_t == 0 &&
      s.pad_l == 0 && s.pad_b == 0 && s.pad_r == 0)
    return kind == PoolKind::kMax ? plane2x2<PoolKind::kMax>(x, y, s) : plane2x2<PoolKind::kAvg>(x, y, s);
  switch (kind) {
    case PoolKind::kMax:
      return plane<PoolKind::kMax>(x, y, s, p, acc.data());
    case PoolKind::kAvg:
      return plane<PoolKind::kAvg>(x, y, s, p, acc.data());
    case PoolKind::kAvgIncludePad:
      return plane<PoolKind::kAvgIncludePad>(x, y, s, p, acc.data());
  }
}

}  // namespace

void pool2d_f32(const float* x, float* y, const Pool2dShape& s, PoolKind kind) {
  if (s.planes <= 0 || s.oh <= 0 || s.ow <= 0) return;
  const Plan plan = make_plan(s);
  const int64_t in = s.h * s.w, out = s.oh * s.ow;
  int parts = s.planes * out * s.kh * s.kw < kMinParallelTaps ? 1 : num_threads();
  if (parts > s.planes) parts = static_cast<int>(s.planes);
  if (parts <= 1) {
    for (int64_t p = 0; p < s.planes; ++p) run_plane(x + p * in, y + p * out, s, kind, plan);
    return;
  }
#if defined(_OPENMP)
#pragma omp parallel for num_threads(parts) schedule(static)
  for (int64_t p = 0; p < s.planes; ++p) run_plane(x + p * in, y + p * out, s, kind, plan);
#else
  for (int64_t p = 0; p < s.planes; ++p) run_plane(x + p * in, y + p * out, s, kind, plan);
#endif
}

}  // namespace zs
