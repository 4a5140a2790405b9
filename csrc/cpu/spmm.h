// SpMM driver: runs one registered kernel over all output rows, splitting the
// rows among threads so that each thread gets about the same number of
// nonzeros (not the same number of rows).
#pragma once

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

// First row of part t of `parts`, splitting rows so that each part covers
// about the same cost, where the cost of rows [0, r) is ptr[r] * unit + r.
int64_t balanced_split(const int64_t* ptr, int64_t rows, int64_t unit, int parts, int t);

}  // namespace zs
