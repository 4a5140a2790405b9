// 2-D max and average pooling, NCHW float32 (ONNX MaxPool / AveragePool /
// GlobalAveragePool without ceil mode): torch's NCHW pooling costs tens of
// microseconds a call on small maps here (MaxPool 2x2 on 16x32x32: 77 us).
// Plain C++: the work is a few compares or adds per output, bound by memory;
// planes are split across the kernel threads.
#pragma once

#include <cstdint>

namespace zs {

// OH = (H + pad_t + pad_b - dh (KH - 1) - 1) / sh + 1, likewise OW; both >= 1.
// Padding is never read: max ignores it; average divides by KH * KW when
// include_pad, else by the taps inside the image.
struct Pool2dShape {
  int64_t planes;  // N * C
  int64_t h, w, kh, kw, sh, sw, pad_t, pad_l, pad_b, pad_r, dh, dw, oh, ow;
};

enum class PoolKind { kMax, kAvg, kAvgIncludePad };

// y (planes x oh x ow) from x (planes x h x w). Max propagates NaN.
void pool2d_f32(const float* x, float* y, const Pool2dShape& s, PoolKind kind);

}  // namespace zs
