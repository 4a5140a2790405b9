// zeroskip sparse-matrix x dense-matrix micro-kernel interface.
//
// Every kernel computes   Y[i, :] = clamp(sum_k A[i, k] * X[k, :] + bias[i])
// for the output rows [row_begin, row_end) of a sparse A (M x K) and a dense,
// row-major, contiguous X (K x N). Y is row-major and contiguous (M x N).
// For BSR, row_begin/row_end count block rows.
//
// Kernels take views (raw pointers + sizes) of weights that were validated when
// they were packed (csrc/cpu/packed.h); a kernel never checks indices again, so
// views must only be built from packed objects. Threading lives in the driver
// (csrc/cpu/spmm.cc); kernels are single-threaded and re-entrant.
#pragma once

#include <cstddef>
#include <cstdint>

namespace zs {

enum class IndexType : uint8_t { kU16 = 0, kU32 = 1 };

// Compressed sparse rows with 8-bit column deltas: the column of nonzero e is
// the sum of delta[row_ptr[i] .. e], starting from 0 in each row. Gaps over 255
// are bridged by stored zeros (PackedCsr inserts them), so one byte a nonzero
// covers any K; at 90% sparsity a gap exceeds 255 with probability 0.9^255.
struct CsrF32 {
  int64_t m = 0, k = 0, nnz = 0;    // nnz counts the bridging zeros
  const float* values = nullptr;    // [nnz]
  const uint8_t* delta = nullptr;   // [nnz]
  const int64_t* row_ptr = nullptr; // [m + 1]
};

// Block sparse rows with br x bc blocks. The last block row / column may stick
// out of the matrix (m % br, k % bc); kernels clip to m and k. Each block's
// values are stored column-major (bc columns of br values), so a batch-1 kernel
// can load a column of the block as one vector.
struct BsrF32 {
  int64_t m = 0, k = 0, nblocks = 0;
  int32_t br = 1, bc = 1;
  int64_t mb = 0;                    // block rows = ceil(m / br)
  const float* values = nullptr;     // [nblocks][bc][br]
  const void* bcol = nullptr;        // [nblocks] block-column index
  IndexType bcol_type = IndexType::kU16;
  const int64_t* brow_ptr = nullptr; // [mb + 1]
};

// N:M structured sparsity along K: each group of m consecutive columns of a
// row keeps n values. k % m == 0. values is [m_rows][k / m * n]; meta holds the
// in-group offset of each kept value (strictly increasing inside a group),
// `bits` bits each, packed little-endian (first offset in the lowest bits of
// byte 0), meta_stride bytes per row.
struct NmF32 {
  int64_t m = 0, k = 0;
  int32_t n = 2, group = 4, bits = 2;
  const float* values = nullptr;
  const uint8_t* meta = nullptr;
  int64_t meta_stride = 0;
  // 2:4 only: rows [0, m8) again, in blocks of 8 rows (m8 = m / 8 * 8) for
  // batch-1 kernels that put the 8 rows in the lanes of a vector (SELL-8).
  // For block b and group g, vals8[(b * k/4 + g) * 16 + 8 t + r] is kept value
  // t (0 or 1) of row 8 b + r, and meta8[b * k/4 + g] holds its offset at bits
  // 2 (8 t + r). Null when m < 8 or the pattern is not 2:4.
  const float* vals8 = nullptr;
  const uint32_t* meta8 = nullptr;
  int64_t m8 = 0;
};

// Epilogue: optional per-row bias, then clamp to [min, max].
struct SpmmParams {
  const float* bias = nullptr;  // [m] or null
  float min = -__builtin_inff();
  float max = __builtin_inff();
};

// ws: null, or this thread's scratch of at least k * kPanelFloats floats, in
// which a kernel may copy column panels of X (up to 8 vectors of 16 floats).
constexpr int64_t kPanelFloats = 128;

using CsrUkernel = void (*)(const CsrF32& a, const float* x, float* y, int64_t n,
                            const SpmmParams& p, int64_t row_begin, int64_t row_end, float* ws);
using BsrUkernel = void (*)(const BsrF32& a, const float* x, float* y, int64_t n,
                            const SpmmParams& p, int64_t brow_begin, int64_t brow_end, float* ws);
using NmUkernel = void (*)(const NmF32& a, const float* x, float* y, int64_t n,
                           const SpmmParams& p, int64_t row_begin, int64_t row_end, float* ws);

}  // namespace zs
