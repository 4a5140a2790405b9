// CSR SpMM / SpMV on CUDA: y[N, M] = x[N, K] @ W[M, K]^T, W in CSR (fp32, fp16 or bf16 values, uint16
// column indices), x and y in the values' type, fp32 accumulation.
//
// STATUS: compiled for sm_80 and sm_90, but not yet run on a GPU. Its host-side packing is tested on
// the CPU; tests/test_cuda.py holds the GPU tests, which skip on machines without one.
//
// Work split (Sputnik-style row swizzle): the host sorts rows by length once, at pack time. Long rows
// (>= kCsrLongRow entries) get a warp each, short ones kCsrShortGroup lanes each (two launches on
// the same stream); consecutive groups get rows of similar length, and the longest rows start first.
// Each lane streams 8 values and 8 indices per step with 16-byte loads (rows start 8-aligned), gathers
// x, and the group sums its lanes with shuffles. N == 1 is the SpMV path (one accumulator); larger N
// is tiled 8 columns of y per grid row, each x gather feeding one accumulator per column.
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

#include "cuda_util.cuh"
#include "kernels.h"

namespace zs::cuda {
namespace {

using detail::from_float;
using detail::to_float;

constexpr int kThreads = 256;

__device__ __forceinline__ void load8(const float* p, float (&v)[8]) {
  const float4 a = __ldg(reinterpret_cast<const float4*>(p));
  const float4 b = __ldg(reinterpret_cast<const float4*>(p) + 1);
  v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
}
__device__ __forceinline__ void load8(const __half* p, float (&v)[8]) {
  const uint4 u = __ldg(reinterpret_cast<const uint4*>(p));
  const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    __half2 h;
    memcpy(&h, &w[i], sizeof h);
    const float2 f = __half22float2(h);
    v[2 * i] = f.x, v[2 * i + 1] = f.y;
  }
}
__device__ __forceinline__ void load8(const __nv_bfloat16* p, float (&v)[8]) {
  const uint4 u = __ldg(reinterpret_cast<const uint4*>(p));
  const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    __nv_bfloat162 h;
    memcpy(&h, &w[i], sizeof h);
    const float2 f = __bfloat1622float2(h);
    v[2 * i] = f.x, v[2 * i + 1] = f.y;
  }
}

// G lanes per row, NT columns of y per grid row (NT == 1: SpMV). Rows row_order[first, first + count).
template <class T, int G, int NT>
__global__ void __launch_bounds__(kThreads) spmm_csr_kernel(CsrParams p, int64_t first, int64_t count) {
  static_assert(32 % G == 0, "a group must not straddle warps");
  const int64_t group = (static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x) / G;
  const int lane = threadIdx.x % G;
  // Groups past the end run an empty row: every lane must reach the shuffles below.
  const bool active = group < count;
  const int32_t row = active ? p.row_order[first + group] : 0;
  const int32_t begin = active ? p.row_start[row] : 0;
  const int32_t end = active ? p.row_end[row] : 0;
  const int64_t n0 = static_cast<int64_t>(blockIdx.y) * NT;
  const T* values = static_cast<const T*>(p.values);
  const T* x = static_cast<const T*>(p.x);

  float acc[NT];
#pragma unroll
  for (int n = 0; n < NT; ++n) acc[n] = 0.0f;

#pragma unroll 2
  for (int32_t j = begin + lane * kCsrVector; j < end; j += G * kCsrVector) {
    float v[8];
    load8(values + j, v);
    const uint4 iv = __ldg(reinterpret_cast<const uint4*>(p.indices + j));
    const uint32_t w[4] = {iv.x, iv.y, iv.z, iv.w};
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      if (j + e < end) {  // the padding after a row's last entry is never multiplied
        const int64_t c = (w[e >> 1] >> (16 * (e & 1))) & 0xffffu;
#pragma unroll
        for (int n = 0; n < NT; ++n)
          if (NT == 1 || n0 + n < p.n) acc[n] += v[e] * to_float(__ldg(x + (n0 + n) * p.k + c));
      }
    }
  }

#pragma unroll
  for (int n = 0; n < NT; ++n)
#pragma unroll
    for (int off = G / 2; off > 0; off >>= 1) acc[n] += __shfl_xor_sync(0xffffffffu, acc[n], off);

  if (active) {
    T* y = static_cast<T*>(p.y);
#pragma unroll
    for (int n = 0; n < NT; ++n)
      if (lane == n % G && n0 + n < p.n) y[(n0 + n) * p.m + row] = from_float<T>(acc[n]);
  }
}

template <class T, int G, int NT>
void launch_bin(const CsrParams& p, int64_t first, int64_t count, cudaStream_t stream) {
  if (count <= 0) return;
  constexpr int64_t kGroups = kThreads / G;
  const int64_t blocks = (count + kGroups - 1) / kGroups;
  const int64_t col_tiles = (p.n + NT - 1) / NT;
  if (col_tiles > 65535)
    throw std::invalid_argument("cuda spmm_csr: n=" + std::to_string(p.n) + " is too large");
  spmm_csr_kernel<T, G, NT>
      <<<dim3(static_cast<unsigned>(blocks), static_cast<unsigned>(col_tiles)), kThreads, 0, stream>>>(
          p, first, count);
  detail::check(cudaGetLastError(), "cuda spmm_csr launch");
}

template <class T>
void launch(const CsrParams& p, cudaStream_t stream) {
  if (p.n == 1) {
    launch_bin<T, 32, 1>(p, 0, p.n_long, stream);
    launch_bin<T, kCsrShortGroup, 1>(p, p.n_long, p.m - p.n_long, stream);
  } else {
    launch_bin<T, 32, 8>(p, 0, p.n_long, stream);
    launch_bin<T, kCsrShortGroup, 8>(p, p.n_long, p.m - p.n_long, stream);
  }
}

}  // namespace

void spmm_csr(const CsrParams& p) {
  if (p.m < 0 || p.k < 0 || p.n < 0 || p.n_long < 0 || p.n_long > p.m)
    throw std::invalid_argument("cuda spmm_csr: negative size or n_long outside [0, m]");
  if (p.m > INT32_MAX) throw std::invalid_argument("cuda spmm_csr: more than 2^31 rows");
  if (p.k > 65536) throw std::invalid_argument("cuda spmm_csr: K > 65536 does not fit uint16 column indices");
  if (p.m == 0 || p.n == 0) return;
  if (!p.values || !p.indices || !p.row_start || !p.row_end || !p.row_order || !p.x || !p.y)
    throw std::invalid_argument("cuda spmm_csr: null pointer");
  if ((reinterpret_cast<uintptr_t>(p.values) | reinterpret_cast<uintptr_t>(p.indices)) % 16)
    throw std::invalid_argument("cuda spmm_csr: values and indices must be 16-byte aligned");
  detail::use_device(p.device, "cuda spmm_csr");
  const auto stream = reinterpret_cast<cudaStream_t>(p.stream);
  switch (p.dtype) {
    case DType::kF32:
      return launch<float>(p, stream);
    case DType::kF16:
      return launch<__half>(p, stream);
    case DType::kBF16:
      return launch<__nv_bfloat16>(p, stream);
  }
  throw std::invalid_argument("cuda spmm_csr: unknown dtype");
}

}  // namespace zs::cuda
