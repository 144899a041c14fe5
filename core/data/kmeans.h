// k-means with k-means++ initialisation and a fixed seed, used to learn the
// image VQ codebook (4x4 pixel patches) and the speech units (log-mel frames).
// Distances go through an OpenBLAS GEMM: |x|^2 - 2 x.c + |c|^2.
#ifndef MODAMBA_CORE_DATA_KMEANS_H_
#define MODAMBA_CORE_DATA_KMEANS_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"

namespace modamba::data {

struct KMeansOptions {
  int k = 0;
  int max_iterations = 25;
  // Train on a seeded random subset of this many points (0: all points), which
  // keeps the full dataset build fast; the codebook then encodes every point.
  int64_t max_points = 0;
  uint64_t seed = 0;
};

struct KMeansModel {
  int k = 0;
  int dim = 0;
  std::vector<float> centroids;  // [k, dim] row-major
  int iterations = 0;            // Lloyd iterations run
};

// `points` is [n, dim] row-major. Needs at least k points. Clusters that end
// up empty are re-seeded with the points farthest from their centroids.
absl::StatusOr<KMeansModel> TrainKMeans(const float* points, int64_t n, int dim,
                                        const KMeansOptions& options);

// The nearest centroid of each of the n points (ties go to the lower index),
// and optionally the squared distance to it.
void NearestCentroids(const float* points, int64_t n, const KMeansModel& model,
                      int32_t* assignment, float* distance2 = nullptr);

}  // namespace modamba::data

#endif  // MODAMBA_CORE_DATA_KMEANS_H_
