#include "kernels/test_util.h"

#include <cmath>
#include <limits>

#include "glog/logging.h"

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

}  // namespace modamba::testing
