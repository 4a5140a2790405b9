// Built instead of spmm_csr.cu and gemm_sp24.cu when no CUDA compiler was found: the entry points
// exist and say why they cannot run.
#include <stdexcept>
#include <string>

#include "kernels.h"

namespace zs::cuda {

namespace {
[[noreturn]] void no_cuda(const char* what) {
  throw std::runtime_error(
      std::string("zeroskip was built without CUDA (no nvcc at build time): ") + what +
      " is unavailable; rebuild with the CUDA toolkit installed (CUDACXX=/path/to/nvcc)");
}
}  // namespace

void spmm_csr(const CsrParams&) { no_cuda("cuda spmm_csr"); }
void gemm_sp24(const Sp24Params&) { no_cuda("cuda gemm_sp24"); }

}  // namespace zs::cuda
