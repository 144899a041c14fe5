#include "core/data/kmeans.h"

#include <algorithm>
#include <cmath>

#include "core/rng.h"
#include "gtest/gtest.h"

namespace modamba::data {
namespace {

// n points around each of `centers` (dim 3) with a small spread.
std::vector<float> Blobs(const std::vector<std::array<float, 3>>& centers, int n, uint64_t seed) {
  Rng rng(seed);
  std::vector<float> points;
  for (int i = 0; i < n; ++i) {
    for (const auto& c : centers) {
      for (float v : c) points.push_back(v + static_cast<float>(rng.Normal(0, 0.05)));
    }
  }
  return points;
}

TEST(KMeansTest, FindsSeparatedClusters) {
  const std::vector<std::array<float, 3>> centers = {{0, 0, 0}, {5, 0, 0}, {0, 5, 5}, {-4, 2, 1}};
  const std::vector<float> points = Blobs(centers, 200, 1);
  KMeansOptions options;
  options.k = 4;
  options.seed = 7;
  absl::StatusOr<KMeansModel> model = TrainKMeans(points.data(), points.size() / 3, 3, options);
  ASSERT_TRUE(model.ok()) << model.status();
  for (const auto& c : centers) {
    float best = 1e9f;
    for (int j = 0; j < 4; ++j) {
      float d = 0;
      for (int k = 0; k < 3; ++k) d += std::pow(model->centroids[j * 3 + k] - c[k], 2.0f);
      best = std::min(best, d);
    }
    EXPECT_LT(best, 0.01f);
  }
  // Every blob maps to one code.
  std::vector<int32_t> codes(points.size() / 3);
  NearestCentroids(points.data(), codes.size(), *model, codes.data());
  for (size_t i = 0; i < codes.size(); ++i) EXPECT_EQ(codes[i], codes[i % 4]);
}

TEST(KMeansTest, SameSeedSameCentroidsOnASubset) {
  const std::vector<float> points = Blobs({{0, 0, 0}, {1, 1, 1}, {3, 0, 1}}, 500, 2);
  KMeansOptions options;
  options.k = 16;
  options.max_points = 600;
  options.seed = 3;
  const int64_t n = points.size() / 3;
  absl::StatusOr<KMeansModel> a = TrainKMeans(points.data(), n, 3, options);
  absl::StatusOr<KMeansModel> b = TrainKMeans(points.data(), n, 3, options);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->centroids, b->centroids);
  options.seed = 4;
  absl::StatusOr<KMeansModel> c = TrainKMeans(points.data(), n, 3, options);
  ASSERT_TRUE(c.ok());
  EXPECT_NE(a->centroids, c->centroids);
}

TEST(KMeansTest, NoEmptyClustersEvenWithDuplicates) {
  // Many copies of few points plus a little spread: k-means++ never picks a
  // point twice and empty clusters are re-seeded.
  std::vector<float> points = Blobs({{0, 0, 0}, {1, 0, 0}}, 300, 5);
  KMeansOptions options;
  options.k = 32;
  options.seed = 1;
  absl::StatusOr<KMeansModel> model = TrainKMeans(points.data(), points.size() / 3, 3, options);
  ASSERT_TRUE(model.ok());
  std::vector<int32_t> codes(points.size() / 3);
  NearestCentroids(points.data(), codes.size(), *model, codes.data());
  std::sort(codes.begin(), codes.end());
  EXPECT_EQ(std::unique(codes.begin(), codes.end()) - codes.begin(), 32);
}

TEST(KMeansTest, RejectsTooFewPointsAndBadK) {
  const std::vector<float> points = {0, 1, 2};
  KMeansOptions options;
  options.k = 2;
  EXPECT_FALSE(TrainKMeans(points.data(), 1, 3, options).ok());
  options.k = 0;
  EXPECT_FALSE(TrainKMeans(points.data(), 3, 1, options).ok());
}

}  // namespace
}  // namespace modamba::data
