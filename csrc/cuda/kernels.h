// CUDA kernels: parameters and host launchers. Defined in spmm_csr.cu / gemm_sp24.cu when the
// extension is built with nvcc, else in kernels_stub.cc (every launcher throws). Pointers are device
// pointers; nothing here touches CUDA until a launcher is called.
//
// Both ops take the Linear orientation the runtime uses: y[N, M] = x[N, K] @ W[M, K]^T, with W the
// sparse weight as stored (M output features, K input features), x and y row-major.
#pragma once

#include <cstdint>

namespace zs::cuda {

enum class DType : int { kF32 = 0, kF16 = 1, kBF16 = 2 };

// CSR weight as packed by zeroskip.cuda.pack_csr: row r's entries are [row_start[r], row_end[r]),
// row_start[r] a multiple of kCsrVector and the arrays padded past row_end[r] to the next multiple
// (aligned 16-byte vector loads; the padding is loaded but never used). Rows are visited in
// `row_order` (longest first), the first `n_long` of them by a whole warp each, the rest by
// kCsrShortGroup lanes each.
constexpr int kCsrVector = 8;
constexpr int kCsrShortGroup = 8;
// Rows with at least this many (padded) entries go to the warp-per-row bin.
constexpr int kCsrLongRow = 128;

struct CsrParams {
  const void* values = nullptr;        // [nnz_padded], dtype
  const uint16_t* indices = nullptr;   // [nnz_padded], column of each entry (K <= 65536)
  const int32_t* row_start = nullptr;  // [m]
  const int32_t* row_end = nullptr;    // [m]
  const int32_t* row_order = nullptr;  // [m], rows by decreasing length
  int64_t m = 0, k = 0, n = 0;
  int64_t n_long = 0;       // rows row_order[0..n_long) are long
  const void* x = nullptr;  // [n, k] row-major, dtype
  void* y = nullptr;        // [n, m] row-major, dtype
  DType dtype = DType::kF32;
  int device = 0;
  uintptr_t stream = 0;
};

// 2:4 weight packed as described in sp24_layout.h.
struct Sp24Params {
  const uint16_t* values = nullptr;  // padded_rows(m) * padded_cols(k) / 2 halves
  const uint32_t* meta = nullptr;    // padded_rows(m) / 16 * padded_cols(k) / 32 * 16 words
  int64_t m = 0, k = 0, n = 0;
  const void* x = nullptr;    // [n, ldx] row-major; columns [kx, ...) read as zero
  int64_t ldx = 0;            // multiple of 8, x 16-byte aligned
  int64_t kx = 0;             // valid columns of x: k rounded up to 8 (the caller zero-pads)
  void* y = nullptr;          // [n, m] row-major
  DType dtype = DType::kF16;  // kF16 or kBF16
  int tile = 0;               // 0: choose by n, 1: small-n tile (16 x 16, split K), 2: large tile (128 x 64)
  int device = 0;
  uintptr_t stream = 0;
};

// Launch on params.stream (asynchronous). Throw std::invalid_argument for bad parameters and
// std::runtime_error for a CUDA error (or, in builds without CUDA, always).
void spmm_csr(const CsrParams& p);
void gemm_sp24(const Sp24Params& p);

}  // namespace zs::cuda
