#include "packed.h"

#include <string>

namespace zs {
namespace {

[[noreturn]] void fail(const std::string& what) { throw FormatError(what); }

void check_dims(int64_t m, int64_t k) {
  if (m < 0 || k < 0) fail("negative matrix shape (" + std::to_string(m) + ", " + std::to_string(k) + ")");
  if (k > (int64_t{1} << 32) - 1) fail("K=" + std::to_string(k) + " exceeds 2^32-1 columns");
}

// Row pointers start at 0, never decrease, end at nnz.
void check_ptr(const int64_t* ptr, int64_t rows, int64_t nnz, const char* what) {
  if (ptr[0] != 0) fail(std::string(what) + "[0] is " + std::to_string(ptr[0]) + ", expected 0");
  for (int64_t i = 0; i < rows; ++i)
    if (ptr[i + 1] < ptr[i])
      fail(std::string(what) + " decreases at row " + std::to_string(i) + " (" + std::to_string(ptr[i]) +
           " -> " + std::to_string(ptr[i + 1]) + ")");
  if (ptr[rows] != nnz)
    fail(std::string(what) + "[-1] is " + std::to_string(ptr[rows]) + ", expected " + std::to_string(nnz));
}

// Indices inside [0, limit) and strictly increasing within each row.
void check_idx(const int64_t* idx, const int64_t* ptr, int64_t rows, int64_t limit, const char* what) {
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t e = ptr[i]; e < ptr[i + 1]; ++e) {
      if (idx[e] < 0 || idx[e] >= limit)
        fail(std::string(what) + " " + std::to_string(idx[e]) + " at position " + std::to_string(e) + " (row " +
             std::to_string(i) + ") is outside [0, " + std::to_string(limit) + ")");
      if (e > ptr[i] && idx[e] <= idx[e - 1])
        fail(std::string(what) + " not strictly increasing in row " + std::to_string(i) + " at position " +
             std::to_string(e));
    }
  }
}

template <class T>
void narrow(const int64_t* src, int64_t count, std::vector<T>* dst) {
  dst->resize(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) (*dst)[i] = static_cast<T>(src[i]);
}

}  // namespace

PackedCsr::PackedCsr(int64_t m, int64_t k, int64_t nnz, const float* values, const int64_t* col,
                     const int64_t* row_ptr) {
  check_dims(m, k);
  if (nnz < 0) fail("negative nnz");
  check_ptr(row_ptr, m, nnz, "indptr");
  check_idx(col, row_ptr, m, k, "column index");
  values_.reserve(static_cast<size_t>(nnz));
  delta_.reserve(static_cast<size_t>(nnz));
  row_ptr_.resize(static_cast<size_t>(m + 1));
  for (int64_t i = 0; i < m; ++i) {
    row_ptr_[i] = static_cast<int64_t>(values_.size());
    int64_t prev = 0;
    for (int64_t e = row_ptr[i]; e < row_ptr[i + 1]; ++e) {
      for (; col[e] - prev > 255; prev += 255) {  // bridge a long gap with stored zeros
        values_.push_back(0.0f);
        delta_.push_back(255);
      }
      values_.push_back(values[e]);
      delta_.push_back(static_cast<uint8_t>(col[e] - prev));
      prev = col[e];
    }
  }
  row_ptr_[m] = static_cast<int64_t>(values_.size());
  view_.m = m;
  view_.k = k;
  view_.nnz = row_ptr_[m];
  view_.values = values_.data();
  view_.delta = delta_.data();
  view_.row_ptr = row_ptr_.data();
}

int64_t PackedCsr::nbytes() const {
  return static_cast<int64_t>(values_.size() * 4 + delta_.size() + row_ptr_.size() * 8);
}

PackedBsr::PackedBsr(int64_t m, int64_t k, int32_t br, int32_t bc, int64_t nblocks, const float* values,
                     const int64_t* bcol, const int64_t* brow_ptr) {
  check_dims(m, k);
  if (br < 1 || bc < 1 || br > 1024 || bc > 1024)
    fail("block shape (" + std::to_string(br) + ", " + std::to_string(bc) + ") must be within [1, 1024]");
  if (nblocks < 0) fail("negative block count");
  const int64_t mb = (m + br - 1) / br, kb = (k + bc - 1) / bc;
  check_ptr(brow_ptr, mb, nblocks, "indptr");
  check_idx(bcol, brow_ptr, mb, kb, "block column index");
  // Row-major blocks in, column-major blocks out (see BsrF32).
  const int64_t bs = int64_t{br} * bc;
  values_.resize(static_cast<size_t>(nblocks * bs));
  for (int64_t b = 0; b < nblocks; ++b)
    for (int32_t r = 0; r < br; ++r)
      for (int32_t c = 0; c < bc; ++c) values_[b * bs + c * br + r] = values[b * bs + r * bc + c];
  // The kernels read whole block rows/columns that stick out of the matrix:
  // those entries must be zero so they add nothing.
  for (int64_t ib = 0; ib < mb; ++ib) {
    for (int64_t b = brow_ptr[ib]; b < brow_ptr[ib + 1]; ++b) {
      for (int32_t r = 0; r < br; ++r)
        for (int32_t c = 0; c < bc; ++c)
          if ((ib * br + r >= m || bcol[b] * bc + c >= k) && values_[b * bs + c * br + r] != 0.0f)
            fail("block " + std::to_string(b) + " has a nonzero outside the matrix (row " +
                 std::to_string(ib * br + r) + ", column " + std::to_string(bcol[b] * bc + c) + ")");
    }
  }
  brow_ptr_.assign(brow_ptr, brow_ptr + mb + 1);
  view_.m = m;
  view_.k = k;
  view_.br = br;
  view_.bc = bc;
  view_.mb = mb;
  view_.nblocks = nblocks;
  view_.values = values_.data();
  view_.brow_ptr = brow_ptr_.data();
  if (kb <= 65536) {
    narrow(bcol, nblocks, &col16_);
    view_.bcol = col16_.data();
    view_.bcol_type = IndexType::kU16;
  } else {
    narrow(bcol, nblocks, &col32_);
    view_.bcol = col32_.data();
    view_.bcol_type = IndexType::kU32;
  }
}

int64_t PackedBsr::nbytes() const {
  return static_cast<int64_t>(values_.size() * 4 + col16_.size() * 2 + col32_.size() * 4 + brow_ptr_.size() * 8);
}

PackedNm::PackedNm(int64_t m, int64_t k, int32_t n, int32_t group, int32_t bits, const float* values,
                   const uint8_t* meta, int64_t meta_stride) {
  check_dims(m, k);
  if (group < 2 || group > 256 || n < 1 || n >= group)
    fail("N:M pattern " + std::to_string(n) + ":" + std::to_string(group) + " needs 1 <= n < m <= 256");
  if (bits != 1 && bits != 2 && bits != 4 && bits != 8) fail("meta bits must be 1, 2, 4 or 8");
  if ((int64_t{1} << bits) < group) fail("meta bits too narrow for group size " + std::to_string(group));
  if (k % group != 0) fail("K=" + std::to_string(k) + " is not a multiple of the group size " + std::to_string(group));
  const int64_t kept = k / group * n;
  if (meta_stride < (kept * bits + 7) / 8) fail("meta row stride too small");
  for (int64_t i = 0; i < m; ++i) {
    const uint8_t* mr = meta + i * meta_stride;
    for (int64_t q = 0; q < kept; ++q) {
      const int64_t bit = q * bits;
      const int off = (mr[bit / 8] >> (bit % 8)) & ((1 << bits) - 1);
      if (off >= group)
        fail("offset " + std::to_string(off) + " in row " + std::to_string(i) + ", group " + std::to_string(q / n) +
             " is outside [0, " + std::to_string(group) + ")");
      if (q % n != 0) {
        const int64_t pb = (q - 1) * bits;
        const int prev = (mr[pb / 8] >> (pb % 8)) & ((1 << bits) - 1);
        if (off <= prev)
          fail("offsets not strictly increasing in row " + std::to_string(i) + ", group " + std::to_string(q / n));
      }
    }
  }
  values_.assign(values, values + m * kept);
  meta_.assign(meta, meta + m * meta_stride);
  view_.m = m;
  view_.k = k;
  view_.n = n;
  view_.group = group;
  view_.bits = bits;
  view_.values = values_.data();
  view_.meta = meta_.data();
  view_.meta_stride = meta_stride;
  if (n == 2 && group == 4 && m >= 8) {
    const int64_t groups = k / 4, m8 = m / 8 * 8;
    vals8_.resize(static_cast<size_t>(m8 * groups * 2));
    meta8_.assign(static_cast<size_t>(m8 / 8 * groups), 0u);
    for (int64_t i = 0; i < m8; ++i) {
      const int64_t b = i / 8, r = i % 8;
      for (int64_t g = 0; g < groups; ++g)
        for (int t = 0; t < 2; ++t) {
          const int64_t q = 2 * g + t;
          vals8_[(b * groups + g) * 16 + 8 * t + r] = values_[i * kept + q];
          const uint32_t off = (meta_[i * meta_stride + q / 4] >> (2 * (q % 4))) & 3u;
          meta8_[b * groups + g] |= off << (2 * (8 * t + r));
        }
    }
    view_.vals8 = vals8_.data();
    view_.meta8 = meta8_.data();
    view_.m8 = m8;
  }
}

int64_t PackedNm::nbytes() const {
  return static_cast<int64_t>(values_.size() * 4 + meta_.size() + vals8_.size() * 4 + meta8_.size() * 4);
}

}  // namespace zs
