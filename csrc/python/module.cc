// zeroskip._C: the pybind11 face of the C++ kernels. Arrays come in through
// the buffer protocol (numpy); every shape, dtype, layout and aliasing rule is
// checked here, before any kernel touches memory. No torch headers.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "../cpu/dense.h"
#include "../cpu/packed.h"
#include "../cpu/registry.h"
#include "../cpu/pool.h"
#include "../cpu/sparse_ops.h"
#include "../cpu/spmm.h"
#include "../cuda/device.h"

namespace py = pybind11;

// csrc/python/cuda_bindings.cc
void register_cuda_bindings(py::module_& m);

namespace {

using F32In = py::array_t<float, py::array::c_style | py::array::forcecast>;
using I64In = py::array_t<int64_t, py::array::c_style | py::array::forcecast>;
using U8In = py::array_t<uint8_t, py::array::c_style | py::array::forcecast>;

std::string shape_str(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
  return s + (a.ndim() == 1 ? ",)" : ")");
}

void expect_size(const py::array& a, int64_t size, const char* what) {
  if (a.size() != size)
    throw py::value_error(std::string(what) + " has " + std::to_string(a.size()) + " elements, expected " +
                          std::to_string(size));
}

// A float32, C-contiguous 2-D array of the given rows and cols (< 0: any).
const float* dense_arg(const py::array& a, const char* what, int64_t rows, int64_t cols, bool writeable) {
  if (!a.dtype().is(py::dtype::of<float>()))
    throw py::type_error(std::string(what) + " must be float32, got " + std::string(py::str(a.dtype())) +
                         "; convert with .astype(numpy.float32)");
  if (a.ndim() != 2) throw py::value_error(std::string(what) + " must be 2-D, got shape " + shape_str(a));
  if (!(a.flags() & py::array::c_style))
    throw py::value_error(std::string(what) + " must be C-contiguous; pass numpy.ascontiguousarray(" + what + ")");
  if ((rows >= 0 && a.shape(0) != rows) || (cols >= 0 && a.shape(1) != cols))
    throw py::value_error(std::string(what) + " has shape " + shape_str(a) + ", expected (" +
                          (rows >= 0 ? std::to_string(rows) : std::string("M")) + ", " +
                          (cols >= 0 ? std::to_string(cols) : std::string("N")) + ")");
  if (writeable && !a.writeable()) throw py::value_error(std::string(what) + " is read-only");
  return static_cast<const float*>(a.data());
}

bool overlaps(const py::array& a, const py::array& b) {
  const char* a0 = static_cast<const char*>(a.data());
  const char* b0 = static_cast<const char*>(b.data());
  return a.nbytes() > 0 && b.nbytes() > 0 && a0 < b0 + b.nbytes() && b0 < a0 + a.nbytes();
}

// A kernel was asked for that does not exist, fit the weight, or run here.
struct KernelChoiceError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

const zs::KernelInfo& pick(zs::Format f, const std::optional<std::string>& name, int nm_n, int nm_m) {
  if (!name) return *zs::default_kernel(f, nm_n, nm_m);
  const zs::KernelInfo* k = zs::find_kernel(name->c_str());
  if (!k) throw KernelChoiceError("unknown kernel '" + *name + "'; see zeroskip.kernels.available()");
  if (k->format != f)
    throw KernelChoiceError("kernel '" + *name + "' is for " + zs::format_name(k->format) + " weights, not " +
                          zs::format_name(f));
  if (!zs::isa_supported(k->isa))
    throw KernelChoiceError("kernel '" + *name + "' needs " + zs::isa_name(k->isa) + ", which this CPU lacks");
  if (f == zs::Format::kNm && !zs::kernel_supports_nm(*k, nm_n, nm_m))
    throw KernelChoiceError("kernel '" + *name + "' takes " + std::to_string(k->nm_n) + ":" + std::to_string(k->nm_m) +
                          " weights, not " + std::to_string(nm_n) + ":" + std::to_string(nm_m));
  return *k;
}

// The epilogue: bias (float32, contiguous, `rows` long, not overlapping out) and clamp range.
zs::SpmmParams epilogue(const std::optional<py::array>& bias, int64_t rows, const py::array& out, float lo,
                        float hi) {
  zs::SpmmParams p;
  if (bias) {
    if (!bias->dtype().is(py::dtype::of<float>()) || bias->ndim() != 1 || bias->shape(0) != rows ||
        !(bias->flags() & py::array::c_style))
      throw py::value_error("bias must be a contiguous float32 vector of length " + std::to_string(rows) +
                            ", got " + std::string(py::str(bias->dtype())) + " " + shape_str(*bias));
    if (overlaps(*bias, out)) throw py::value_error("out must not share memory with bias");
    p.bias = static_cast<const float*>(bias->data());
  }
  if (!(lo <= hi)) throw py::value_error("clamp range is empty: min > max");
  p.min = lo;
  p.max = hi;
  return p;
}

template <class View>
void run_spmm(const View& a, const zs::KernelInfo& k, const py::array& x, const py::array& y,
              const std::optional<py::array>& bias, float lo, float hi) {
  const float* xp = dense_arg(x, "x", a.k, -1, false);
  const int64_t n = x.shape(1);
  float* yp = const_cast<float*>(dense_arg(y, "out", a.m, n, true));
  if (overlaps(x, y)) throw py::value_error("out must not share memory with x");
  const zs::SpmmParams p = epilogue(bias, a.m, y, lo, hi);
  if (a.m == 0 || n == 0) return;
  py::gil_scoped_release nogil;
  zs::spmm(k, a, xp, yp, n, p);
}

// Linear: x (M, K), out (M, N) for a weight of N x K.
template <class View>
void run_linear(const View& a, const zs::KernelInfo& k, const py::array& x, const py::array& y,
                const std::optional<py::array>& bias, float lo, float hi, bool x_t, bool y_t,
                const std::string& gelu) {
  int g = 0;
  if (gelu == "none") g = 1;
  else if (gelu == "tanh") g = 2;
  else if (!gelu.empty()) throw py::value_error("gelu must be '', 'none' (erf form) or 'tanh', got '" + gelu + "'");
  // x is (M, K), or (K, M) when x_t; out (M, N), or (N, M) when y_t.
  const float* xp = x_t ? dense_arg(x, "x", a.k, -1, false) : dense_arg(x, "x", -1, a.k, false);
  const int64_t m = x.shape(x_t ? 1 : 0);
  float* yp = const_cast<float*>(y_t ? dense_arg(y, "out", a.m, m, true) : dense_arg(y, "out", m, a.m, true));
  if (overlaps(x, y)) throw py::value_error("out must not share memory with x");
  const zs::SpmmParams p = epilogue(bias, a.m, y, lo, hi);
  if (a.m == 0 || m == 0) return;
  py::gil_scoped_release nogil;
  zs::spmm_linear(k, a, xp, yp, m, p, zs::LinearOptions{x_t, y_t, g});
}

py::dict kernel_dict(const zs::KernelInfo& k) {
  py::dict d;
  d["name"] = k.name;
  d["format"] = zs::format_name(k.format);
  d["dtype"] = "float32";
  d["isa"] = zs::isa_name(k.isa);
  d["tile"] = py::make_tuple(k.tile_n, k.tile_m);
  d["nm"] = k.nm_n ? py::object(py::make_tuple(k.nm_n, k.nm_m)) : py::object(py::none());
  d["runnable"] = zs::isa_supported(k.isa);
  return d;
}


// ---- dense kernels (gelu, softmax, gemv): cheap checks, no copies ----

bool is_f32(const py::array& a) {
  return py::detail::array_descriptor_proxy(py::detail::array_proxy(a.ptr())->descr)->type_num ==
         py::detail::npy_api::NPY_FLOAT_;
}

// A float32, C-contiguous array (any shape); `what` names it in errors.
const float* f32_arg(const py::array& a, const char* what, bool writeable) {
  if (!is_f32(a))
    throw py::type_error(std::string(what) + " must be float32, got " + std::string(py::str(a.dtype())) +
                         "; convert with .astype(numpy.float32)");
  if (!(a.flags() & py::array::c_style))
    throw py::value_error(std::string(what) + " must be C-contiguous; pass numpy.ascontiguousarray(" + what + ")");
  if (writeable && !a.writeable()) throw py::value_error(std::string(what) + " is read-only");
  return static_cast<const float*>(a.data());
}

// A 4-D float32 array with any element-aligned strides; its strides in floats go to st.
const float* strided_f32(const py::array& a, const char* what, ptrdiff_t* st, bool writeable) {
  if (!is_f32(a))
    throw py::type_error(std::string(what) + " must be float32, got " + std::string(py::str(a.dtype())) +
                         "; convert with .astype(numpy.float32)");
  if (a.ndim() != 4) throw py::value_error(std::string(what) + " must be 4-D, got shape " + shape_str(a));
  if (writeable && !a.writeable()) throw py::value_error(std::string(what) + " is read-only");
  for (py::ssize_t i = 0; i < 4; ++i) {
    if (a.strides(i) % py::ssize_t(sizeof(float)) != 0)
      throw py::value_error(std::string(what) + " has strides that are not whole floats");
    st[i] = static_cast<ptrdiff_t>(a.strides(i) / py::ssize_t(sizeof(float)));
  }
  return static_cast<const float*>(a.data());
}

// The bytes [lo, hi) a strided array touches.
std::pair<const char*, const char*> span_of(const py::array& a) {
  const char* lo = static_cast<const char*>(a.data());
  const char* hi = lo + a.itemsize();
  if (a.size() == 0) return {lo, lo};
  for (py::ssize_t i = 0; i < a.ndim(); ++i) {
    const py::ssize_t reach = (a.shape(i) - 1) * a.strides(i);
    if (reach < 0) lo += reach; else hi += reach;
  }
  return {lo, hi};
}

bool spans_overlap(const py::array& a, const py::array& b) {
  const auto sa = span_of(a), sb = span_of(b);
  return sa.first < sa.second && sb.first < sb.second && sa.first < sb.second && sb.first < sa.second;
}

bool same_shape(const py::array& a, const py::array& b) {
  if (a.ndim() != b.ndim()) return false;
  for (py::ssize_t i = 0; i < a.ndim(); ++i)
    if (a.shape(i) != b.shape(i)) return false;
  return true;
}

// Elementwise/row-wise ops may run in place (out is exactly x); any other overlap is refused.
void check_inplace_ok(const py::array& x, const py::array& out) {
  if (overlaps(x, out) && x.data() != out.data())
    throw py::value_error("out overlaps x without being x; pass a separate array or x itself");
}

// x and out of a row-wise op (over the last dim): float32, C-contiguous, at
// least 1-D, the same shape, out writeable and either x itself or apart.
std::pair<const float*, float*> rowwise_args(const py::array& x, const py::array& out) {
  const float* xp = f32_arg(x, "x", false);
  float* yp = const_cast<float*>(f32_arg(out, "out", true));
  if (x.ndim() < 1) throw py::value_error("x must have at least one dimension");
  if (!same_shape(x, out)) throw py::value_error("out has shape " + shape_str(out) + ", x " + shape_str(x));
  check_inplace_ok(x, out);
  return {xp, yp};
}

// A float32, C-contiguous 1-D array of n values (a bias, a scale) that out does not overlap.
const float* vector_arg(const py::array& a, const char* what, int64_t n, const py::array& out) {
  const float* p = f32_arg(a, what, false);
  if (a.ndim() != 1 || a.shape(0) != n)
    throw py::value_error(std::string(what) + " has shape " + shape_str(a) + ", expected (" + std::to_string(n) + ",)");
  if (overlaps(a, out)) throw py::value_error(std::string("out must not share memory with ") + what);
  return p;
}

const zs::DenseOps& dense_pick(const std::optional<std::string>& isa) {
  if (!isa) return zs::default_dense_ops();
  size_t count = 0;
  const zs::DenseOps* const* t = zs::dense_table(&count);
  for (size_t i = 0; i < count; ++i) {
    if (*isa != zs::isa_name(t[i]->isa)) continue;
    if (!zs::isa_supported(t[i]->isa)) throw KernelChoiceError("isa '" + *isa + "' is not available on this CPU");
    return *t[i];
  }
  throw KernelChoiceError("isa '" + *isa + "' is not compiled into this build; see zeroskip._C.dense_isas()");
}

std::string dims_str(std::initializer_list<int64_t> d) {
  std::string s = "(";
  size_t i = 0;
  for (int64_t v : d) s += (i++ ? ", " : "") + std::to_string(v);
  return s + ")";
}

// Strides and dilations >= 1, pads >= 0 (and the window >= 1 when `kernel` is checked here).
void check_window(int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t pt, int64_t pl, int64_t pb, int64_t pr,
                  int64_t dh, int64_t dw, const char* kernel_name) {
  if (kernel_name && (kh < 1 || kw < 1))
    throw py::value_error(std::string(kernel_name) + " must be >= 1, got " + dims_str({kh, kw}));
  if (sh < 1 || sw < 1) throw py::value_error("strides must be >= 1, got " + dims_str({sh, sw}));
  if (dh < 1 || dw < 1) throw py::value_error("dilations must be >= 1, got " + dims_str({dh, dw}));
  if (pt < 0 || pl < 0 || pb < 0 || pr < 0)
    throw py::value_error("pads must be >= 0, got " + dims_str({pt, pl, pb, pr}));
  // Below 2**31 each, sums and products of two of them (output sizes, dilated windows) fit int64.
  constexpr int64_t kLimit = int64_t(1) << 31;
  for (int64_t v : {kh, kw, sh, sw, pt, pl, pb, pr, dh, dw})
    if (v >= kLimit)
      throw py::value_error("window values must be < 2**31, got kernel " + dims_str({kh, kw}) + ", strides " +
                            dims_str({sh, sw}) + ", pads " + dims_str({pt, pl, pb, pr}) + ", dilations " +
                            dims_str({dh, dw}));
}

// ---- sparse Conv2d ----

// `v` must hold `count` values (`what` names them in errors).
void expect_len(const std::vector<int64_t>& v, size_t count, const char* what, const char* names) {
  if (v.size() != count)
    throw py::value_error(std::string(what) + " must have " + std::to_string(count) + " values " + names +
                          ", got " + std::to_string(v.size()));
}

// Conv2d, NCHW, groups 1: x (B, C, H, W), out (B, Cout, OH, OW) for a weight of m = Cout rows x kcols =
// C KH KW columns; checks them and the window, and returns the convolution's shape.
zs::Conv2dShape conv_args(int64_t m, int64_t kcols, const py::array& x, const py::array& y,
                          const std::vector<int64_t>& kernel_shape, const std::vector<int64_t>& strides,
                          const std::vector<int64_t>& pads, const std::vector<int64_t>& dilations) {
  f32_arg(x, "x", false);
  f32_arg(y, "out", true);
  if (x.ndim() != 4) throw py::value_error("x must be 4-D (B, C, H, W), got shape " + shape_str(x));
  expect_len(kernel_shape, 2, "kernel_shape", "(KH, KW)");
  expect_len(strides, 2, "strides", "(sh, sw)");
  expect_len(pads, 4, "pads", "(top, left, bottom, right)");
  expect_len(dilations, 2, "dilations", "(dh, dw)");
  zs::Conv2dShape s;
  s.b = x.shape(0), s.c = x.shape(1), s.h = x.shape(2), s.w = x.shape(3);
  s.kh = kernel_shape[0], s.kw = kernel_shape[1];
  s.sh = strides[0], s.sw = strides[1];
  s.pad_t = pads[0], s.pad_l = pads[1], s.pad_b = pads[2], s.pad_r = pads[3];
  s.dh = dilations[0], s.dw = dilations[1];
  check_window(s.kh, s.kw, s.sh, s.sw, s.pad_t, s.pad_l, s.pad_b, s.pad_r, s.dh, s.dw, "kernel_shape");
  const __int128 cols = static_cast<__int128>(s.c) * s.kh * s.kw;  // 128-bit: no wrap to a matching value
  if (cols != kcols)
    throw py::value_error(
        "weight has " + std::to_string(kcols) + " columns, expected C*KH*KW = " + std::to_string(s.c) + "*" +
        std::to_string(s.kh) + "*" + std::to_string(s.kw) + " = " +
        (cols <= INT64_MAX ? std::to_string(static_cast<int64_t>(cols)) : std::string("more than 2**63")) +
        " for x of shape " + shape_str(x));
  s.oh = zs::conv_out_size(s.h, s.kh, s.sh, s.pad_t, s.pad_b, s.dh);
  s.ow = zs::conv_out_size(s.w, s.kw, s.sw, s.pad_l, s.pad_r, s.dw);
  if (s.oh < 1 || s.ow < 1)
    throw py::value_error("kernel_shape " + dims_str({s.kh, s.kw}) + " with dilations " + dims_str({s.dh, s.dw}) +
                          " does not fit the padded input " +
                          dims_str({s.h + s.pad_t + s.pad_b, s.w + s.pad_l + s.pad_r}) + "; the output would be empty");
  if (y.ndim() != 4 || y.shape(0) != s.b || y.shape(1) != m || y.shape(2) != s.oh || y.shape(3) != s.ow)
    throw py::value_error("out has shape " + shape_str(y) + ", expected " + dims_str({s.b, m, s.oh, s.ow}));
  if (overlaps(x, y)) throw py::value_error("out must not share memory with x");
  return s;
}

template <class View>
void run_conv(const View& a, const zs::KernelInfo& k, const py::array& x, const py::array& y,
              const std::optional<py::array>& bias, float lo, float hi, const std::vector<int64_t>& kernel_shape,
              const std::vector<int64_t>& strides, const std::vector<int64_t>& pads,
              const std::vector<int64_t>& dilations) {
  const zs::Conv2dShape s = conv_args(a.m, a.k, x, y, kernel_shape, strides, pads, dilations);
  const zs::SpmmParams p = epilogue(bias, a.m, y, lo, hi);
  if (y.size() == 0) return;
  const float* xp = static_cast<const float*>(x.data());
  float* yp = static_cast<float*>(const_cast<void*>(y.data()));
  py::gil_scoped_release nogil;
  zs::spmm_conv2d(k, a, xp, yp, s, p);
}

// A packed dense weight P from w (rows, k) float32 and bias (rows,) or None; `dims` names w's shape.
template <class P>
P* new_packed(const py::array& w, const std::optional<py::array>& bias, const std::optional<std::string>& isa,
              const char* dims) {
  const zs::DenseOps& ops = dense_pick(isa);
  const float* wp = f32_arg(w, "w", false);
  if (w.ndim() != 2) throw py::value_error(std::string("w must be 2-D ") + dims + ", got shape " + shape_str(w));
  const float* bp = nullptr;
  if (bias) {
    bp = f32_arg(*bias, "bias", false);
    if (bias->ndim() != 1 || bias->shape(0) != w.shape(0))
      throw py::value_error("bias has shape " + shape_str(*bias) + ", expected (" + std::to_string(w.shape(0)) +
                            ",)");
  }
  return new P(ops, wp, bp, size_t(w.shape(0)), size_t(w.shape(1)));
}

// Above this much work the GIL is released (below it, releasing costs more than the call).
constexpr int64_t kReleaseGil = 1 << 14;

}  // namespace

// The kernel for a packed weight: `name` if given (checked against the weight), else the default.
const zs::KernelInfo& pick_for(const zs::PackedCsr&, const std::optional<std::string>& name) {
  return pick(zs::Format::kCsr, name, 0, 0);
}
const zs::KernelInfo& pick_for(const zs::PackedBsr&, const std::optional<std::string>& name) {
  return pick(zs::Format::kBsr, name, 0, 0);
}
const zs::KernelInfo& pick_for(const zs::PackedNm& a, const std::optional<std::string>& name) {
  return pick(zs::Format::kNm, name, a.view().n, a.view().group);
}

// spmm, spmm_linear and spmm_conv for one packed weight type (overloads of one Python name each).
template <class Packed>
void def_sparse_ops(py::module_& m) {
  using Opt = std::optional<py::array>;
  using Name = std::optional<std::string>;
  using Dims = std::vector<int64_t>;
  m.def("spmm", [](const Packed& a, py::array x, py::array out, Opt bias, float lo, float hi, Name kernel) {
    run_spmm(a.view(), pick_for(a, kernel), x, out, bias, lo, hi);
  }, py::arg("a"), py::arg("x"), py::arg("out"), py::arg("bias"), py::arg("min"), py::arg("max"),
        py::arg("kernel"), "out = clamp(a @ x + bias) with a registered kernel (default: fastest ISA here).");
  m.def("spmm_linear", [](const Packed& a, py::array x, py::array out, Opt bias, float lo, float hi, Name kernel,
                          bool x_t, bool y_t, const std::string& gelu) {
    run_linear(a.view(), pick_for(a, kernel), x, out, bias, lo, hi, x_t, y_t, gelu);
  }, py::arg("a"), py::arg("x"), py::arg("out"), py::arg("bias"), py::arg("min"), py::arg("max"),
        py::arg("kernel"), py::arg("x_transposed") = false, py::arg("out_transposed") = false,
        py::arg("gelu") = "",
        "Linear with a sparse N x K weight: out (M, N) = clamp(x (M, K) @ a.T + bias), bias per output column; "
        "x given as (K, M) when x_transposed, out written as (N, M) when out_transposed (chains of Linears); "
        "gelu 'none' (erf form) or 'tanh' applies GELU after the clamp.");
  m.def("spmm_conv", [](const Packed& a, py::array x, py::array out, Opt bias, float lo, float hi, Name kernel,
                        Dims kernel_shape, Dims strides, Dims pads, Dims dilations) {
    run_conv(a.view(), pick_for(a, kernel), x, out, bias, lo, hi, kernel_shape, strides, pads, dilations);
  }, py::arg("a"), py::arg("x"), py::arg("out"), py::arg("bias"), py::arg("min"), py::arg("max"),
        py::arg("kernel"), py::arg("kernel_shape"), py::arg("strides"), py::arg("pads"), py::arg("dilations"),
        "Conv2d (NCHW, groups 1) with a sparse Cout x (C*KH*KW) weight: out (B, Cout, OH, OW) = "
        "clamp(conv(x (B, C, H, W)) + bias); kernel_shape (KH, KW), strides (sh, sw), zero pads "
        "(top, left, bottom, right), dilations (dh, dw).");
}

using Dims = std::vector<int64_t>;
using Pair = std::pair<int64_t, int64_t>;
using Quad = std::tuple<int64_t, int64_t, int64_t, int64_t>;
using Call = std::function<void()>;

// A kernel call on checked operands (empty when there is nothing to compute), and whether it is
// large enough to run with the GIL released.
struct Prepared {
  Call fn;
  bool release_gil;
};

void run_prepared(const Prepared& p) {
  if (!p.fn) return;
  if (!p.release_gil) return p.fn();
  py::gil_scoped_release nogil;
  p.fn();
}

// A Prepared call with the Python objects whose memory it reads and writes, kept alive with it.
struct BoundCall {
  Prepared p;
  std::vector<py::object> keep;
};

std::shared_ptr<BoundCall> bound(Prepared p, std::vector<py::object> keep) {
  return std::make_shared<BoundCall>(BoundCall{std::move(p), std::move(keep)});
}

struct Chain {
  std::vector<std::shared_ptr<BoundCall>> calls;
};

// A dense conv's residual (null when none): float32, out's shape, apart from out.
const float* conv_residual(const std::optional<py::array>& residual, const py::array& out) {
  if (!residual) return nullptr;
  f32_arg(*residual, "residual", false);
  bool same = residual->ndim() == 4;
  for (int i = 0; same && i < 4; ++i) same = residual->shape(i) == out.shape(i);
  if (!same)
    throw py::value_error("residual must have the output's shape " + shape_str(out) + ", got " +
                          shape_str(*residual));
  if (overlaps(*residual, out))
    throw py::value_error("residual must not overlap out (the GEMM keeps partial sums in out)");
  return static_cast<const float*>(residual->data());
}

// Checks a dense conv's operands and returns the call (see conv2d_dense). The weight is a
// DenseConvWeight (any conv) or a DenseWeight (1x1, stride 1, no padding: conv1x1_nchw_f32).
Prepared prep_conv2d_dense(const py::object& w, const py::array& x, const py::array& out, float lo, float hi,
                           const Dims& kernel_shape, const Dims& strides, const Dims& pads,
                           const Dims& dilations, const std::optional<py::array>& residual) {
  const zs::PackedGemmLeft* wl =
      py::isinstance<zs::PackedGemmLeft>(w) ? &w.cast<const zs::PackedGemmLeft&>() : nullptr;
  const zs::PackedGemm* wg = py::isinstance<zs::PackedGemm>(w) ? &w.cast<const zs::PackedGemm&>() : nullptr;
  if (!wl && !wg)
    throw py::type_error("w must be a DenseConvWeight or a DenseWeight, got " +
                         std::string(py::str(py::type::of(w).attr("__name__"))));
  const int64_t m = int64_t(wl ? wl->m() : wg->n()), k = int64_t(wl ? wl->k() : wg->k());
  const zs::Conv2dShape s = conv_args(m, k, x, out, kernel_shape, strides, pads, dilations);
  if (!(lo <= hi)) throw py::value_error("clamp range is empty: min > max");
  const float* rp = conv_residual(residual, out);
  const float* xp = static_cast<const float*>(x.data());
  float* yp = static_cast<float*>(const_cast<void*>(out.data()));
  const bool release = out.size() * (s.c * s.kh * s.kw + 1) >= kReleaseGil * 8;
  if (wg && (s.kh != 1 || s.kw != 1 || s.sh != 1 || s.sw != 1 || s.pad_t || s.pad_l || s.pad_b || s.pad_r))
    throw py::value_error("a DenseWeight runs 1x1 convs of stride 1 without padding, got kernel_shape " +
                          dims_str({s.kh, s.kw}) + ", strides " + dims_str({s.sh, s.sw}) + ", pads " +
                          dims_str({s.pad_t, s.pad_l, s.pad_b, s.pad_r}) +
                          "; pack the weight as a DenseConvWeight");
  if (out.size() == 0) return {Call(), false};
  if (wl) return {Call([=] { zs::conv2d_dense_f32(*wl, xp, yp, s, lo, hi, rp); }), release};
  const size_t b = size_t(s.b), hw = size_t(s.h * s.w);
  return {Call([=] { zs::conv1x1_nchw_f32(*wg, xp, yp, b, hw, lo, hi, rp); }), release};
}

// Checks pooling's operands and returns the call (see pool2d).
Prepared prep_pool2d(const py::array& x, const py::array& out, const std::string& kind, Pair kernel,
                     Pair strides, Quad pads, Pair dilations) {
  zs::PoolKind k;
  if (kind == "max") {
    k = zs::PoolKind::kMax;
  } else if (kind == "avg") {
    k = zs::PoolKind::kAvg;
  } else if (kind == "avg_include_pad") {
    k = zs::PoolKind::kAvgIncludePad;
  } else {
    throw py::value_error("kind must be 'max', 'avg' or 'avg_include_pad', got '" + kind + "'");
  }
  const float* xp = f32_arg(x, "x", false);
  float* yp = const_cast<float*>(f32_arg(out, "out", true));
  if (x.ndim() != 4) throw py::value_error("x must be 4-D (N, C, H, W), got shape " + shape_str(x));
  const auto [kh, kw] = kernel;
  const auto [sh, sw] = strides;
  const auto [pt, pl, pb, pr] = pads;
  const auto [dh, dw] = dilations;
  check_window(kh, kw, sh, sw, pt, pl, pb, pr, dh, dw, "kernel");
  const int64_t n = x.shape(0), c = x.shape(1), h = x.shape(2), w = x.shape(3);
  // Windows may not start in the end padding (ONNX requires pad < kernel); an output needs a tap.
  if (pt >= dh * (kh - 1) + 1 || pb >= dh * (kh - 1) + 1 || pl >= dw * (kw - 1) + 1 ||
      pr >= dw * (kw - 1) + 1)
    throw py::value_error("pads must be smaller than the (dilated) kernel, got " +
                          dims_str({pt, pl, pb, pr}));
  const int64_t oh = zs::conv_out_size(h, kh, sh, pt, pb, dh), ow = zs::conv_out_size(w, kw, sw, pl, pr, dw);
  if (oh < 1 || ow < 1) throw py::value_error("the pooling window does not fit the input " + shape_str(x));
  if (out.ndim() != 4 || out.shape(0) != n || out.shape(1) != c || out.shape(2) != oh || out.shape(3) != ow)
    throw py::value_error("out has shape " + shape_str(out) + ", expected " + dims_str({n, c, oh, ow}));
  if (overlaps(x, out)) throw py::value_error("out must not share memory with x");
  const zs::Pool2dShape s{n * c, h, w, kh, kw, sh, sw, pt, pl, pb, pr, dh, dw, oh, ow};
  return {out.size() == 0 ? Call() : Call([=] { zs::pool2d_f32(xp, yp, s, k); }), true};
}

// Checks a depthwise conv's operands and returns the call (see dwconv).
Prepared prep_dwconv(const py::array& x, const py::array& w, const std::optional<py::array>& bias,
                     const py::array& out, Pair strides, Quad pads, Pair dilations, float lo, float hi,
                     const std::optional<std::string>& isa) {
  const zs::DenseOps& ops = dense_pick(isa);
  const float* xp = f32_arg(x, "x", false);
  const float* wp = f32_arg(w, "w", false);
  float* yp = const_cast<float*>(f32_arg(out, "out", true));
  if (x.ndim() != 4) throw py::value_error("x must be 4-D (N, C, H, W), got shape " + shape_str(x));
  const int64_t n = x.shape(0), c = x.shape(1), h = x.shape(2), wd = x.shape(3);
  if (w.ndim() != 4 || w.shape(0) != c || w.shape(1) != 1 || w.shape(2) < 1 || w.shape(3) < 1)
    throw py::value_error("w has shape " + shape_str(w) + ", expected (" + std::to_string(c) +
                          ", 1, KH, KW) with KH, KW >= 1");
  const int64_t kh = w.shape(2), kw = w.shape(3);
  const auto [sh, sw] = strides;
  const auto [pt, pl, pb, pr] = pads;
  const auto [dh, dw] = dilations;
  check_window(kh, kw, sh, sw, pt, pl, pb, pr, dh, dw, nullptr);  // w's shape was checked above
  const int64_t oh = static_cast<int64_t>(
      zs::dwconv_out_size(size_t(h), size_t(kh), size_t(sh), size_t(pt), size_t(pb), size_t(dh)));
  const int64_t ow = static_cast<int64_t>(
      zs::dwconv_out_size(size_t(wd), size_t(kw), size_t(sw), size_t(pl), size_t(pr), size_t(dw)));
  if (out.ndim() != 4 || out.shape(0) != n || out.shape(1) != c || out.shape(2) != oh || out.shape(3) != ow)
    throw py::value_error("out has shape " + shape_str(out) + ", expected " + dims_str({n, c, oh, ow}));
  const float* bp = nullptr;
  if (bias) {
    bp = f32_arg(*bias, "bias", false);
    if (bias->ndim() != 1 || bias->shape(0) != c)
      throw py::value_error("bias has shape " + shape_str(*bias) + ", expected (" + std::to_string(c) + ",)");
    if (overlaps(*bias, out)) throw py::value_error("out must not share memory with bias");
  }
  if (overlaps(x, out)) throw py::value_error("out must not share memory with x");
  if (overlaps(w, out)) throw py::value_error("out must not share memory with w");
  if (!(lo <= hi)) throw py::value_error("clamp range is empty: min > max");
  const zs::DwConvShape s{size_t(n),  size_t(c),  size_t(h),  size_t(wd), size_t(kh), size_t(kw),
                          size_t(sh), size_t(sw), size_t(pt), size_t(pl), size_t(pb), size_t(pr),
                          size_t(dh), size_t(dw), size_t(oh), size_t(ow)};
  const zs::DenseOps* opp = &ops;
  return {out.size() == 0 ? Call() : Call([=] { zs::dwconv2d_f32(*opp, xp, wp, bp, yp, s, lo, hi); }),
          out.size() * kh * kw >= kReleaseGil * 8};
}

PYBIND11_MODULE(_C, m) {
  m.doc() = "zeroskip C++ kernels (no torch, no CUDA calls at import)";
  py::register_exception<zs::FormatError>(m, "FormatError", PyExc_ValueError);
  py::register_exception<KernelChoiceError>(m, "KernelError", PyExc_ValueError);

  m.def("kernels", [] {
    size_t count = 0;
    const zs::KernelInfo* t = zs::kernel_table(&count);
    py::list out;
    for (size_t i = 0; i < count; ++i) out.append(kernel_dict(t[i]));
    return out;
  }, "Every registered kernel, with whether this CPU can run it.");
  m.def("default_kernel", [](const std::string& fmt, int n, int mm) {
    zs::Format f = fmt == "csr" ? zs::Format::kCsr : fmt == "bsr" ? zs::Format::kBsr : zs::Format::kNm;
    return std::string(zs::default_kernel(f, n, mm)->name);
  }, py::arg("format"), py::arg("n") = 0, py::arg("m") = 0);
  m.def("num_threads", &zs::num_threads);
  m.def("set_num_threads", &zs::set_num_threads, py::arg("n"));
  m.def("balanced_split", [](I64In ptr, int64_t unit, int parts) {
    py::list out;
    const int64_t rows = ptr.size() - 1;
    for (int t = 0; t <= parts; ++t) out.append(zs::balanced_split(ptr.data(), rows, unit, parts, t));
    return out;
  }, "Row boundaries the driver gives each of `parts` threads (for tests).");
  m.def("cuda_device_count", &zs::cuda::device_count);
  m.def("cuda_compiled", &zs::cuda::compiled_with_cuda);
  register_cuda_bindings(m);

  py::class_<zs::PackedCsr>(m, "PackedCsr")
      .def(py::init([](int64_t rows, int64_t cols, F32In values, I64In indices, I64In indptr) {
             if (rows < 0 || cols < 0) throw py::value_error("negative shape");
             expect_size(indptr, rows + 1, "indptr");
             expect_size(indices, values.size(), "indices");
             return new zs::PackedCsr(rows, cols, values.size(), values.data(), indices.data(), indptr.data());
           }),
           py::arg("rows"), py::arg("cols"), py::arg("values"), py::arg("indices"), py::arg("indptr"))
      .def_property_readonly("shape", [](const zs::PackedCsr& p) { return py::make_tuple(p.view().m, p.view().k); })
      .def_property_readonly("stored", [](const zs::PackedCsr& p) { return p.view().nnz; },
                             "Stored entries, including the zeros that bridge column gaps over 255.")
      .def_property_readonly("nbytes", &zs::PackedCsr::nbytes);

  py::class_<zs::PackedBsr>(m, "PackedBsr")
      .def(py::init([](int64_t rows, int64_t cols, int32_t br, int32_t bc, F32In values, I64In indices,
                       I64In indptr) {
             if (rows < 0 || cols < 0 || br < 1 || bc < 1) throw py::value_error("bad shape or block");
             expect_size(indptr, (rows + br - 1) / br + 1, "indptr");
             expect_size(values, indices.size() * br * bc, "values");
             return new zs::PackedBsr(rows, cols, br, bc, indices.size(), values.data(), indices.data(),
                                      indptr.data());
           }),
           py::arg("rows"), py::arg("cols"), py::arg("br"), py::arg("bc"), py::arg("values"), py::arg("indices"),
           py::arg("indptr"))
      .def_property_readonly("shape", [](const zs::PackedBsr& p) { return py::make_tuple(p.view().m, p.view().k); })
      .def_property_readonly("index_bits", [](const zs::PackedBsr& p) {
        return p.view().bcol_type == zs::IndexType::kU16 ? 16 : 32;
      })
      .def_property_readonly("nbytes", &zs::PackedBsr::nbytes);

  py::class_<zs::PackedNm>(m, "PackedNm")
      .def(py::init([](int64_t rows, int64_t cols, int32_t n, int32_t group, int32_t bits, F32In values,
                       U8In meta) {
             if (rows < 0 || cols < 0 || group < 1) throw py::value_error("bad shape or group");
             if (cols % group != 0) throw py::value_error("K is not a multiple of the group size");
             expect_size(values, rows * (cols / group * n), "values");
             if (meta.ndim() != 2 || meta.shape(0) != rows) throw py::value_error("meta must have one row per row");
             return new zs::PackedNm(rows, cols, n, group, bits, values.data(), meta.data(), meta.shape(1));
           }),
           py::arg("rows"), py::arg("cols"), py::arg("n"), py::arg("m"), py::arg("bits"), py::arg("values"),
           py::arg("meta"))
      .def_property_readonly("shape", [](const zs::PackedNm& p) { return py::make_tuple(p.view().m, p.view().k); })
      .def_property_readonly("nbytes", &zs::PackedNm::nbytes);

  def_sparse_ops<zs::PackedCsr>(m);
  def_sparse_ops<zs::PackedBsr>(m);
  def_sparse_ops<zs::PackedNm>(m);
  m.def("dense_isas", [] {
    size_t count = 0;
    const zs::DenseOps* const* t = zs::dense_table(&count);
    py::list out;
    for (size_t i = 0; i < count; ++i) {
      py::dict d;
      d["isa"] = zs::isa_name(t[i]->isa);
      d["runnable"] = zs::isa_supported(t[i]->isa);
      d["default"] = t[i] == &zs::default_dense_ops();
      out.append(d);
    }
    return out;
  }, "ISAs the dense kernels (gelu, softmax, gemv, dwconv) are compiled for, and which one is used by default.");
  m.def("gelu", [](const py::array& x, const py::array& out, const std::string& approximate,
                   const std::optional<std::string>& isa) {
    const zs::DenseOps& ops = dense_pick(isa);
    bool tanh_form;
    if (approximate == "none") {
      tanh_form = false;
    } else if (approximate == "tanh") {
      tanh_form = true;
    } else {
      throw py::value_error("approximate must be 'none' or 'tanh', got '" + approximate + "'");
    }
    const float* xp = f32_arg(x, "x", false);
    float* yp = const_cast<float*>(f32_arg(out, "out", true));
    if (!same_shape(x, out)) throw py::value_error("out has shape " + shape_str(out) + ", x " + shape_str(x));
    check_inplace_ok(x, out);
    const size_t n = static_cast<size_t>(x.size());
    if (n == 0) return;
    if (n < kReleaseGil) return zs::gelu_f32(ops, xp, yp, n, tanh_form);
    py::gil_scoped_release nogil;
    zs::gelu_f32(ops, xp, yp, n, tanh_form);
  }, py::arg("x"), py::arg("out"), py::arg("approximate") = "none", py::arg("isa") = py::none(),
        "out = gelu(x) elementwise (approximate: 'none' = erf form, 'tanh'); out may be x.");
  m.def("softmax", [](const py::array& x, const py::array& out, const std::optional<std::string>& isa) {
    const zs::DenseOps& ops = dense_pick(isa);
    const auto [xp, yp] = rowwise_args(x, out);
    const size_t cols = static_cast<size_t>(x.shape(x.ndim() - 1));
    const size_t n = static_cast<size_t>(x.size());
    if (n == 0) return;
    if (n < kReleaseGil) return zs::softmax_f32(ops, xp, yp, n / cols, cols);
    py::gil_scoped_release nogil;
    zs::softmax_f32(ops, xp, yp, n / cols, cols);
  }, py::arg("x"), py::arg("out"), py::arg("isa") = py::none(),
        "out = softmax(x) along the last dim; out may be x.");
  m.def("layernorm", [](const py::array& x, const std::optional<py::array>& r, const py::array& scale,
                        const std::optional<py::array>& bias, const py::array& out, float eps,
                        const std::optional<std::string>& isa) {
    const zs::DenseOps& ops = dense_pick(isa);
    const auto [xp, yp] = rowwise_args(x, out);
    const float* rp = nullptr;
    if (r) {
      rp = f32_arg(*r, "residual", false);
      if (!same_shape(x, *r))
        throw py::value_error("residual has shape " + shape_str(*r) + ", x " + shape_str(x));
      check_inplace_ok(*r, out);
    }
    const int64_t n = x.shape(x.ndim() - 1);
    const float* sp = vector_arg(scale, "scale", n, out);
    const float* bp = bias ? vector_arg(*bias, "bias", n, out) : nullptr;
    if (!(eps >= 0.0f)) throw py::value_error("epsilon must be >= 0");
    const size_t size = static_cast<size_t>(x.size());
    if (size == 0) return;
    const size_t rows = size / size_t(n);
    if (size < kReleaseGil) return zs::layernorm_f32(ops, xp, rp, sp, bp, yp, rows, size_t(n), eps);
    py::gil_scoped_release nogil;
    zs::layernorm_f32(ops, xp, rp, sp, bp, yp, rows, size_t(n), eps);
  }, py::arg("x"), py::arg("residual"), py::arg("scale"), py::arg("bias"), py::arg("out"), py::arg("epsilon"),
        py::arg("isa") = py::none(),
        "out = layer_norm(x (+ residual)) over the last dim, times scale (+ bias); out may be x or residual.");
  m.def("attention", [](const py::array& q, const py::array& kt, const py::array& v, const std::optional<py::array>& mask,
                        const py::array& out, float scale, const std::optional<std::string>& isa) {
    const zs::DenseOps& ops = dense_pick(isa);
    zs::AttnShape s{};
    strided_f32(q, "q", s.q, false);
    strided_f32(kt, "kt", s.kt, false);
    strided_f32(v, "v", s.v, false);
    strided_f32(out, "out", s.o, true);
    s.b = size_t(q.shape(0)), s.h = size_t(q.shape(1)), s.sq = size_t(q.shape(2)), s.d = size_t(q.shape(3));
    s.sk = size_t(kt.shape(3)), s.dv = size_t(v.shape(3));
    s.scale = scale;
    const auto expect = [&](const py::array& a, const char* what, std::initializer_list<int64_t> dims) {
      size_t i = 0;
      for (int64_t d : dims)
        if (a.shape(py::ssize_t(i++)) != d)
          throw py::value_error(std::string(what) + " has shape " + shape_str(a) + ", expected " + dims_str(dims));
    };
    const int64_t B = int64_t(s.b), H = int64_t(s.h), Sq = int64_t(s.sq), D = int64_t(s.d), Sk = int64_t(s.sk),
                  Dv = int64_t(s.dv);
    expect(kt, "kt", {B, H, D, Sk});
    expect(v, "v", {B, H, Sk, Dv});
    expect(out, "out", {B, H, Sq, Dv});
    const float* mp = nullptr;
    if (mask) {
      mp = strided_f32(*mask, "mask", s.m, false);
      expect(*mask, "mask", {B, H, Sq, Sk});
      if (spans_overlap(*mask, out)) throw py::value_error("out must not share memory with mask");
    }
    if (Dv > 1 && s.o[3] != 1) throw py::value_error("out's last dimension must be contiguous");
    for (const auto* a : {&q, &kt, &v})
      if (spans_overlap(*a, out)) throw py::value_error("out must not share memory with q, kt or v");
    if (s.units() == 0 || s.dv == 0) return;
    const auto run = [&] {
      zs::attention_f32(ops, s, static_cast<const float*>(q.data()), static_cast<const float*>(kt.data()),
                        static_cast<const float*>(v.data()), mp, const_cast<float*>(static_cast<const float*>(out.data())));
    };
    if (s.b * s.h * s.sq * s.sk * (s.d + s.dv) < size_t(kReleaseGil) * 8) return run();
    py::gil_scoped_release nogil;
    run();
  }, py::arg("q"), py::arg("kt"), py::arg("v"), py::arg("mask"), py::arg("out"), py::arg("scale") = 1.0f,
        py::arg("isa") = py::none(),
        "out = softmax(scale * q @ kt + mask) @ v per (batch, head): q (B, H, Sq, D), kt (B, H, D, Sk), "
        "v (B, H, Sk, Dv), mask None or (B, H, Sq, Sk) (broadcast views welcome), out (B, H, Sq, Dv); any strides, "
        "out's last one 1.");
  m.def("gemv", [](const py::array& w, const py::array& x, const std::optional<py::array>& bias, const py::array& out,
                   float lo, float hi, const std::optional<std::string>& isa) {
    const zs::DenseOps& ops = dense_pick(isa);
    const float* wp = f32_arg(w, "w", false);
    if (w.ndim() != 2) throw py::value_error("w must be 2-D (N, K), got shape " + shape_str(w));
    const int64_t n = w.shape(0), k = w.shape(1);
    const float* xp = f32_arg(x, "x", false);
    float* yp = const_cast<float*>(f32_arg(out, "out", true));
    int64_t mb = 1;
    if (x.ndim() == 1) {
      if (x.shape(0) != k) throw py::value_error("x has shape " + shape_str(x) + ", expected (" + std::to_string(k) + ",)");
      if (out.ndim() != 1 || out.shape(0) != n)
        throw py::value_error("out has shape " + shape_str(out) + ", expected (" + std::to_string(n) + ",)");
    } else if (x.ndim() == 2) {
      mb = x.shape(0);
      if (x.shape(1) != k)
        throw py::value_error("x has shape " + shape_str(x) + ", expected (M, " + std::to_string(k) + ")");
      if (out.ndim() != 2 || out.shape(0) != mb || out.shape(1) != n)
        throw py::value_error("out has shape " + shape_str(out) + ", expected (" + std::to_string(mb) + ", " +
                              std::to_string(n) + ")");
    } else {
      throw py::value_error("x must be 1-D (K,) or 2-D (M, K), got shape " + shape_str(x));
    }
    const float* bp = bias ? vector_arg(*bias, "bias", n, out) : nullptr;
    if (overlaps(w, out)) throw py::value_error("out must not share memory with w");
    if (overlaps(x, out)) throw py::value_error("out must not share memory with x");
    if (!(lo <= hi)) throw py::value_error("clamp range is empty: min > max");
    if (n == 0 || mb == 0) return;
    if (n * k * mb < kReleaseGil * 8)
      return zs::gemm_small_f32(ops, wp, xp, bp, yp, size_t(n), size_t(k), size_t(mb), lo, hi);
    py::gil_scoped_release nogil;
    zs::gemm_small_f32(ops, wp, xp, bp, yp, size_t(n), size_t(k), size_t(mb), lo, hi);
  }, py::arg("w"), py::arg("x"), py::arg("bias"), py::arg("out"), py::arg("clamp_min") = -INFINITY,
        py::arg("clamp_max") = INFINITY, py::arg("isa") = py::none(),
        "Dense Linear: out = clamp(x @ w.T + bias); w (N, K), x (K,) or (M, K), out (N,) or (M, N).");
  py::class_<zs::PackedGemm>(m, "DenseWeight")
      .def(py::init([](const py::array& w, const std::optional<py::array>& bias,
                       const std::optional<std::string>& isa) {
             return new_packed<zs::PackedGemm>(w, bias, isa, "(N, K)");
           }),
           py::arg("w"), py::arg("bias") = py::none(), py::arg("isa") = py::none(),
           "A Linear weight w (N, K) and bias (N,) packed once for the dense GEMM kernel of one ISA.")
      .def_property_readonly("shape", [](const zs::PackedGemm& p) { return py::make_tuple(p.n(), p.k()); })
      .def_property_readonly("isa", [](const zs::PackedGemm& p) { return zs::isa_name(p.ops().isa); })
      .def_property_readonly("nbytes", &zs::PackedGemm::bytes);
  py::class_<zs::PackedGemmLeft>(m, "DenseConvWeight")
      .def(py::init([](const py::array& w, const std::optional<py::array>& bias,
                       const std::optional<std::string>& isa) {
             return new_packed<zs::PackedGemmLeft>(w, bias, isa, "(Cout, C*KH*KW)");
           }),
           py::arg("w"), py::arg("bias") = py::none(), py::arg("isa") = py::none(),
           "A convolution weight (Cout, C*KH*KW) and bias (Cout,) packed once for the dense GEMM of one ISA.")
      .def_property_readonly("shape", [](const zs::PackedGemmLeft& p) { return py::make_tuple(p.m(), p.k()); })
      .def_property_readonly("isa", [](const zs::PackedGemmLeft& p) { return zs::isa_name(p.ops().isa); })
      .def_property_readonly("nbytes", &zs::PackedGemmLeft::bytes);
  m.def("conv2d_dense", [](const py::object& w, const py::array& x, const py::array& out, float lo, float hi,
                           const Dims& kernel_shape, const Dims& strides, const Dims& pads, const Dims& dilations,
                           const std::optional<py::array>& residual) {
    run_prepared(prep_conv2d_dense(w, x, out, lo, hi, kernel_shape, strides, pads, dilations, residual));
  }, py::arg("w"), py::arg("x"), py::arg("out"), py::arg("clamp_min"), py::arg("clamp_max"),
        py::arg("kernel_shape"), py::arg("strides"), py::arg("pads"), py::arg("dilations"),
        py::arg("residual") = py::none(),
        "Conv2d (NCHW, groups 1) with a packed dense weight: out (B, Cout, OH, OW) = clamp(conv(x) + bias\n"
        "+ residual), residual (optional) of out's shape and not overlapping it. w: a DenseConvWeight\n"
        "(Cout, C*KH*KW), or a DenseWeight (Cout, C) for 1x1 convs of stride 1 without padding (output\n"
        "channels in the vectors: for maps of few positions).");
  m.def("bind_conv2d_dense", [](const py::object& w, const py::array& x, const py::array& out, float lo, float hi,
                                const Dims& kernel_shape, const Dims& strides, const Dims& pads,
                                const Dims& dilations, const std::optional<py::array>& residual) {
    Prepared p = prep_conv2d_dense(w, x, out, lo, hi, kernel_shape, strides, pads, dilations, residual);
    return bound(std::move(p), {w, x, out, residual ? py::object(*residual) : py::object(py::none())});
  }, py::arg("w"), py::arg("x"), py::arg("out"), py::arg("clamp_min"), py::arg("clamp_max"),
        py::arg("kernel_shape"), py::arg("strides"), py::arg("pads"), py::arg("dilations"),
        py::arg("residual") = py::none(),
        "conv2d_dense's operands, checked as it checks them, bound into a BoundCall that runs it on them\n"
        "(for Chain: a plan's steps whose buffers stay put).");
  m.def("gemm", [](const zs::PackedGemm& w, const py::array& x, const py::array& out, float lo, float hi,
                   const std::string& act) {
    zs::GemmAct a;
    if (act.empty()) {
      a = zs::GemmAct::kNone;
    } else if (act == "gelu") {
      a = zs::GemmAct::kGeluErf;
    } else if (act == "gelu_tanh") {
      a = zs::GemmAct::kGeluTanh;
    } else {
      throw py::value_error("activation must be '', 'gelu' or 'gelu_tanh', got '" + act + "'");
    }
    const int64_t n = int64_t(w.n()), k = int64_t(w.k());
    const float* xp = f32_arg(x, "x", false);
    float* yp = const_cast<float*>(f32_arg(out, "out", true));
    if (x.ndim() < 1 || x.shape(x.ndim() - 1) != k)
      throw py::value_error("x has shape " + shape_str(x) + ", expected (..., " + std::to_string(k) + ")");
    bool lead_ok = out.ndim() == x.ndim() && out.shape(out.ndim() - 1) == n;
    for (py::ssize_t i = 0; lead_ok && i + 1 < x.ndim(); ++i) lead_ok = out.shape(i) == x.shape(i);
    if (!lead_ok)
      throw py::value_error("out has shape " + shape_str(out) + ", expected x's leading dims and " + std::to_string(n));
    if (overlaps(x, out)) throw py::value_error("out must not share memory with x");
    if (!(lo <= hi)) throw py::value_error("clamp range is empty: min > max");
    const int64_t rows = k ? x.size() / k : out.size() / (n ? n : 1);
    if (rows == 0 || n == 0) return;
    if (rows * n * (k + 1) < kReleaseGil * 8)
      return zs::gemm_f32(w, xp, size_t(k), yp, size_t(n), size_t(rows), a, lo, hi);
    py::gil_scoped_release nogil;
    zs::gemm_f32(w, xp, size_t(k), yp, size_t(n), size_t(rows), a, lo, hi);
  }, py::arg("w"), py::arg("x"), py::arg("out"), py::arg("clamp_min") = -INFINITY, py::arg("clamp_max") = INFINITY,
        py::arg("activation") = "",
        "Dense Linear on a packed weight: out = clamp(act(x @ w.T + bias)); x (..., K), out (..., N).");
  m.def("pool2d", [](const py::array& x, const py::array& out, const std::string& kind, Pair kernel, Pair strides,
                     Quad pads, Pair dilations) {
    run_prepared(prep_pool2d(x, out, kind, kernel, strides, pads, dilations));
  }, py::arg("x"), py::arg("out"), py::arg("kind"), py::arg("kernel"), py::arg("strides"), py::arg("pads"),
        py::arg("dilations"),
        "2-D pooling, NCHW float32: kind 'max', 'avg' (divide by the taps inside the image) or "
        "'avg_include_pad' (by KH * KW); zero-free padding (top, left, bottom, right), no ceil mode.");
  m.def("bind_pool2d", [](const py::array& x, const py::array& out, const std::string& kind, Pair kernel,
                          Pair strides, Quad pads, Pair dilations) {
    return bound(prep_pool2d(x, out, kind, kernel, strides, pads, dilations), {x, out});
  }, py::arg("x"), py::arg("out"), py::arg("kind"), py::arg("kernel"), py::arg("strides"), py::arg("pads"),
        py::arg("dilations"), "pool2d's operands, checked as it checks them, bound into a BoundCall.");
  m.def("dwconv", [](const py::array& x, const py::array& w, const std::optional<py::array>& bias,
                     const py::array& out, Pair strides, Quad pads, Pair dilations, float lo, float hi,
                     const std::optional<std::string>& isa) {
    run_prepared(prep_dwconv(x, w, bias, out, strides, pads, dilations, lo, hi, isa));
  }, py::arg("x"), py::arg("w"), py::arg("bias"), py::arg("out"), py::arg("strides"), py::arg("pads"),
        py::arg("dilations"), py::arg("clamp_min") = -INFINITY, py::arg("clamp_max") = INFINITY,
        py::arg("isa") = py::none(),
        "Depthwise conv2d, NCHW: out = clamp(conv(x, w, groups=C) + bias); x (N, C, H, W), w (C, 1, KH, KW), "
        "out (N, C, OH, OW), zero padding (top, left, bottom, right).");
  m.def("bind_dwconv", [](const py::array& x, const py::array& w, const std::optional<py::array>& bias,
                          const py::array& out, Pair strides, Quad pads, Pair dilations, float lo, float hi,
                          const std::optional<std::string>& isa) {
    return bound(prep_dwconv(x, w, bias, out, strides, pads, dilations, lo, hi, isa),
                 {x, w, bias ? py::object(*bias) : py::object(py::none()), out});
  }, py::arg("x"), py::arg("w"), py::arg("bias"), py::arg("out"), py::arg("strides"), py::arg("pads"),
        py::arg("dilations"), py::arg("clamp_min") = -INFINITY, py::arg("clamp_max") = INFINITY,
        py::arg("isa") = py::none(), "dwconv's operands, checked as it checks them, bound into a BoundCall.");
  py::class_<BoundCall, std::shared_ptr<BoundCall>>(m, "BoundCall",
                                                    "One kernel call bound to its operands (bind_*); calling it runs it.")
      .def("__call__", [](const BoundCall& c) { run_prepared(c.p); });
  py::class_<Chain>(m, "Chain",
                    "BoundCalls run in order by one call, with the GIL released once: a plan's run of kernel\n"
                    "steps whose inputs and outputs are its own buffers.")
      .def(py::init([](std::vector<std::shared_ptr<BoundCall>> calls) {
             for (const auto& b : calls)
               if (!b) throw py::value_error("Chain: a call is None");
             return Chain{std::move(calls)};
           }),
           py::arg("calls"))
      .def("__len__", [](const Chain& c) { return c.calls.size(); })
      .def("__call__", [](const Chain& c) {
        py::gil_scoped_release nogil;
        for (const auto& b : c.calls)
          if (b->p.fn) b->p.fn();
      });
}
