// Kernel registry and CPU feature detection: the one place where an ISA is
// chosen. Built from kernels.inc.
#pragma once

#include <cstddef>

#include "zeroskip/spmm.h"

namespace zs {

enum class Format { kCsr, kBsr, kNm };
enum class Isa { kScalar, kAvx2, kAvx512, kNeon };

struct KernelInfo {
  const char* name;
  Format format;
  Isa isa;
  int tile_n, tile_m;
  int nm_n, nm_m;  // 0, 0: any N:M pattern
  CsrUkernel csr;
  BsrUkernel bsr;
  NmUkernel nm;
};

const KernelInfo* kernel_table(size_t* count);
const KernelInfo* find_kernel(const char* name);  // null if unknown
bool isa_supported(Isa isa);
const char* isa_name(Isa isa);
const char* format_name(Format f);
bool kernel_supports_nm(const KernelInfo& k, int n, int m);
// Fastest-ISA kernel for the format that this CPU runs (never null: scalar).
const KernelInfo* default_kernel(Format f, int nm_n = 0, int nm_m = 0);

}  // namespace zs
