#include "core/data/kmeans.h"

#include <cblas.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "core/rng.h"
#include "glog/logging.h"

namespace modamba::data {
namespace {

float SquaredDistance(const float* a, const float* b, int dim) {
  float s = 0;
  for (int d = 0; d < dim; ++d) {
    const float t = a[d] - b[d];
    s += t * t;
  }
  return s;
}

// k-means++: each next centroid is a point drawn with probability proportional
// to its squared distance from the centroids chosen so far.
std::vector<float> PlusPlusInit(const float* points, int64_t n, int dim, int k,
                                Rng* rng) {
  std::vector<float> centroids(static_cast<size_t>(k) * dim);
  std::vector<float> nearest(n, std::numeric_limits<float>::max());
  int64_t chosen = static_cast<int64_t>(rng->Below(n));
  for (int c = 0; c < k; ++c) {
    float* centroid = centroids.data() + static_cast<size_t>(c) * dim;
    std::memcpy(centroid, points + chosen * dim, sizeof(float) * dim);
    if (c + 1 == k) break;
    double total = 0;
    for (int64_t i = 0; i < n; ++i) {
      nearest[i] = std::min(nearest[i], SquaredDistance(points + i * dim, centroid, dim));
      total += nearest[i];
    }
    if (total <= 0) {
      // Fewer distinct points than k: duplicates are all that is left.
      chosen = static_cast<int64_t>(rng->Below(n));
      continue;
    }
    const double target = rng->Uniform() * total;
    double running = 0;
    chosen = n - 1;
    for (int64_t i = 0; i < n; ++i) {
      running += nearest[i];
      if (running > target && nearest[i] > 0) {
        chosen = i;
        break;
      }
    }
  }
  return centroids;
}

}  // namespace

void NearestCentroids(const float* points, int64_t n, const KMeansModel& model,
                      int32_t* assignment, float* distance2) {
  const int k = model.k;
  const int dim = model.dim;
  const float* c = model.centroids.data();
  std::vector<float> cnorm(k);
  for (int j = 0; j < k; ++j) {
    float s = 0;
    for (int d = 0; d < dim; ++d) s += c[j * dim + d] * c[j * dim + d];
    cnorm[j] = s;
  }
  constexpr int64_t kBlock = 2048;
  std::vector<float> dots(static_cast<size_t>(kBlock) * k);
  for (int64_t begin = 0; begin < n; begin += kBlock) {
    const int64_t rows = std::min(kBlock, n - begin);
    const float* x = points + begin * dim;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, k, dim, 1.0f, x, dim, c,
                dim, 0.0f, dots.data(), k);
    for (int64_t r = 0; r < rows; ++r) {
      const float* row = dots.data() + r * k;
      int best = 0;
      float best_value = cnorm[0] - 2 * row[0];
      for (int j = 1; j < k; ++j) {
        const float v = cnorm[j] - 2 * row[j];
        if (v < best_value) {
          best_value = v;
          best = j;
        }
      }
      assignment[begin + r] = best;
      if (distance2 != nullptr) {
        float xnorm = 0;
        for (int d = 0; d < dim; ++d) xnorm += x[r * dim + d] * x[r * dim + d];
        distance2[begin + r] = std::max(0.0f, xnorm + best_value);
      }
    }
  }
}

absl::StatusOr<KMeansModel> TrainKMeans(const float* all_points, int64_t all_n, int dim,
                                        const KMeansOptions& options) {
  if (options.k <= 0 || dim <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("k-means needs k > 0 and dim > 0, got k=", options.k, " dim=", dim));
  }
  if (all_n < options.k) {
    return absl::InvalidArgumentError(absl::StrCat(
        "k-means with k=", options.k, " needs at least k points, got ", all_n));
  }
  Rng rng(options.seed);

  // A sorted random subset keeps memory access sequential.
  std::vector<float> subset;
  const float* points = all_points;
  int64_t n = all_n;
  if (options.max_points > 0 && options.max_points < all_n) {
    n = std::max<int64_t>(options.max_points, options.k);
    std::vector<int64_t> index(all_n);
    std::iota(index.begin(), index.end(), 0);
    for (int64_t i = 0; i < n; ++i) {
      std::swap(index[i], index[i + rng.Below(all_n - i)]);
    }
    index.resize(n);
    std::sort(index.begin(), index.end());
    subset.resize(static_cast<size_t>(n) * dim);
    for (int64_t i = 0; i < n; ++i) {
      std::memcpy(subset.data() + i * dim, all_points + index[i] * dim, sizeof(float) * dim);
    }
    points = subset.data();
  }

  KMeansModel model;
  model.k = options.k;
  model.dim = dim;
  model.centroids = PlusPlusInit(points, n, dim, options.k, &rng);

  std::vector<int32_t> assignment(n, -1), previous(n, -1);
  std::vector<float> distance2(n);
  std::vector<double> sums(static_cast<size_t>(options.k) * dim);
  std::vector<int64_t> counts(options.k);
  for (int iter = 0; iter < options.max_iterations; ++iter) {
    NearestCentroids(points, n, model, assignment.data(), distance2.data());
    model.iterations = iter + 1;
    if (assignment == previous) break;
    previous = assignment;

    std::fill(sums.begin(), sums.end(), 0.0);
    std::fill(counts.begin(), counts.end(), 0);
    for (int64_t i = 0; i < n; ++i) {
      const int j = assignment[i];
      ++counts[j];
      double* s = sums.data() + static_cast<size_t>(j) * dim;
      for (int d = 0; d < dim; ++d) s[d] += points[i * dim + d];
    }
    std::vector<int> empty;
    for (int j = 0; j < options.k; ++j) {
      if (counts[j] == 0) {
        empty.push_back(j);
        continue;
      }
      for (int d = 0; d < dim; ++d) {
        model.centroids[static_cast<size_t>(j) * dim + d] =
            static_cast<float>(sums[static_cast<size_t>(j) * dim + d] / counts[j]);
      }
    }
    if (!empty.empty()) {
      // Re-seed empty clusters with the worst-served points (ties: lower index).
      std::vector<int64_t> order(n);
      std::iota(order.begin(), order.end(), 0);
      const size_t m = std::min<size_t>(empty.size(), n);
      std::partial_sort(order.begin(), order.begin() + m, order.end(),
                        [&](int64_t a, int64_t b) {
                          return distance2[a] != distance2[b] ? distance2[a] > distance2[b]
                                                              : a < b;
                        });
      for (size_t e = 0; e < m; ++e) {
        std::memcpy(model.centroids.data() + static_cast<size_t>(empty[e]) * dim,
                    points + order[e] * dim, sizeof(float) * dim);
      }
      previous.assign(n, -1);  // the centroids moved: not converged
    }
  }
  VLOG(1) << "k-means k=" << options.k << " dim=" << dim << " points=" << n
          << " iterations=" << model.iterations;
  return model;
}

}  // namespace modamba::data
