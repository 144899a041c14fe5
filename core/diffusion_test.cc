#include "core/diffusion.h"

#include <cmath>
#include <vector>

#include "gtest/gtest.h"

namespace modamba {
namespace {

TEST(Diffusion, CosineScheduleEndpointsAndMonotone) {
  EXPECT_DOUBLE_EQ(CosineAlphaBar(0, 1000), 1.0);
  EXPECT_LT(CosineAlphaBar(1000, 1000), 1e-8);
  // Closed form at the midpoint: cos^2((0.5 + s) / (1 + s) * pi / 2) / cos^2(s / (1 + s) * pi / 2).
  const double s = 0.008;
  double mid = std::pow(std::cos((0.5 + s) / (1 + s) * M_PI / 2), 2) /
               std::pow(std::cos(s / (1 + s) * M_PI / 2), 2);
  EXPECT_NEAR(CosineAlphaBar(500, 1000), mid, 1e-15);
  for (int t = 1; t <= 1000; ++t) EXPECT_LT(CosineAlphaBar(t, 1000), CosineAlphaBar(t - 1, 1000));
}

TEST(Diffusion, NoisedPatchIsTheClosedFormMixOfImageAndEps) {
  const int n = 4, dim = 16;
  std::vector<float> x0(n * dim), xt(n * dim), eps(n * dim);
  for (int i = 0; i < n * dim; ++i) x0[i] = 0.1f * (i % 7) - 0.3f;
  for (int t : {0, 1, 250, 999, 1000}) {
    Rng rng(9);
    NoisePatches(x0.data(), n, dim, t, 1000, &rng, xt.data(), eps.data());
    const double abar = CosineAlphaBar(t, 1000);
    double mean = 0, var = 0;
    for (int i = 0; i < n * dim; ++i) {
      EXPECT_NEAR(xt[i], std::sqrt(abar) * x0[i] + std::sqrt(1 - abar) * eps[i], 1e-6) << t;
      mean += eps[i];
      var += eps[i] * eps[i];
    }
    EXPECT_NEAR(mean / (n * dim), 0, 0.3);
    EXPECT_NEAR(var / (n * dim), 1, 0.4);
  }
  // At t = 0 the image passes unchanged; at T it is pure noise.
  Rng rng(1);
  NoisePatches(x0.data(), n, dim, 0, 1000, &rng, xt.data(), eps.data());
  for (int i = 0; i < n * dim; ++i) EXPECT_FLOAT_EQ(xt[i], x0[i]);
  NoisePatches(x0.data(), n, dim, 1000, 1000, &rng, xt.data(), eps.data());
  for (int i = 0; i < n * dim; ++i) EXPECT_NEAR(xt[i], eps[i], 1e-4);
}

TEST(Diffusion, TimestepFeaturesAreSinCosPairs) {
  std::vector<float> f(8);
  TimestepFeatures(3, 8, f.data());
  for (int i = 0; i < 4; ++i) {
    double w = std::pow(10000.0, -2.0 * i / 8);
    EXPECT_NEAR(f[i], std::sin(3 * w), 1e-6);
    EXPECT_NEAR(f[4 + i], std::cos(3 * w), 1e-6);
  }
}

}  // namespace
}  // namespace modamba
