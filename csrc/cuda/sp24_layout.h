// Memory layout of a 2:4 weight packed for mma.sp::ordered_metadata.m16n8k32 with .f16/.bf16.
//
// The M x K weight (2:4 along K) is cut into 16 x 32 tiles, one per instruction; tile (mt, kt) is
// stored at index mt * kt_count + kt (kt_count = padded K / 32), so the tiles a block streams for
// its rows are contiguous along K. Each tile holds:
//   values: 256 halves, in the order the warp's lanes hold them as the A operand: lane L's 16 bytes
//           (a0..a7) are values[tile * 256 + L * 8 ...]. A lane is (group g = L / 4, t = L % 4); a0,a1
//           are the two kept values of row g, 4-wide chunk t (columns 4t..4t+3), a2,a3 the same chunk
//           of row g + 8, a4..a7 the same for chunk t + 4 (columns 16 + 4t..).
//   meta:   16 words. With sparsity selector 0 the lanes with t = 0 and t = 1 supply the metadata:
//           lane 4g + p holds, in bits 0..15, row g's chunks 4p..4p+3 (4 bits per chunk, lowest chunk
//           lowest) and in bits 16..31 row g + 8's. Word 2g + p is that lane's word; lanes with t = 2, 3
//           load the word of lane 4g + (t & 1), which the instruction ignores.
//   Each chunk's 4 bits are the two kept positions (first in the low 2 bits), increasing, as
//   ::ordered_metadata requires (0b0100, 0b1000, 0b1001, 0b1100, 0b1101, 0b1110).
// Rows are padded to kRowPad and columns to kColPad (zero values, positions 0 and 1), so every block
// tile and pipeline stage of the kernel lies inside the packed arrays.
//
// The packer (sp24_pack.cc), the kernel (gemm_sp24.cu) and the per-lane view the host tests check
// against an emulation of the instruction (sp24_fragments) all take their indices from here.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define ZS_SP24_HD __host__ __device__ __forceinline__
#else
#define ZS_SP24_HD inline
#endif

namespace zs::cuda::sp24 {

constexpr int kTileM = 16;        // rows of A per instruction
constexpr int kTileK = 32;        // columns of A (before compression) per instruction
constexpr int kTileValues = 256;  // kept halves per tile (16 x 16)
constexpr int kTileMeta = 16;     // 32-bit metadata words per tile
constexpr int kLaneValues = 8;    // halves per lane per tile (16 bytes)
constexpr int kRowPad = 128;      // largest block tile along M
constexpr int kColPad = 256;      // largest K per pipeline stage

ZS_SP24_HD int64_t padded_rows(int64_t m) { return (m + kRowPad - 1) / kRowPad * kRowPad; }
ZS_SP24_HD int64_t padded_cols(int64_t k) { return (k + kColPad - 1) / kColPad * kColPad; }
ZS_SP24_HD int64_t tile_index(int64_t mt, int64_t kt, int64_t kt_count) { return mt * kt_count + kt; }

// Where lane `lane` reads its 8 values and its metadata word for tile `tile` (the kernel's loads).
ZS_SP24_HD int64_t lane_values_offset(int64_t tile, int lane) {
  return tile * kTileValues + lane * kLaneValues;
}
ZS_SP24_HD int64_t lane_meta_offset(int64_t tile, int lane) {
  return tile * kTileMeta + (lane >> 2) * 2 + (lane & 1);
}

// Where the packer puts kept value j (0 or 1) of chunk c (0..7) of row r (0..15) inside a tile.
ZS_SP24_HD int value_slot(int r, int c, int j) {
  const int lane = (r & 7) * 4 + (c & 3);
  const int reg = (c >> 2) * 4 + (r >> 3) * 2 + j;
  return lane * kLaneValues + reg;
}
// The metadata word (inside a tile) and bit position of chunk c of row r.
ZS_SP24_HD int meta_word(int r, int c) { return (r & 7) * 2 + (c >> 2); }
ZS_SP24_HD int meta_shift(int r, int c) { return (r >> 3) * 16 + (c & 3) * 4; }

}  // namespace zs::cuda::sp24
