#include "core/diffusion.h"

#include <cmath>

namespace modamba {

double CosineAlphaBar(int64_t t, int64_t total_steps) {
  constexpr double s = 0.008;
  auto f = [&](double u) {
    double c = std::cos((u + s) / (1 + s) * M_PI / 2);
    return c * c;
  };
  return f(static_cast<double>(t) / total_steps) / f(0);
}

void NoisePatches(const float* x0, int64_t n, int64_t dim, int64_t t, int64_t total_steps,
                  Rng* rng, float* x_t, float* eps) {
  const double abar = CosineAlphaBar(t, total_steps);
  const double a = std::sqrt(abar), b = std::sqrt(std::max(0.0, 1 - abar));
  for (int64_t i = 0; i < n * dim; ++i) {
    eps[i] = static_cast<float>(rng->Normal(0, 1));
    x_t[i] = static_cast<float>(a * x0[i] + b * eps[i]);
  }
}

void TimestepFeatures(int64_t t, int dim, float* out) {
  const int half = dim / 2;
  for (int i = 0; i < half; ++i) {
    double w = std::pow(10000.0, -2.0 * i / dim);
    out[i] = static_cast<float>(std::sin(t * w));
    out[half + i] = static_cast<float>(std::cos(t * w));
  }
}

}  // namespace modamba
