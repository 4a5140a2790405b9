// Host-side packing for the 2:4 sparse tensor-core GEMM (see sp24_layout.h for the layout).
#include "sp24_pack.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>

#include "sp24_layout.h"

namespace zs::cuda {

uint16_t float_to_f16_bits(float f) {
  uint32_t x;
  std::memcpy(&x, &f, sizeof x);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t ax = x & 0x7fffffffu;
  if (ax >= 0x7f800000u)  // inf, or NaN (kept quiet, top payload bits kept)
    return static_cast<uint16_t>(sign | 0x7c00u | (ax > 0x7f800000u ? 0x200u | ((ax >> 13) & 0x3ffu) : 0u));
  if (ax >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);     // >= 65520 rounds to infinity
  if (ax >= 0x38800000u) {                                                 // normal half (>= 2^-14)
    const uint32_t rounded = ax + 0xfffu + ((ax >> 13) & 1u);              // ties to even at bit 13
    return static_cast<uint16_t>(sign | ((rounded - 0x38000000u) >> 13));  // rebias 127 -> 15
  }
  if (ax <= 0x33000000u) return static_cast<uint16_t>(sign);  // <= 2^-25 rounds to zero
  // Subnormal half: the value in units of 2^-24, rounded to nearest even.
  const uint32_t mant = (ax & 0x7fffffu) | 0x800000u;
  const int shift = 126 - static_cast<int>(ax >> 23);  // 14..24
  uint32_t h = mant >> shift;
  const uint32_t rem = mant & ((1u << shift) - 1u), half = 1u << (shift - 1);
  if (rem > half || (rem == half && (h & 1u))) ++h;
  return static_cast<uint16_t>(sign | h);
}

uint16_t float_to_bf16_bits(float f) {
  uint32_t x;
  std::memcpy(&x, &f, sizeof x);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x40u);  // quiet NaN
  return static_cast<uint16_t>((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

float f16_bits_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t e = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
  uint32_t x;
  if (e == 0x1f) {
    x = sign | 0x7f800000u | (mant << 13);
  } else if (e != 0) {
    x = sign | ((e + 112u) << 23) | (mant << 13);
  } else if (mant == 0) {
    x = sign;
  } else {  // subnormal: normalise
    int shift = 0;
    uint32_t m = mant;
    while (!(m & 0x400u)) {
      m <<= 1;
      ++shift;
    }
    x = sign | (static_cast<uint32_t>(113 - shift) << 23) | ((m & 0x3ffu) << 13);
  }
  float f;
  std::memcpy(&f, &x, sizeof f);
  return f;
}

float bf16_bits_to_float(uint16_t h) {
  const uint32_t x = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &x, sizeof f);
  return f;
}

int64_t sp24_values_size(int64_t m, int64_t k) { return sp24::padded_rows(m) * sp24::padded_cols(k) / 2; }
int64_t sp24_meta_size(int64_t m, int64_t k) {
  return sp24::padded_rows(m) / sp24::kTileM * (sp24::padded_cols(k) / sp24::kTileK) * sp24::kTileMeta;
}

namespace {

// One element of w as (bits in dst, is it nonzero).
std::pair<uint16_t, bool> element(const void* w, Source src, int64_t at, Half dst) {
  if (src == Source::kF32) {
    const float f = static_cast<const float*>(w)[at];
    return {dst == Half::kF16 ? float_to_f16_bits(f) : float_to_bf16_bits(f), !(f == 0.0f)};
  }
  const uint16_t h = static_cast<const uint16_t*>(w)[at];
  const bool nonzero = (h & 0x7fffu) != 0;  // +-0 in both fp16 and bf16
  if ((src == Source::kF16) == (dst == Half::kF16)) return {h, nonzero};
  const float f = src == Source::kF16 ? f16_bits_to_float(h) : bf16_bits_to_float(h);
  return {dst == Half::kF16 ? float_to_f16_bits(f) : float_to_bf16_bits(f), nonzero};
}

}  // namespace

bool sp24_pack(const void* w, Source src, int64_t m, int64_t k, int64_t ld, Half dst, uint16_t* values,
               uint32_t* meta, Sp24Violation* bad) {
  if (m < 0 || k < 0 || ld < k) throw std::invalid_argument("sp24_pack: bad shape or row stride");
  const int64_t mp = sp24::padded_rows(m), kp = sp24::padded_cols(k), kt_count = kp / sp24::kTileK;
  std::fill(values, values + sp24_values_size(m, k), uint16_t{0});
  std::fill(meta, meta + sp24_meta_size(m, k), uint32_t{0});
  for (int64_t r = 0; r < mp; ++r) {
    for (int64_t q = 0; q < kp / 4; ++q) {
      uint16_t bits[4] = {0, 0, 0, 0};
      bool nonzero[4] = {false, false, false, false};
      int count = 0;
      for (int i = 0; i < 4; ++i) {
        const int64_t col = 4 * q + i;
        if (r < m && col < k) {
          std::tie(bits[i], nonzero[i]) = element(w, src, r * ld + col, dst);
          count += nonzero[i];
        }
      }
      if (count > 2) {
        if (bad) *bad = Sp24Violation{r, 4 * q, count};
        return false;
      }
      // Nonzero positions first, then the lowest zero ones; in increasing order.
      int pos[2], n = 0;
      for (int i = 0; i < 4 && n < 2; ++i)
        if (nonzero[i]) pos[n++] = i;
      for (int i = 0; i < 4 && n < 2; ++i)
        if (!nonzero[i]) pos[n++] = i;
      if (pos[0] > pos[1]) std::swap(pos[0], pos[1]);
      const int64_t tile = sp24::tile_index(r / sp24::kTileM, q / 8, kt_count);
      const int rr = static_cast<int>(r % sp24::kTileM), c = static_cast<int>(q % 8);
      for (int j = 0; j < 2; ++j)
        values[tile * sp24::kTileValues + sp24::value_slot(rr, c, j)] = bits[pos[j]];
      meta[tile * sp24::kTileMeta + sp24::meta_word(rr, c)] |= static_cast<uint32_t>(pos[0] | (pos[1] << 2))
                                                               << sp24::meta_shift(rr, c);
    }
  }
  return true;
}

void sp24_unpack(const uint16_t* values, const uint32_t* meta, int64_t m, int64_t k, uint16_t* dense) {
  const int64_t kt_count = sp24::padded_cols(k) / sp24::kTileK;
  std::fill(dense, dense + m * k, uint16_t{0});
  for (int64_t r = 0; r < m; ++r) {
    for (int64_t q = 0; 4 * q < k; ++q) {
      const int64_t tile = sp24::tile_index(r / sp24::kTileM, q / 8, kt_count);
      const int rr = static_cast<int>(r % sp24::kTileM), c = static_cast<int>(q % 8);
      const uint32_t nib =
          (meta[tile * sp24::kTileMeta + sp24::meta_word(rr, c)] >> sp24::meta_shift(rr, c)) & 0xfu;
      const int i0 = nib & 3, i1 = nib >> 2;
      if (i0 >= i1)
        throw std::invalid_argument("sp24_unpack: row " + std::to_string(r) + ", columns " +
                                    std::to_string(4 * q) + ".. have metadata " + std::to_string(nib) +
                                    ", not two increasing positions");
      const int pos[2] = {i0, i1};
      for (int j = 0; j < 2; ++j)
        if (4 * q + pos[j] < k)
          dense[r * k + 4 * q + pos[j]] = values[tile * sp24::kTileValues + sp24::value_slot(rr, c, j)];
    }
  }
}

void sp24_fragments(const uint16_t* values, const uint32_t* meta, int64_t m, int64_t k, int64_t mt,
                    int64_t kt, uint16_t* a, uint32_t* e) {
  const int64_t kt_count = sp24::padded_cols(k) / sp24::kTileK;
  if (mt < 0 || kt < 0 || mt >= sp24::padded_rows(m) / sp24::kTileM || kt >= kt_count)
    throw std::invalid_argument("sp24_fragments: tile (" + std::to_string(mt) + ", " + std::to_string(kt) +
                                ") is outside the packed matrix");
  const int64_t tile = sp24::tile_index(mt, kt, kt_count);
  for (int lane = 0; lane < 32; ++lane) {
    for (int i = 0; i < sp24::kLaneValues; ++i)
      a[lane * sp24::kLaneValues + i] = values[sp24::lane_values_offset(tile, lane) + i];
    e[lane] = meta[sp24::lane_meta_offset(tile, lane)];
  }
}

}  // namespace zs::cuda
