// Helpers for GPU-vs-CPU tests: random inputs held on both backends,
// NaN-poisoned outputs, and the relative L2 error of a device result.
#ifndef MODAMBA_KERNELS_TEST_UTIL_H_
#define MODAMBA_KERNELS_TEST_UTIL_H_

#include <cstdint>
#include <memory>
#include <random>
#include <string>

#include "core/backend.h"
#include "core/tensor.h"
#include "gtest/gtest.h"
#include "kernels/cuda_backend.h"

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

// Relative errors allowed against the CPU.
constexpr double kTolF32 = 1e-5;   // fp32 arithmetic on both sides
constexpr double kTolBf16 = 1e-2;  // bf16 operands, fp32 accumulation

// A fixture for GPU-vs-CPU tests: skips without a CUDA device, draws inputs
// from a fresh seed that failures name, and holds a CPU backend and a CUDA
// one whose products have the given precision.
class GpuVsCpuTest : public ::testing::Test {
 protected:
  explicit GpuVsCpuTest(MatmulPrecision matmul = MatmulPrecision::kBf16) : matmul_(matmul) {}
  void SetUp() override;

  // A CUDA backend on device 0 with the given products.
  static std::unique_ptr<Backend> MakeGpu(MatmulPrecision matmul);

  // Prints the error, then expects it below `tol`.
  void ExpectClose(double err, double tol, const std::string& what);

  uint32_t seed_ = 0;
  std::mt19937 rng_;
  std::unique_ptr<Backend> cpu_, gpu_;

 private:
  MatmulPrecision matmul_;
};

}  // namespace modamba::testing

#endif  // MODAMBA_KERNELS_TEST_UTIL_H_
