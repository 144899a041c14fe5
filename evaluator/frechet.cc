#include "evaluator/frechet.h"

#include <cblas.h>
#include <lapack.h>

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "core/status_macros.h"

namespace modamba::eval {

absl::StatusOr<FeatureStats> ComputeFeatureStats(const float* features, int64_t n, int dim) {
  if (n < 2 || dim < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("feature statistics need at least 2 rows of dim >= 1, got ", n, " x ", dim));
  }
  FeatureStats s;
  s.dim = dim;
  s.count = n;
  s.mean.assign(dim, 0.0);
  for (int64_t i = 0; i < n; ++i) {
    for (int j = 0; j < dim; ++j) s.mean[j] += features[i * dim + j];
  }
  for (double& m : s.mean) m /= n;
  std::vector<double> centred(static_cast<size_t>(n) * dim);
  for (int64_t i = 0; i < n; ++i) {
    for (int j = 0; j < dim; ++j) centred[i * dim + j] = features[i * dim + j] - s.mean[j];
  }
  s.cov.assign(static_cast<size_t>(dim) * dim, 0.0);
  cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, dim, n, 1.0 / (n - 1), centred.data(), dim,
              0.0, s.cov.data(), dim);
  for (int i = 0; i < dim; ++i) {
    for (int j = 0; j < i; ++j) s.cov[i * dim + j] = s.cov[j * dim + i];
  }
  return s;
}

absl::Status SymmetricEigen(const std::vector<double>& matrix, int n, std::vector<double>* values,
                            std::vector<double>* vectors) {
  // LAPACK is column-major; a symmetric matrix reads the same either way, and
  // the eigenvectors come back as columns of the column-major result, i.e.
  // rows of it read row-major, so transpose at the end.
  std::vector<double> a = matrix;
  values->assign(n, 0.0);
  const char jobz = vectors != nullptr ? 'V' : 'N', uplo = 'U';
  lapack_int nn = n, lda = n, info = 0, lwork = -1;
  double query = 0;
  LAPACK_dsyev(&jobz, &uplo, &nn, a.data(), &lda, values->data(), &query, &lwork, &info);
  if (info != 0) return absl::InternalError(absl::StrCat("dsyev workspace query: info ", info));
  lwork = static_cast<lapack_int>(query);
  std::vector<double> work(std::max<lapack_int>(lwork, 1));
  LAPACK_dsyev(&jobz, &uplo, &nn, a.data(), &lda, values->data(), work.data(), &lwork, &info);
  if (info != 0) {
    return absl::InternalError(absl::StrCat("dsyev did not converge: info ", info));
  }
  if (vectors != nullptr) {
    vectors->resize(static_cast<size_t>(n) * n);
    for (int i = 0; i < n; ++i) {
      for (int j = 0; j < n; ++j) (*vectors)[i * n + j] = a[j * n + i];
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<double> FrechetDistance(const FeatureStats& a, const FeatureStats& b) {
  if (a.dim != b.dim || a.dim < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("Frechet distance: feature dims differ (", a.dim, " vs ", b.dim, ")"));
  }
  const int n = a.dim;
  double mean_term = 0;
  for (int i = 0; i < n; ++i) mean_term += (a.mean[i] - b.mean[i]) * (a.mean[i] - b.mean[i]);
  double trace = 0;
  for (int i = 0; i < n; ++i) trace += a.cov[i * n + i] + b.cov[i * n + i];

  // S_a^(1/2) = V diag(sqrt(max(lambda, 0))) V^T.
  std::vector<double> values, vectors;
  RETURN_IF_ERROR(SymmetricEigen(a.cov, n, &values, &vectors));
  std::vector<double> scaled(static_cast<size_t>(n) * n), root(static_cast<size_t>(n) * n);
  for (int i = 0; i < n; ++i) {
    for (int j = 0; j < n; ++j) {
      scaled[i * n + j] = vectors[i * n + j] * std::sqrt(std::max(values[j], 0.0));
    }
  }
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1.0, scaled.data(), n,
              vectors.data(), n, 0.0, root.data(), n);
  // M = S_a^(1/2) S_b S_a^(1/2), symmetric positive semi-definite.
  std::vector<double> tmp(static_cast<size_t>(n) * n), m(static_cast<size_t>(n) * n);
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0, root.data(), n,
              b.cov.data(), n, 0.0, tmp.data(), n);
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0, tmp.data(), n, root.data(),
              n, 0.0, m.data(), n);
  for (int i = 0; i < n; ++i) {
    for (int j = 0; j < i; ++j) m[i * n + j] = m[j * n + i] = 0.5 * (m[i * n + j] + m[j * n + i]);
  }
  RETURN_IF_ERROR(SymmetricEigen(m, n, &values, nullptr));
  double root_trace = 0;
  for (double v : values) root_trace += std::sqrt(std::max(v, 0.0));
  // Rounding can leave a tiny negative value for identical sets.
  return std::max(0.0, mean_term + trace - 2 * root_trace);
}

}  // namespace modamba::eval
