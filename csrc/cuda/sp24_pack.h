// Host side of the 2:4 GEMM: float <-> fp16 / bf16 bit conversions and the packer that turns a
// 2:4-sparse M x K matrix into (values, metadata) in the layout of sp24_layout.h. Plain C++, compiled
// in every build (no CUDA needed).
#pragma once

#include <cstdint>

namespace zs::cuda {

enum class Half : int { kF16 = 0, kBF16 = 1 };
enum class Source : int { kF32 = 0, kF16 = 1, kBF16 = 2 };

// Round to nearest, ties to even; overflow goes to infinity, NaN stays NaN (quiet).
uint16_t float_to_f16_bits(float f);
uint16_t float_to_bf16_bits(float f);
float f16_bits_to_float(uint16_t h);
float bf16_bits_to_float(uint16_t h);

// The first 4-wide group holding more than two nonzeros.
struct Sp24Violation {
  int64_t row = -1, col = -1;  // col: first column of the group
  int count = 0;
};

// Number of uint16 values / uint32 metadata words sp24_pack writes for an m x k matrix.
int64_t sp24_values_size(int64_t m, int64_t k);
int64_t sp24_meta_size(int64_t m, int64_t k);

// Packs `w` (m x k, row stride ld elements; float32, or 16-bit patterns of `src`) into `values` and
// `meta` (sizes above), converting to `dst`. Zeros are +-0 (a value that only rounds to zero in `dst`
// still counts as nonzero). Columns past k count as zero, so k need not be a multiple of 4. In a group
// with fewer than two nonzeros the free positions are the lowest zero ones. Returns false, with `bad`
// set, if a group has more than two nonzeros (then values and meta are unspecified).
bool sp24_pack(const void* w, Source src, int64_t m, int64_t k, int64_t ld, Half dst, uint16_t* values,
               uint32_t* meta, Sp24Violation* bad);

// The inverse: the dense m x k matrix (16-bit patterns of the packed type). Throws
// std::invalid_argument on metadata that ::ordered_metadata does not accept.
void sp24_unpack(const uint16_t* values, const uint32_t* meta, int64_t m, int64_t k, uint16_t* dense);

// What each lane of the warp loads for tile (mt, kt), as the kernel loads it: a[lane * 8 + i] is
// register half a_i, e[lane] the metadata register.
void sp24_fragments(const uint16_t* values, const uint32_t* meta, int64_t m, int64_t k, int64_t mt,
                    int64_t kt, uint16_t* a, uint32_t* e);

}  // namespace zs::cuda
