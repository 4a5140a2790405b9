// zeroskip._C's CUDA functions: host-side 2:4 packing (every build) and the GPU entry points (which,
// in builds without nvcc, raise RuntimeError saying so). GPU tensors come in as integer device
// pointers with their sizes, and the stream as an integer; nothing here calls CUDA at import.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>
#include <vector>

#include "../cpu/packed.h"
#include "../cuda/kernels.h"
#include "../cuda/sp24_layout.h"
#include "../cuda/sp24_pack.h"

namespace py = pybind11;

namespace {

namespace zc = zs::cuda;

using U16 = py::array_t<uint16_t, py::array::c_style>;
using U32 = py::array_t<uint32_t, py::array::c_style>;

zc::Half half_type(const std::string& dtype) {
  if (dtype == "float16") return zc::Half::kF16;
  if (dtype == "bfloat16") return zc::Half::kBF16;
  throw py::value_error("dtype must be 'float16' or 'bfloat16', got '" + dtype + "'");
}

zc::DType kernel_dtype(const std::string& dtype) {
  if (dtype == "float32") return zc::DType::kF32;
  if (dtype == "float16") return zc::DType::kF16;
  if (dtype == "bfloat16") return zc::DType::kBF16;
  throw py::value_error("dtype must be 'float32', 'float16' or 'bfloat16', got '" + dtype + "'");
}

void expect(const py::array& a, int64_t size, const char* what) {
  if (a.size() != size)
    throw py::value_error(std::string(what) + " has " + std::to_string(a.size()) + " elements, expected " +
                          std::to_string(size));
}

template <class T>
const T* ptr(uintptr_t p) {
  return reinterpret_cast<const T*>(p);
}

}  // namespace

void register_cuda_bindings(py::module_& m) {
  m.def("cuda_half_bits", [](py::array_t<float, py::array::c_style | py::array::forcecast> x, const std::string& dtype) {
    const zc::Half h = half_type(dtype);
    py::array_t<uint16_t> out(std::vector<py::ssize_t>(x.shape(), x.shape() + x.ndim()));
    const float* src = x.data();
    uint16_t* dst = out.mutable_data();
    for (py::ssize_t i = 0; i < x.size(); ++i)
      dst[i] = h == zc::Half::kF16 ? zc::float_to_f16_bits(src[i]) : zc::float_to_bf16_bits(src[i]);
    return out;
  }, py::arg("x"), py::arg("dtype"),
        "float32 -> float16 / bfloat16 bit patterns (uint16), round to nearest even (the packer's conversion).");

  m.def("cuda_sp24_layout", [] {
    namespace s = zc::sp24;
    py::dict d;
    d["tile_m"] = s::kTileM;
    d["tile_k"] = s::kTileK;
    d["row_pad"] = s::kRowPad;
    d["col_pad"] = s::kColPad;
    d["tile_values"] = s::kTileValues;
    d["tile_meta"] = s::kTileMeta;
    return d;
  }, "Constants of the packed 2:4 layout (csrc/cuda/sp24_layout.h).");

  m.def("cuda_csr_layout", [] {
    py::dict d;
    d["vector"] = zc::kCsrVector;
    d["short_group"] = zc::kCsrShortGroup;
    d["long_row"] = zc::kCsrLongRow;
    d["max_cols"] = 65536;
    return d;
  }, "Constants of the packed CSR layout the CUDA SpMM reads (csrc/cuda/kernels.h).");

  m.def("cuda_sp24_pack", [](py::array w, const std::string& src, const std::string& dtype) {
    zc::Source s;
    if (src == "float32") {
      if (!w.dtype().is(py::dtype::of<float>())) throw py::type_error("w must be float32 for src='float32'");
      s = zc::Source::kF32;
    } else if (src == "float16" || src == "bfloat16") {
      if (w.itemsize() != 2 || w.dtype().kind() == 'i' || w.dtype().kind() == 'b')
        throw py::type_error("w must hold 16-bit patterns (float16 or uint16) for src='" + src + "'");
      s = src == "float16" ? zc::Source::kF16 : zc::Source::kBF16;
    } else {
      throw py::value_error("src must be 'float32', 'float16' or 'bfloat16', got '" + src + "'");
    }
    if (w.ndim() != 2) throw py::value_error("w must be 2-D (M, K)");
    if (!(w.flags() & py::array::c_style)) throw py::value_error("w must be C-contiguous");
    const zc::Half h = half_type(dtype);
    const int64_t rows = w.shape(0), cols = w.shape(1);
    namespace sp = zc::sp24;
    const int64_t mt = sp::padded_rows(rows) / sp::kTileM, kt = sp::padded_cols(cols) / sp::kTileK;
    U16 values({mt, kt, int64_t{32}, int64_t{sp::kLaneValues}});
    U32 meta({mt, kt, int64_t{sp::kTileMeta}});
    zc::Sp24Violation bad;
    bool ok;
    {
      py::gil_scoped_release nogil;
      ok = zc::sp24_pack(w.data(), s, rows, cols, cols, h, values.mutable_data(), meta.mutable_data(), &bad);
    }
    if (!ok)
      throw zs::FormatError("weight is not 2:4 sparse: row " + std::to_string(bad.row) + ", columns " +
                            std::to_string(bad.col) + ".." + std::to_string(bad.col + 3) + " hold " +
                            std::to_string(bad.count) +
                            " nonzeros (at most 2 allowed); prune it with zeroskip.prune.nm_mask");
    return py::make_tuple(values, meta);
  }, py::arg("w"), py::arg("src"), py::arg("dtype"),
        "Pack a 2:4-sparse (M, K) matrix for the sparse tensor-core GEMM: (values uint16 (M/16, K/32, 32, 8), "
        "meta uint32 (M/16, K/32, 16)), M and K padded (see cuda_sp24_layout).");

  m.def("cuda_sp24_unpack", [](U16 values, U32 meta, int64_t rows, int64_t cols) {
    if (rows < 0 || cols < 0) throw py::value_error("negative shape");
    expect(values, zc::sp24_values_size(rows, cols), "values");
    expect(meta, zc::sp24_meta_size(rows, cols), "meta");
    U16 dense({rows, cols});
    try {
      zc::sp24_unpack(values.data(), meta.data(), rows, cols, dense.mutable_data());
    } catch (const std::invalid_argument& e) {
      throw zs::FormatError(e.what());
    }
    return dense;
  }, py::arg("values"), py::arg("meta"), py::arg("rows"), py::arg("cols"),
        "The dense (rows, cols) matrix (uint16 bit patterns) of a packed 2:4 matrix.");

  m.def("cuda_sp24_fragments", [](U16 values, U32 meta, int64_t rows, int64_t cols, int64_t mt, int64_t kt) {
    if (rows < 0 || cols < 0) throw py::value_error("negative shape");
    expect(values, zc::sp24_values_size(rows, cols), "values");
    expect(meta, zc::sp24_meta_size(rows, cols), "meta");
    U16 a({int64_t{32}, int64_t{8}});
    U32 e(32);
    try {
      zc::sp24_fragments(values.data(), meta.data(), rows, cols, mt, kt, a.mutable_data(), e.mutable_data());
    } catch (const std::invalid_argument& err) {
      throw py::value_error(err.what());
    }
    return py::make_tuple(a, e);
  }, py::arg("values"), py::arg("meta"), py::arg("rows"), py::arg("cols"), py::arg("mt"), py::arg("kt"),
        "The A registers (32 lanes x 8 halves) and metadata register (32 lanes) the GEMM kernel loads for "
        "tile (mt, kt): for checking the layout against the instruction's definition.");

  m.def("cuda_spmm_csr", [](uintptr_t values, uintptr_t indices, uintptr_t row_start, uintptr_t row_end,
                            uintptr_t row_order, int64_t rows, int64_t cols, int64_t n_long, uintptr_t x,
                            uintptr_t y, int64_t n, const std::string& dtype, int device, uintptr_t stream) {
    zc::CsrParams p;
    p.values = ptr<void>(values);
    p.indices = ptr<uint16_t>(indices);
    p.row_start = ptr<int32_t>(row_start);
    p.row_end = ptr<int32_t>(row_end);
    p.row_order = ptr<int32_t>(row_order);
    p.m = rows;
    p.k = cols;
    p.n = n;
    p.n_long = n_long;
    p.x = ptr<void>(x);
    p.y = reinterpret_cast<void*>(y);
    p.dtype = kernel_dtype(dtype);
    p.device = device;
    p.stream = stream;
    py::gil_scoped_release nogil;
    zc::spmm_csr(p);
  }, py::arg("values"), py::arg("indices"), py::arg("row_start"), py::arg("row_end"), py::arg("row_order"),
        py::arg("rows"), py::arg("cols"), py::arg("n_long"), py::arg("x"), py::arg("y"), py::arg("n"),
        py::arg("dtype"), py::arg("device"), py::arg("stream"),
        "Launch y[n, rows] = x[n, cols] @ W^T for a CSR W packed by zeroskip.cuda.pack_csr (device pointers, "
        "asynchronous on `stream`).");

  m.def("cuda_gemm_sp24", [](uintptr_t values, uintptr_t meta, int64_t rows, int64_t cols, uintptr_t x,
                             int64_t ldx, int64_t kx, uintptr_t y, int64_t n, const std::string& dtype, int tile,
                             int device, uintptr_t stream) {
    zc::Sp24Params p;
    p.values = ptr<uint16_t>(values);
    p.meta = ptr<uint32_t>(meta);
    p.m = rows;
    p.k = cols;
    p.n = n;
    p.x = ptr<void>(x);
    p.ldx = ldx;
    p.kx = kx;
    p.y = reinterpret_cast<void*>(y);
    p.dtype = kernel_dtype(dtype);
    p.tile = tile;
    p.device = device;
    p.stream = stream;
    py::gil_scoped_release nogil;
    zc::gemm_sp24(p);
  }, py::arg("values"), py::arg("meta"), py::arg("rows"), py::arg("cols"), py::arg("x"), py::arg("ldx"),
        py::arg("kx"), py::arg("y"), py::arg("n"), py::arg("dtype"), py::arg("tile"), py::arg("device"),
        py::arg("stream"),
        "Launch y[n, rows] = x[n, cols] @ W^T for a 2:4 W packed by cuda_sp24_pack (device pointers, "
        "asynchronous on `stream`; tile 0 auto, 1 small-N, 2 large).");
}
