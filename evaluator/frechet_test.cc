#include "evaluator/frechet.h"

#include <cmath>

#include "core/rng.h"
#include "gtest/gtest.h"

namespace modamba::eval {
namespace {

// n correlated Gaussian features of `dim` (a random linear map of noise).
std::vector<float> Features(int64_t n, int dim, uint64_t seed) {
  Rng rng(seed);
  std::vector<double> mix(dim * dim);
  for (double& m : mix) m = rng.Normal(0, 1.0 / std::sqrt(dim));
  std::vector<float> out(n * dim);
  std::vector<double> z(dim);
  for (int64_t i = 0; i < n; ++i) {
    for (double& v : z) v = rng.Normal(0, 1);
    for (int j = 0; j < dim; ++j) {
      double s = 0.5 * j / dim;  // a non-zero mean
      for (int k = 0; k < dim; ++k) s += mix[j * dim + k] * z[k];
      out[i * dim + j] = static_cast<float>(s);
    }
  }
  return out;
}

TEST(Frechet, EigenDecompositionReconstructs) {
  const int n = 5;
  Rng rng(2);
  std::vector<double> a(n * n);
  for (int i = 0; i < n; ++i) {
    for (int j = 0; j <= i; ++j) a[i * n + j] = a[j * n + i] = rng.Normal(0, 1);
  }
  std::vector<double> values, vectors;
  ASSERT_TRUE(SymmetricEigen(a, n, &values, &vectors).ok());
  for (int i = 0; i < n; ++i) {
    for (int j = 0; j < n; ++j) {
      double s = 0;
      for (int k = 0; k < n; ++k) s += vectors[i * n + k] * values[k] * vectors[j * n + k];
      EXPECT_NEAR(s, a[i * n + j], 1e-12);
    }
  }
  for (int k = 1; k < n; ++k) EXPECT_LE(values[k - 1], values[k]);
}

TEST(Frechet, OneDimensionalClosedForm) {
  // For 1-D Gaussians: (mu_a - mu_b)^2 + (sigma_a - sigma_b)^2.
  FeatureStats a{1, 10, {1.0}, {4.0}}, b{1, 10, {3.0}, {9.0}};
  auto d = FrechetDistance(a, b);
  ASSERT_TRUE(d.ok());
  EXPECT_NEAR(*d, 4.0 + 1.0, 1e-12);
}

TEST(Frechet, ZeroForItselfAndGrowsWithNoise) {
  const int dim = 32;
  const int64_t n = 2000;
  std::vector<float> f = Features(n, dim, 1);
  auto stats = ComputeFeatureStats(f.data(), n, dim);
  ASSERT_TRUE(stats.ok());
  auto self = FrechetDistance(*stats, *stats);
  ASSERT_TRUE(self.ok());
  EXPECT_LT(*self, 1e-9);
  std::printf("FD(set, itself) = %.3g\n", *self);

  Rng rng(7);
  double last = *self;
  for (double noise : {0.05, 0.2, 0.5, 1.0}) {
    std::vector<float> g = f;
    for (float& v : g) v += static_cast<float>(rng.Normal(0, noise));
    auto noisy = ComputeFeatureStats(g.data(), n, dim);
    ASSERT_TRUE(noisy.ok());
    auto d = FrechetDistance(*stats, *noisy);
    ASSERT_TRUE(d.ok());
    std::printf("FD(set, set + N(0, %.2f^2)) = %.4f\n", noise, *d);
    EXPECT_GT(*d, last);
    last = *d;
  }
  // Symmetric in its arguments.
  std::vector<float> g = Features(n, dim, 3);
  auto other = ComputeFeatureStats(g.data(), n, dim);
  ASSERT_TRUE(other.ok());
  EXPECT_NEAR(*FrechetDistance(*stats, *other), *FrechetDistance(*other, *stats), 1e-8);
}

TEST(Frechet, RejectsMismatchedInputs) {
  float one[3] = {1, 2, 3};
  EXPECT_FALSE(ComputeFeatureStats(one, 1, 3).ok());
  FeatureStats a{2, 5, {0, 0}, {1, 0, 0, 1}}, b{1, 5, {0}, {1}};
  EXPECT_FALSE(FrechetDistance(a, b).ok());
}

}  // namespace
}  // namespace modamba::eval
