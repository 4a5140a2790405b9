// CUDA device queries. Defined in device.cu when the extension is built with
// nvcc, else in device_stub.cc. Nothing here runs at import.
#pragma once

namespace zs::cuda {

// Number of usable CUDA devices; 0 when there is no driver, no GPU or any
// CUDA error (a machine without a GPU is not an error).
int device_count();
// True when this build contains CUDA code.
bool compiled_with_cuda();

}  // namespace zs::cuda
