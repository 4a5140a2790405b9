// Declarations of every micro-kernel in kernels.inc.
#pragma once

#include "zeroskip/spmm.h"

#define ZS_VIEW_TYPE_csr zs::CsrF32
#define ZS_VIEW_TYPE_bsr zs::BsrF32
#define ZS_VIEW_TYPE_nm zs::NmF32

#define ZS_KERNEL(format, name, isa, tile_n, tile_m, nm_n, nm_m, symbol)                   \
  void symbol(const ZS_VIEW_TYPE_##format& a, const float* x, float* y, int64_t n, \
              const zs::SpmmParams& p, int64_t row_begin, int64_t row_end, float* ws);
#include "kernels.inc"
#undef ZS_KERNEL
