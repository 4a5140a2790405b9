// Built instead of device.cu when no CUDA compiler was found.
#include "device.h"

namespace zs::cuda {

int device_count() { return 0; }
bool compiled_with_cuda() { return false; }

}  // namespace zs::cuda
