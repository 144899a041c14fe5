#include "kernels/test_util.h"

#include <cmath>
#include <cstring>
#include <iostream>
#include <limits>
#include <utility>

#include "glog/logging.h"
#include "kernels/precision.h"

namespace modamba::testing {

Tensor RandomHost(const Shape& shape, std::mt19937* rng, float scale, float mean) {
  Tensor t(DType::kF32, shape);
  std::normal_distribution<float> normal(0.f, 1.f);
  float* p = t.data<float>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = mean + scale * normal(*rng);
  return t;
}

Tensor ToDevice(Backend* gpu, const Tensor& host) {
  Tensor dev = gpu->Empty(host.dtype(), host.shape());
  gpu->Copy(host.mat(), dev.mat());
  return dev;
}

Tensor ToHost(Backend* gpu, const Tensor& dev) {
  Tensor host(dev.dtype(), dev.shape());
  gpu->Copy(dev.mat(), host.mat());
  return host;
}

Pair Upload(Backend* gpu, Tensor host) {
  Pair p;
  p.dev = ToDevice(gpu, host);
  p.host = std::move(host);
  return p;
}

Pair RandomPair(Backend* gpu, const Shape& shape, std::mt19937* rng, float scale, float mean) {
  return Upload(gpu, RandomHost(shape, rng, scale, mean));
}

Pair OutputPair(Backend* gpu, const Shape& shape) {
  Pair p;
  p.host = Tensor::Zeros(DType::kF32, shape);
  p.dev = gpu->Empty(DType::kF32, shape);
  gpu->Fill(p.dev.mat(), std::numeric_limits<double>::quiet_NaN());
  return p;
}

Tensor ToDeviceBf16(Backend* gpu, Tensor* host) {
  CHECK(host->dtype() == DType::kF32) << "ToDeviceBf16: expected F32";
  Tensor bits(DType::kBF16, host->shape());
  for (int64_t i = 0; i < host->numel(); ++i) {
    const uint16_t b = Bf16Bits(host->data<float>()[i]);
    bits.data<uint16_t>()[i] = b;
    const uint32_t u = uint32_t{b} << 16;
    std::memcpy(&host->data<float>()[i], &u, 4);
  }
  return ToDevice(gpu, bits);
}

Tensor ToHostF32(Backend* gpu, const Mat& dev) {
  Tensor raw(dev.dtype, {dev.rows, dev.cols});
  gpu->Copy(dev, raw.mat());
  if (dev.dtype == DType::kF32) return raw;
  CHECK(dev.dtype == DType::kBF16) << "ToHostF32: expected F32 or BF16";
  Tensor out(DType::kF32, {dev.rows, dev.cols});
  for (int64_t i = 0; i < out.numel(); ++i) {
    const uint32_t u = uint32_t{raw.data<uint16_t>()[i]} << 16;
    std::memcpy(&out.data<float>()[i], &u, 4);
  }
  return out;
}

double RelError(const Mat& got, const Mat& want) {
  CHECK(got.rows == want.rows && got.cols == want.cols) << "RelError: shapes differ";
  double diff = 0, norm = 0;
  for (int64_t r = 0; r < got.rows; ++r) {
    for (int64_t c = 0; c < got.cols; ++c) {
      const double g = got.ptr<float>()[r * got.ld + c];
      const double w = want.ptr<float>()[r * want.ld + c];
      if (!std::isfinite(g)) return std::numeric_limits<double>::infinity();
      diff += (g - w) * (g - w);
      norm += w * w;
    }
  }
  return norm > 0 ? std::sqrt(diff / norm) : std::sqrt(diff);
}

double DeviceError(Backend* gpu, const Pair& p, int64_t col0, int64_t cols) {
  Tensor got = ToHost(gpu, p.dev);
  return RelError(got.mat().Cols(col0, cols), p.host.mat().Cols(col0, cols));
}

double DeviceError(Backend* gpu, const Pair& p) {
  return DeviceError(gpu, p, 0, p.host.mat().cols);
}

uint32_t FreshSeed() { return std::random_device()(); }

void GpuVsCpuTest::SetUp() {
  if (CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device";
  seed_ = FreshSeed();
  rng_.seed(seed_);
  cpu_ = NewCpuBackend();
  gpu_ = MakeGpu(matmul_);
}

std::unique_ptr<Backend> GpuVsCpuTest::MakeGpu(MatmulPrecision matmul) {
  CudaBackendOptions options;
  options.matmul = matmul;
  auto gpu = NewCudaBackend(options);
  CHECK(gpu.ok()) << gpu.status();
  return std::move(gpu).value();
}

void GpuVsCpuTest::ExpectClose(double err, double tol, const std::string& what) {
  std::cout << "  " << what << ": relative error " << err << "\n";
  EXPECT_LT(err, tol) << what << " (seed " << seed_ << ")";
}

}  // namespace modamba::testing
