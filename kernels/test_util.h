// Helpers for GPU-vs-CPU tests: random inputs held on both backends,
// NaN-poisoned outputs, and the relative L2 error of a device result.
#ifndef MODAMBA_KERNELS_TEST_UTIL_H_
#define MODAMBA_KERNELS_TEST_UTIL_H_

#include <cstdint>
#include <random>

#include "core/backend.h"
#include "core/tensor.h"

namespace modamba::testing {

// The same values on the host and on the device.
struct Pair {
  Tensor host, dev;
  Mat h() const { return host.mat(); }
  Mat d() const { return dev.mat(); }
  Mat h(int64_t col0, int64_t cols) const { return host.mat().Cols(col0, cols); }
  Mat d(int64_t col0, int64_t cols) const { return dev.mat().Cols(col0, cols); }
};

// F32 values mean + scale * N(0, 1).
Tensor RandomHost(const Shape& shape, std::mt19937* rng, float scale = 1, float mean = 0);
Tensor ToDevice(Backend* gpu, const Tensor& host);
Tensor ToHost(Backend* gpu, const Tensor& dev);
Pair Upload(Backend* gpu, Tensor host);
Pair RandomPair(Backend* gpu, const Shape& shape, std::mt19937* rng, float scale = 1,
                float mean = 0);
// Host zeros; device NaN, so an element the kernel fails to write shows.
Pair OutputPair(Backend* gpu, const Shape& shape);

// BF16 stand-ins for activations that feed only products: `host` (F32)
// rounded in place to bf16 values, and a device BF16 copy of it.
Tensor ToDeviceBf16(Backend* gpu, Tensor* host);
// A device F32 or BF16 view as a host F32 tensor.
Tensor ToHostF32(Backend* gpu, const Mat& dev);

// ||got - want|| / ||want|| (plain ||got - want|| when want is zero);
// infinity when got holds a NaN or an infinity.
double RelError(const Mat& got, const Mat& want);
// The error of p.dev against p.host over columns [col0, col0 + cols).
double DeviceError(Backend* gpu, const Pair& p, int64_t col0, int64_t cols);
double DeviceError(Backend* gpu, const Pair& p);

// A fresh seed per run (printed by the caller), so every run draws new inputs.
uint32_t FreshSeed();

}  // namespace modamba::testing

#endif  // MODAMBA_KERNELS_TEST_UTIL_H_
