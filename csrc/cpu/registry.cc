#include "registry.h"

#include <cstring>

#include "ukernels.h"

namespace zs {
namespace {

#define ZS_FN_csr(symbol) symbol, nullptr, nullptr
#define ZS_FN_bsr(symbol) nullptr, symbol, nullptr
#define ZS_FN_nm(symbol) nullptr, nullptr, symbol
#define ZS_FMT_csr Format::kCsr
#define ZS_FMT_bsr Format::kBsr
#define ZS_FMT_nm Format::kNm
#define ZS_ISA_scalar Isa::kScalar
#define ZS_ISA_avx2 Isa::kAvx2
#define ZS_ISA_avx512 Isa::kAvx512
#define ZS_ISA_neon Isa::kNeon

const KernelInfo kTable[] = {
#define ZS_KERNEL(format, name, isa, tile_n, tile_m, nm_n, nm_m, symbol) \
  {#name, ZS_FMT_##format, ZS_ISA_##isa, tile_n, tile_m, nm_n, nm_m, ZS_FN_##format(symbol)},
#include "kernels.inc"
#undef ZS_KERNEL
};

int isa_rank(Isa isa) {
  switch (isa) {
    case Isa::kAvx512: return 3;
    case Isa::kAvx2: return 2;
    case Isa::kNeon: return 2;
    default: return 0;
  }
}

}  // namespace

const KernelInfo* kernel_table(size_t* count) {
  *count = sizeof(kTable) / sizeof(kTable[0]);
  return kTable;
}

const KernelInfo* find_kernel(const char* name) {
  for (const KernelInfo& k : kTable)
    if (std::strcmp(k.name, name) == 0) return &k;
  return nullptr;
}

bool isa_supported(Isa isa) {
  switch (isa) {
    case Isa::kScalar: return true;
#if defined(__x86_64__) || defined(_M_X64)
    // __builtin_cpu_supports also checks that the OS saves the vector state.
    case Isa::kAvx2: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#if defined(ZS_EMULATE_AVX512)
    case Isa::kAvx512: return isa_supported(Isa::kAvx2);  // SIMDe test build, see vec_avx512.h
#else
    case Isa::kAvx512: return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma");
#endif
#endif
#if defined(__aarch64__)
    case Isa::kNeon: return true;  // mandatory in AArch64
#endif
    default: return false;
  }
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kScalar: return "scalar";
    case Isa::kAvx2: return "avx2";
    case Isa::kAvx512: return "avx512";
    case Isa::kNeon: return "neon";
  }
  return "?";
}

const char* format_name(Format f) {
  switch (f) {
    case Format::kCsr: return "csr";
    case Format::kBsr: return "bsr";
    case Format::kNm: return "nm";
  }
  return "?";
}

bool kernel_supports_nm(const KernelInfo& k, int n, int m) {
  return k.nm_n == 0 || (k.nm_n == n && k.nm_m == m);
}

const KernelInfo* default_kernel(Format f, int nm_n, int nm_m) {
  const KernelInfo* best = nullptr;
  for (const KernelInfo& k : kTable) {
    if (k.format != f || !isa_supported(k.isa)) continue;
    if (f == Format::kNm && !kernel_supports_nm(k, nm_n, nm_m)) continue;
    if (!best || isa_rank(k.isa) > isa_rank(best->isa)) best = &k;
  }
  return best;
}

}  // namespace zs
