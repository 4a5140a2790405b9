#include "spmm.h"

#include <atomic>
#include <cstdlib>
#include <new>
#include <thread>

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace zs {
namespace {

// Below this many multiply-adds a kernel call runs on the calling thread:
// waking the pool costs more than it saves.
constexpr int64_t kMinParallelWork = int64_t{1} << 15;

int default_threads() {
  if (const char* env = std::getenv("ZEROSKIP_NUM_THREADS")) {
    const int n = std::atoi(env);
    if (n > 0) return n;
  }
  const unsigned hw = std::thread::hardware_concurrency();
  return hw > 0 ? static_cast<int>(hw) : 1;
}

std::atomic<int> g_threads{0};

// Per-thread kernel scratch (see kPanelFloats), kept across calls; pool
// threads live as long as the pool. Cache-line aligned, so panel rows start on
// a line.
float* scratch(int64_t k) {
  thread_local AlignedBuffer s;
  return s.get(static_cast<size_t>(k * kPanelFloats));
}

// Runs body(begin, end) over [0, rows) in `parts` nnz-balanced ranges.
template <class Body>
void parallel_rows(const int64_t* ptr, int64_t rows, int64_t unit, int64_t work, Body body) {
  int parts = num_threads();
  if (work < kMinParallelWork || rows < 2) parts = 1;
  if (parts > rows) parts = static_cast<int>(rows);
  if (parts <= 1) {
    body(0, rows);
    return;
  }
#if defined(_OPENMP)
#pragma omp parallel for num_threads(parts) schedule(static, 1)
  for (int t = 0; t < parts; ++t) {
    body(balanced_split(ptr, rows, unit, parts, t), balanced_split(ptr, rows, unit, parts, t + 1));
  }
#else
  body(0, rows);
#endif
}

}  // namespace

AlignedBuffer::~AlignedBuffer() { std::free(p_); }

float* AlignedBuffer::get(size_t floats) {
  const size_t need = floats * sizeof(float);
  if (p_ && need <= bytes_) return p_;
  const size_t size = (need > 0 ? need + 63 : 64) / 64 * 64;
  void* q = std::aligned_alloc(64, size);
  if (!q) throw std::bad_alloc();
  std::free(p_);
  p_ = static_cast<float*>(q);
  bytes_ = size;
  return p_;
}

int num_threads() {
  int n = g_threads.load(std::memory_order_relaxed);
  if (n <= 0) {
    n = default_threads();
    g_threads.store(n, std::memory_order_relaxed);
  }
  return n;
}

void set_num_threads(int n) { g_threads.store(n > 0 ? n : default_threads(), std::memory_order_relaxed); }

int64_t balanced_split(const int64_t* ptr, int64_t rows, int64_t unit, int parts, int t) {
  if (t <= 0) return 0;
  if (t >= parts) return rows;
  // Uniform rows (ptr == nullptr): equal row counts.
  if (!ptr) return rows * t / parts;
  const int64_t total = ptr[rows] * unit + rows;
  const int64_t target = total * t / parts;
  int64_t lo = 0, hi = rows;  // first r with cost(r) >= target
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (ptr[mid] * unit + mid < target) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return lo;
}

void spmm(const KernelInfo& k, const CsrF32& a, const float* x, float* y, int64_t n, const SpmmParams& p) {
  parallel_rows(a.row_ptr, a.m, n, a.nnz * n, [&](int64_t b, int64_t e) { k.csr(a, x, y, n, p, b, e, scratch(a.k)); });
}

void spmm(const KernelInfo& k, const BsrF32& a, const float* x, float* y, int64_t n, const SpmmParams& p) {
  const int64_t bs = int64_t{a.br} * a.bc;
  parallel_rows(a.brow_ptr, a.mb, bs * n, a.nblocks * bs * n,
                [&](int64_t b, int64_t e) { k.bsr(a, x, y, n, p, b, e, scratch(a.k)); });
}

void spmm(const KernelInfo& k, const NmF32& a, const float* x, float* y, int64_t n, const SpmmParams& p) {
  parallel_rows(nullptr, a.m, 1, a.m * (a.k / a.group * a.n) * n,
                [&](int64_t b, int64_t e) { k.nm(a, x, y, n, p, b, e, scratch(a.k)); });
}

void spmm_serial(const KernelInfo& k, const CsrF32& a, const float* x, float* y, int64_t n, const SpmmParams& p) {
  k.csr(a, x, y, n, p, 0, a.m, scratch(a.k));
}

void spmm_serial(const KernelInfo& k, const BsrF32& a, const float* x, float* y, int64_t n, const SpmmParams& p) {
  k.bsr(a, x, y, n, p, 0, a.mb, scratch(a.k));
}

void spmm_serial(const KernelInfo& k, const NmF32& a, const float* x, float* y, int64_t n, const SpmmParams& p) {
  k.nm(a, x, y, n, p, 0, a.m, scratch(a.k));
}

}  // namespace zs
