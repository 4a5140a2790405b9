// 2:4 semi-structured GEMM on sparse tensor cores: y[N, M] = x[N, K] @ W[M, K]^T (the Linear
// orientation), W 2:4-sparse along K, fp16 or bf16, fp32 accumulation, y in the input type.
//
// STATUS: compiled for sm_80 and sm_90, but not yet run on a GPU. The packed layout it reads is
// checked on the CPU against an emulation of the instruction (tests/test_cuda.py); the GPU tests
// there skip on machines without one.
//
// W is the sparse A operand of mma.sp::ordered_metadata.m16n8k32 (row-major A), x the B operand:
// B[k][n] = x[n][k], the instruction's column-major B, so x rows stream contiguously along K and
// any N is handled by zero-filling rows n >= N. W comes pre-packed in the per-lane order of the A
// fragment and the metadata registers (sp24_layout.h): a lane loads its A registers with one 16-byte
// shared-memory load and its metadata with one 4-byte load, with no shuffles. x tiles go to shared
// memory with cp.async (zero-filled past N and past K) and reach the B registers through ldmatrix;
// their rows are padded by 16 bytes so ldmatrix is free of bank conflicts. A multi-stage cp.async
// pipeline overlaps the loads of stage s + STAGES - 1 with the math of stage s.
//
// Two tiles: a small-N one (16 rows of W x 16 columns of y per block, the 4 warps splitting each
// 256-wide K stage and summing through shared memory at the end: many blocks and long streams of W
// for decode-sized N) and a large one (128 x 64 per block, 2 x 2 warps of 64 x 32). The packer pads
// W to the largest block tile, so M and K need not be multiples of anything; N is arbitrary.
// Stores of y are 2-byte and strided by M (each lane holds outputs of one W row for 2 columns of y);
// staging them through shared memory for 16-byte stores is a known possible improvement.
#include <cstdint>
#include <stdexcept>
#include <string>

#include "cuda_util.cuh"
#include "kernels.h"
#include "sp24_layout.h"

namespace zs::cuda {
namespace {

using detail::cp_async16;
using detail::cp_async_commit;
using detail::cp_async_wait;
using detail::from_float;
using detail::ldmatrix_x4;

// MF x NF instructions per warp (16 x 8 each), WM x WN warps over the block tile, WK warps splitting
// K, KSTEPS instructions along K per warp per stage, STAGES pipeline stages.
template <int MF_, int NF_, int WM_, int WN_, int WK_, int KSTEPS_, int STAGES_>
struct Tile {
  static constexpr int MF = MF_, NF = NF_, WM = WM_, WN = WN_, WK = WK_, KSTEPS = KSTEPS_, STAGES = STAGES_;
  static constexpr int kThreads = 32 * WM * WN * WK;
  static constexpr int kBM = WM * MF * sp24::kTileM, kBN = WN * NF * 8;
  static constexpr int kBK = WK * KSTEPS * sp24::kTileK;
  static constexpr int kMT = kBM / sp24::kTileM, kKT = kBK / sp24::kTileK;
  static constexpr int kAHalves = kMT * kKT * sp24::kTileValues;  // per stage
  static constexpr int kMetaWords = kMT * kKT * sp24::kTileMeta;
  static constexpr int kBStride = kBK + 8;  // halves per x row in shared memory
  static constexpr int kBHalves = kBN * kBStride;
  static constexpr int kStageBytes = kAHalves * 2 + kMetaWords * 4 + kBHalves * 2;
  static constexpr int kSmemBytes = STAGES * kStageBytes;
  static constexpr int kReduceBytes = (WK - 1) * WM * WN * MF * NF * 4 * 32 * 4;
  static_assert(sp24::kRowPad % kBM == 0 && sp24::kColPad % kBK == 0, "tile must divide the packing pad");
  static_assert(kStageBytes % 16 == 0, "stages must stay 16-byte aligned");
  static_assert(kReduceBytes <= kSmemBytes, "split-K partial sums must fit in the pipeline buffers");
  static_assert(STAGES >= 2, "a pipeline needs two stages");
};
using SmallTile = Tile<1, 2, 1, 1, 4, 2, 4>;  // 16 x 16 block tile, K split over 4 warps, 51 KiB
using LargeTile = Tile<4, 4, 2, 2, 1, 2, 4>;  // 128 x 64 block tile, 72 KiB

template <class T>
__device__ __forceinline__ void mma_sp(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[4],
                                       uint32_t e);
template <>
__device__ __forceinline__ void mma_sp<__half>(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[4],
                                               uint32_t e) {
  asm volatile(
      "mma.sp::ordered_metadata.sync.aligned.m16n8k32.row.col.f32.f16.f16.f32 "
      "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9, %10, %11}, {%0, %1, %2, %3}, %12, 0x0;\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "r"(b[2]), "r"(b[3]), "r"(e));
}
template <>
__device__ __forceinline__ void mma_sp<__nv_bfloat16>(float (&d)[4], const uint32_t (&a)[4],
                                                      const uint32_t (&b)[4], uint32_t e) {
  asm volatile(
      "mma.sp::ordered_metadata.sync.aligned.m16n8k32.row.col.f32.bf16.bf16.f32 "
      "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9, %10, %11}, {%0, %1, %2, %3}, %12, 0x0;\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "r"(b[2]), "r"(b[3]), "r"(e));
}

template <class T, class C>
__global__ void __launch_bounds__(C::kThreads) gemm_sp24_kernel(Sp24Params p) {
  extern __shared__ __align__(16) unsigned char smem[];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int wk = warp % C::WK, wm = (warp / C::WK) % C::WM, wn = warp / (C::WK * C::WM);
  const int64_t kt_count = sp24::padded_cols(p.k) / sp24::kTileK;
  const int stages = static_cast<int>(sp24::padded_cols(p.k) / C::kBK);
  const int64_t mt0 = static_cast<int64_t>(blockIdx.x) * C::kMT;
  const int64_t n0 = static_cast<int64_t>(blockIdx.y) * C::kBN;
  const uint16_t* x = static_cast<const uint16_t*>(p.x);

  auto stage_a = [&](int s) { return reinterpret_cast<uint16_t*>(smem + s * C::kStageBytes); };
  auto stage_e = [&](int s) {
    return reinterpret_cast<uint32_t*>(smem + s * C::kStageBytes + C::kAHalves * 2);
  };
  auto stage_b = [&](int s) {
    return reinterpret_cast<uint16_t*>(smem + s * C::kStageBytes + C::kAHalves * 2 + C::kMetaWords * 4);
  };

  // Stage ks (K columns [ks * kBK, (ks + 1) * kBK)) into buffer `slot`. A tile row's kKT tiles are
  // contiguous in global memory and are kept in the same order in shared memory (tile mt * kKT + kt).
  auto load = [&](int slot, int ks) {
    constexpr int kAChunks = C::kMT * C::kKT * 32;  // 16 bytes each: one lane's registers of one tile
    for (int c = tid; c < kAChunks; c += C::kThreads) {
      const int mt = c / (C::kKT * 32), rest = c % (C::kKT * 32);
      const int64_t tile = sp24::tile_index(mt0 + mt, static_cast<int64_t>(ks) * C::kKT, kt_count);
      cp_async16(stage_a(slot) + c * 8, p.values + tile * sp24::kTileValues + rest * 8);
    }
    constexpr int kEChunks = C::kMT * C::kKT * 4;  // a tile's 16 metadata words are 4 chunks
    for (int c = tid; c < kEChunks; c += C::kThreads) {
      const int mt = c / (C::kKT * 4), rest = c % (C::kKT * 4);
      const int64_t tile = sp24::tile_index(mt0 + mt, static_cast<int64_t>(ks) * C::kKT, kt_count);
      cp_async16(stage_e(slot) + c * 4, p.meta + tile * sp24::kTileMeta + rest * 4);
    }
    constexpr int kRowChunks = C::kBK / 8;
    constexpr int kBChunks = C::kBN * kRowChunks;
    for (int c = tid; c < kBChunks; c += C::kThreads) {
      const int r = c / kRowChunks, cc = c % kRowChunks;
      const int64_t n = n0 + r, col = static_cast<int64_t>(ks) * C::kBK + cc * 8;
      const bool ok = n < p.n && col < p.kx;
      cp_async16(stage_b(slot) + r * C::kBStride + cc * 8, ok ? x + n * p.ldx + col : x, ok);
    }
  };

  float acc[C::MF][C::NF][4];
#pragma unroll
  for (int i = 0; i < C::MF; ++i)
#pragma unroll
    for (int j = 0; j < C::NF; ++j)
#pragma unroll
      for (int r = 0; r < 4; ++r) acc[i][j][r] = 0.0f;

#pragma unroll
  for (int s = 0; s < C::STAGES - 1; ++s) {
    if (s < stages) load(s, s);
    cp_async_commit();  // empty groups keep the group count uniform
  }

  for (int ks = 0; ks < stages; ++ks) {
    cp_async_wait<C::STAGES - 2>();  // stage ks has landed (for this thread) ...
    __syncthreads();                 // ... for every thread, and stage ks - 1 is no longer read
    const int next = ks + C::STAGES - 1;
    if (next < stages) load(next % C::STAGES, next);
    cp_async_commit();

    const int slot = ks % C::STAGES;
    const uint16_t* sa = stage_a(slot);
    const uint32_t* se = stage_e(slot);
    const uint16_t* sb = stage_b(slot);
#pragma unroll
    for (int kk = 0; kk < C::KSTEPS; ++kk) {
      const int kt = wk * C::KSTEPS + kk;
      uint32_t a[C::MF][4], e[C::MF], b[C::NF][4];
#pragma unroll
      for (int mf = 0; mf < C::MF; ++mf) {
        const int tile = (wm * C::MF + mf) * C::kKT + kt;
        const uint4 v = *reinterpret_cast<const uint4*>(sa + sp24::lane_values_offset(tile, lane));
        a[mf][0] = v.x, a[mf][1] = v.y, a[mf][2] = v.z, a[mf][3] = v.w;
        e[mf] = se[sp24::lane_meta_offset(tile, lane)];
      }
#pragma unroll
      for (int nf = 0; nf < C::NF; ++nf) {
        // Matrix i of the x4 load: 8 rows of x (n), columns kt * 32 + 8i .. + 7 (k): B registers b_i.
        const int row = (wn * C::NF + nf) * 8 + (lane & 7);
        ldmatrix_x4(b[nf], sb + row * C::kBStride + kt * sp24::kTileK + (lane >> 3) * 8);
      }
#pragma unroll
      for (int mf = 0; mf < C::MF; ++mf)
#pragma unroll
        for (int nf = 0; nf < C::NF; ++nf) mma_sp<T>(acc[mf][nf], a[mf], b[nf], e[mf]);
    }
  }
  cp_async_wait<0>();
  __syncthreads();  // the pipeline buffers are free: reuse them for the split-K sums

  if constexpr (C::WK > 1) {
    float* red = reinterpret_cast<float*>(smem);
    constexpr int kPer = C::MF * C::NF * 4;
    const int slot = wm + C::WM * wn;
    if (wk > 0) {
      float* dst = red + ((wk - 1) * C::WM * C::WN + slot) * kPer * 32;
#pragma unroll
      for (int i = 0; i < C::MF; ++i)
#pragma unroll
        for (int j = 0; j < C::NF; ++j)
#pragma unroll
          for (int r = 0; r < 4; ++r) dst[((i * C::NF + j) * 4 + r) * 32 + lane] = acc[i][j][r];
    }
    __syncthreads();
    if (wk == 0) {
      for (int w = 1; w < C::WK; ++w) {
        const float* src = red + ((w - 1) * C::WM * C::WN + slot) * kPer * 32;
#pragma unroll
        for (int i = 0; i < C::MF; ++i)
#pragma unroll
          for (int j = 0; j < C::NF; ++j)
#pragma unroll
            for (int r = 0; r < 4; ++r) acc[i][j][r] += src[((i * C::NF + j) * 4 + r) * 32 + lane];
      }
    }
  }
  if (wk != 0) return;

  // Accumulator r of instruction (mf, nf): W row g + 8 * (r / 2), y column 2t + r % 2 of its 16 x 8 tile.
  T* y = static_cast<T*>(p.y);
  const int g = lane >> 2, t = lane & 3;
#pragma unroll
  for (int i = 0; i < C::MF; ++i)
#pragma unroll
    for (int j = 0; j < C::NF; ++j)
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        const int64_t m = (mt0 + wm * C::MF + i) * sp24::kTileM + g + 8 * (r >> 1);
        const int64_t n = n0 + (wn * C::NF + j) * 8 + 2 * t + (r & 1);
        if (m < p.m && n < p.n) y[n * p.m + m] = from_float<T>(acc[i][j][r]);
      }
}

template <class T, class C>
void launch(const Sp24Params& p, cudaStream_t stream) {
  const int64_t row_blocks = (p.m + C::kBM - 1) / C::kBM;
  const int64_t col_blocks = (p.n + C::kBN - 1) / C::kBN;
  if (col_blocks > 65535)
    throw std::invalid_argument("cuda gemm_sp24: n=" + std::to_string(p.n) + " is too large for one launch");
  if (row_blocks > INT32_MAX) throw std::invalid_argument("cuda gemm_sp24: m is too large");
  auto kernel = gemm_sp24_kernel<T, C>;
  detail::check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, C::kSmemBytes),
                "cuda gemm_sp24: shared memory opt-in");
  kernel<<<dim3(static_cast<unsigned>(row_blocks), static_cast<unsigned>(col_blocks)), C::kThreads,
           C::kSmemBytes, stream>>>(p);
  detail::check(cudaGetLastError(), "cuda gemm_sp24 launch");
}

template <class T>
void launch(const Sp24Params& p, cudaStream_t stream) {
  const int tile = p.tile != 0 ? p.tile : (p.n <= 32 ? 1 : 2);
  if (tile == 1) return launch<T, SmallTile>(p, stream);
  return launch<T, LargeTile>(p, stream);
}

}  // namespace

void gemm_sp24(const Sp24Params& p) {
  if (p.m < 0 || p.k < 0 || p.n < 0) throw std::invalid_argument("cuda gemm_sp24: negative size");
  if (p.tile < 0 || p.tile > 2) throw std::invalid_argument("cuda gemm_sp24: tile must be 0 (auto), 1 or 2");
  if (p.dtype != DType::kF16 && p.dtype != DType::kBF16)
    throw std::invalid_argument("cuda gemm_sp24: dtype must be float16 or bfloat16");
  if (p.m == 0 || p.n == 0) return;
  if (!p.values || !p.meta || !p.x || !p.y) throw std::invalid_argument("cuda gemm_sp24: null pointer");
  if (p.kx < p.k || p.kx % 8 || p.kx > sp24::padded_cols(p.k) || p.ldx < p.kx || p.ldx % 8)
    throw std::invalid_argument(
        "cuda gemm_sp24: x needs kx = k rounded up to 8 (zero-padded) columns and a row "
        "stride that is a multiple of 8");
  if ((reinterpret_cast<uintptr_t>(p.x) | reinterpret_cast<uintptr_t>(p.values) |
       reinterpret_cast<uintptr_t>(p.meta)) %
      16)
    throw std::invalid_argument("cuda gemm_sp24: x, values and meta must be 16-byte aligned");
  detail::use_device(p.device, "cuda gemm_sp24");
  const auto stream = reinterpret_cast<cudaStream_t>(p.stream);
  if (p.dtype == DType::kF16) return launch<__half>(p, stream);
  return launch<__nv_bfloat16>(p, stream);
}

}  // namespace zs::cuda
