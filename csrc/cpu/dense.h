// Dense float32 kernels for the ops that torch runs slowly here: GELU (erf and
// tanh forms), softmax over the last dim, and batch-1..small Linear (GEMV).
// One table of function pointers per ISA (dense_impl.h, instantiated in
// scalar/dense_f32_scalar.cc, x86/dense_f32_{avx2,avx512}.cc,
// arm/dense_f32_neon.cc); the ISA is picked at run time with
// zs::isa_supported (registry.cc), like the SpMM kernels.
#pragma once

#include <cstddef>

#include "registry.h"

namespace zs {

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

// The same with the default ISA.
void gelu_f32(const float* x, float* y, size_t n, bool tanh_approx);
void softmax_f32(const float* x, float* y, size_t rows, size_t cols);
void gemv_f32(const float* w, const float* x, const float* bias_or_null, float* y, size_t n_rows, size_t k,
              float clamp_min, float clamp_max);
void gemm_small_f32(const float* w, const float* x, const float* bias, float* y, size_t n_rows, size_t k, size_t m,
                    float clamp_min = -__builtin_inff(), float clamp_max = __builtin_inff());

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
