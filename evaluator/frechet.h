// The Frechet distance between two sets of feature vectors, each summarised
// by a Gaussian (mean and covariance), as FID does with Inception features:
//   d^2 = |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)).
// The trace of the matrix square root is computed from symmetric
// eigendecompositions (LAPACK dsyev through OpenBLAS):
//   tr (S_a S_b)^(1/2) = sum_i sqrt(lambda_i(S_a^(1/2) S_b S_a^(1/2))).
#ifndef MODAMBA_EVALUATOR_FRECHET_H_
#define MODAMBA_EVALUATOR_FRECHET_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"

namespace modamba::eval {

struct FeatureStats {
  int dim = 0;
  int64_t count = 0;
  std::vector<double> mean;  // [dim]
  std::vector<double> cov;   // [dim, dim], unbiased (divides by count - 1)
};

// Statistics of `n` feature rows [n, dim]; needs n >= 2.
absl::StatusOr<FeatureStats> ComputeFeatureStats(const float* features, int64_t n, int dim);

// The squared Frechet distance (FID's convention: no square root taken).
absl::StatusOr<double> FrechetDistance(const FeatureStats& a, const FeatureStats& b);

// Eigenvalues (ascending) and, when `vectors` is non-null, orthonormal
// eigenvectors (column j of the row-major [n, n] result belongs to eigenvalue
// j) of a symmetric matrix.
absl::Status SymmetricEigen(const std::vector<double>& matrix, int n, std::vector<double>* values,
                            std::vector<double>* vectors);

}  // namespace modamba::eval

#endif  // MODAMBA_EVALUATOR_FRECHET_H_
