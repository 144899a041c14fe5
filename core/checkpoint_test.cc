#include "core/checkpoint.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/file_util.h"
#include "core/safetensors.h"
#include "gtest/gtest.h"

namespace modamba {
namespace {

// A checkpoint's shard files by hand: `flat` split into `world` equal,
// zero-padded slices, one per rank, as bucket 0's values.
void WriteShards(const std::string& dir, const std::vector<float>& flat, int world) {
  const int64_t shard = (static_cast<int64_t>(flat.size()) + world - 1) / world;
  for (int r = 0; r < world; ++r) {
    Tensor t(DType::kF32, {shard});
    for (int64_t i = 0; i < shard; ++i) {
      const int64_t at = r * shard + i;
      t.data<float>()[i] = at < static_cast<int64_t>(flat.size()) ? flat[at] : 0.f;
    }
    ASSERT_TRUE(SaveSafetensors(dir + "/" + ShardFileName(r, world),
                                {{ShardTensorName(0, "value"), &t}})
                    .ok());
  }
}

TEST(Checkpoint, ParamsOfAnyWorldSizeComeBackWhole) {
  std::vector<float> flat(11);
  for (size_t i = 0; i < flat.size(); ++i) flat[i] = 0.5f + i;
  for (int world : {1, 2, 3, 5}) {
    const std::string dir = absl::StrCat(::testing::TempDir(), "/ckpt_", world);
    ASSERT_TRUE(MakeDirs(dir).ok());
    // a [2, 3] and b [5] lie one after the other; the slices cut through both.
    ShardLayout layout{world, "F32", {{{"a", {2, 3}}, {"b", {5}}}}};
    ASSERT_TRUE(WriteShardLayout(dir, layout).ok());
    WriteShards(dir, flat, world);
    auto params = LoadCheckpointParams(dir);
    ASSERT_TRUE(params.ok()) << params.status();
    ASSERT_EQ(params->size(), 2u);
    EXPECT_EQ((*params)[0].first, "a");
    EXPECT_EQ((*params)[0].second.shape(), (Shape{2, 3}));
    EXPECT_EQ((*params)[1].first, "b");
    for (int i = 0; i < 6; ++i) EXPECT_EQ((*params)[0].second.data<float>()[i], flat[i]) << world;
    for (int i = 0; i < 5; ++i) EXPECT_EQ((*params)[1].second.data<float>()[i], flat[6 + i]);
  }
}

TEST(Checkpoint, BadLayoutsAreDataLossNamingTheFile) {
  const std::string dir = ::testing::TempDir() + "/bad_layout";
  ASSERT_TRUE(MakeDirs(dir).ok());
  for (const char* text : {"not json", R"({"world_size": 0, "buckets": []})",
                           R"({"world_size": 1, "buckets": [[{"name": "a"}]]})",
                           R"({"world_size": 1, "buckets": [[{"name": "a", "shape": [-1]}]]})"}) {
    ASSERT_TRUE(WriteFileAtomic(dir + "/layout.json", text).ok());
    auto layout = ReadShardLayout(dir);
    ASSERT_FALSE(layout.ok()) << text;
    EXPECT_EQ(layout.status().code(), absl::StatusCode::kDataLoss) << text;
    EXPECT_NE(layout.status().message().find(dir + "/layout.json"), std::string::npos);
  }
  // A missing shard file names it.
  ASSERT_TRUE(WriteShardLayout(dir, ShardLayout{2, "F32", {{{"a", {3}}}}}).ok());
  auto params = LoadCheckpointParams(dir);
  ASSERT_FALSE(params.ok());
  EXPECT_NE(params.status().message().find(ShardFileName(0, 2)), std::string::npos)
      << params.status();
}

TEST(Checkpoint, StartReplacesWhatARerunLeftAndSealMovesIntoPlace) {
  const std::string root = ::testing::TempDir() + "/seal";
  ASSERT_TRUE(StartCheckpoint(root, 4).ok());
  ASSERT_TRUE(WriteFileAtomic(CheckpointStagingPath(root, 4) + "/stale", "x").ok());
  ASSERT_TRUE(StartCheckpoint(root, 4).ok());
  EXPECT_FALSE(FileExists(CheckpointStagingPath(root, 4) + "/stale"));
  EXPECT_TRUE(CheckpointSteps(root).empty());  // staged, not complete
  ASSERT_TRUE(WriteFileAtomic(CheckpointStagingPath(root, 4) + "/data", "y").ok());
  v1::CheckpointManifest manifest;
  manifest.set_step(4);
  ASSERT_TRUE(SealCheckpoint(root, 4, manifest).ok());
  EXPECT_EQ(CheckpointSteps(root), (std::vector<int64_t>{4}));
  EXPECT_FALSE(FileExists(CheckpointStagingPath(root, 4)));
  EXPECT_TRUE(VerifyCheckpoint(CheckpointPath(root, 4)).ok());
}

}  // namespace
}  // namespace modamba
