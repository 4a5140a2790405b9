// Packed sparse weights: the library's own validated copy of a sparse matrix
// in the layout the kernels want (ORT's PrePack). Packing checks every index
// once; kernels then trust the view and never check again, so a Python caller
// cannot make a kernel read out of bounds.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <vector>

#include "zeroskip/spmm.h"

namespace zs {

// Thrown for any malformed input; the binding turns it into ValueError.
struct FormatError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

class PackedCsr {
 public:
  // values[nnz], col[nnz] (any integer width, as int64), row_ptr[m + 1].
  // Stored as 8-bit column deltas (see CsrF32).
  PackedCsr(int64_t m, int64_t k, int64_t nnz, const float* values, const int64_t* col,
            const int64_t* row_ptr);
  const CsrF32& view() const { return view_; }
  int64_t nbytes() const;

 private:
  std::vector<float> values_;
  std::vector<uint8_t> delta_;
  std::vector<int64_t> row_ptr_;
  CsrF32 view_;
};

class PackedBsr {
 public:
  // values[nblocks][br][bc] row-major blocks, bcol[nblocks], brow_ptr[ceil(m/br) + 1].
  PackedBsr(int64_t m, int64_t k, int32_t br, int32_t bc, int64_t nblocks, const float* values,
            const int64_t* bcol, const int64_t* brow_ptr);
  const BsrF32& view() const { return view_; }
  int64_t nbytes() const;

 private:
  std::vector<float> values_;
  std::vector<uint16_t> col16_;
  std::vector<uint32_t> col32_;
  std::vector<int64_t> brow_ptr_;
  BsrF32 view_;
};

class PackedNm {
 public:
  // values[m][k/group*n]; meta[m][meta_stride], offsets packed `bits` bits each.
  PackedNm(int64_t m, int64_t k, int32_t n, int32_t group, int32_t bits, const float* values,
           const uint8_t* meta, int64_t meta_stride);
  const NmF32& view() const { return view_; }
  int64_t nbytes() const;

 private:
  std::vector<float> values_;
  std::vector<uint8_t> meta_;
  std::vector<float> vals8_;     // see NmF32::vals8
  std::vector<uint32_t> meta8_;  // see NmF32::meta8
  NmF32 view_;
};

}  // namespace zs
