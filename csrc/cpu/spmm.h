// SpMM driver: runs one registered kernel over all output rows, splitting the
// rows among threads so that each thread gets about the same number of
// nonzeros (not the same number of rows).
#pragma once

#include <cstddef>
#include <cstdint>

#include "registry.h"
#include "zeroskip/spmm.h"

namespace zs {

// Threads for kernels: ZEROSKIP_NUM_THREADS, else the number of cores.
int num_threads();
void set_num_threads(int n);  // n < 1 restores the default

void spmm(const KernelInfo& k, const CsrF32& a, const float* x, float* y, int64_t n, const SpmmParams& p);
void spmm(const KernelInfo& k, const BsrF32& a, const float* x, float* y, int64_t n, const SpmmParams& p);
void spmm(const KernelInfo& k, const NmF32& a, const float* x, float* y, int64_t n, const SpmmParams& p);

// A growable, 64-byte aligned float buffer that keeps its memory between uses
// (a thread_local one per thread makes per-thread scratch that a call does not
// page-fault afresh). Freed with its owner.
class AlignedBuffer {
 public:
  AlignedBuffer() = default;
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  ~AlignedBuffer();
  // At least `floats` floats (never null); the contents are not kept on growth.
  float* get(size_t floats);

 private:
  float* p_ = nullptr;
  size_t bytes_ = 0;
};

// All rows of A on the calling thread alone (with its scratch): for drivers
// that split work by columns of X themselves.
void spmm_serial(const KernelInfo& k, const CsrF32& a, const float* x, float* y, int64_t n, const SpmmParams& p);
void spmm_serial(const KernelInfo& k, const BsrF32& a, const float* x, float* y, int64_t n, const SpmmParams& p);
void spmm_serial(const KernelInfo& k, const NmF32& a, const float* x, float* y, int64_t n, const SpmmParams& p);

// First row of part t of `parts`, splitting rows so that each part covers
// about the same cost, where the cost of rows [0, r) is ptr[r] * unit + r.
int64_t balanced_split(const int64_t* ptr, int64_t rows, int64_t unit, int parts, int t);

}  // namespace zs
