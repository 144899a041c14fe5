#include "trainer/gloo_collectives.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "rendezvous/file_store.h"
#include "trainer/collectives_checks.h"
#include "trainer/test_util.h"

namespace modamba {
namespace {

using ::testing::HasSubstr;

// Every collective, exact, with ranks as real processes on loopback.
class GlooRanksTest : public ::testing::TestWithParam<int> {};

TEST_P(GlooRanksTest, CollectivesGiveExactResults) {
  const int n = GetParam();
  RanksRun run = RunRanks("trainer/test_worker", n, {"--mode=collectives"});
  EXPECT_EQ(run.result.exit_code, 0);
  for (int r = 0; r < n; ++r) EXPECT_EQ(run.result.ranks[r].code, 0) << run.logs[r];
}

INSTANTIATE_TEST_SUITE_P(WorldSizes, GlooRanksTest, ::testing::Values(2, 3, 4));

TEST(GlooCollectivesTest, RendezvousThroughAFileStore) {
  RanksRun run = RunRanks("trainer/test_worker", 2, {"--mode=collectives"}, "file");
  for (int r = 0; r < 2; ++r) EXPECT_EQ(run.result.ranks[r].code, 0) << run.logs[r];
}

class SingleRankTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store_ = *FileStore::Open(FreshTestDir("single_rank"));
    GlooOptions options;
    options.group.timeout = absl::Seconds(5);
    absl::StatusOr<std::unique_ptr<Collectives>> c = NewGlooCollectives(store_.get(), options);
    ASSERT_TRUE(c.ok()) << c.status();
    c_ = *std::move(c);
  }
  std::unique_ptr<KvStore> store_;
  std::unique_ptr<Collectives> c_;
};

TEST_F(SingleRankTest, CollectivesOfOneRank) {
  std::unique_ptr<TestMemory> memory = NewHostMemory();
  EXPECT_TRUE(CheckCollectives(*c_, *memory, {DType::kF32, DType::kF64}).ok());
  EXPECT_TRUE(CheckFlatBuckets(*c_, *memory, DType::kF32).ok());
}

TEST_F(SingleRankTest, RefusesBadBuffers) {
  std::vector<float> a(4), b(7);
  std::vector<uint16_t> h(4);
  const BufferView four{a.data(), DType::kF32, Device::kCpu, 4};
  const BufferView seven{b.data(), DType::kF32, Device::kCpu, 7};
  EXPECT_EQ(c_->AllGather(four, seven).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(c_->ReduceScatter(seven, four).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(c_->AllReduce({h.data(), DType::kBF16, Device::kCpu, 4}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(c_->AllReduce({a.data(), DType::kF32, Device::kCuda, 4}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(c_->Broadcast(four, 1).code(), absl::StatusCode::kInvalidArgument);
  // A refused call leaves the communicator usable.
  EXPECT_TRUE(c_->AllReduce(four).ok());
}

TEST(GlooOptionsTest, RefusesInvalidGroups) {
  std::unique_ptr<KvStore> store = *FileStore::Open(FreshTestDir("options"));
  GlooOptions options;
  options.group.world_size = 2;
  options.group.rank = 2;
  EXPECT_EQ(NewGlooCollectives(store.get(), options).status().code(),
            absl::StatusCode::kInvalidArgument);
  options.group.world_size = 0;
  options.group.rank = 0;
  EXPECT_EQ(NewGlooCollectives(store.get(), options).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// The survivors' logs carry the error of their failed collective.
void ExpectSurvivorsName(const RanksRun& run, int victim, absl::string_view detail) {
  for (int r = 0; r < static_cast<int>(run.logs.size()); ++r) {
    if (r == victim) continue;
    EXPECT_EQ(run.result.ranks[r].code, 3) << run.logs[r];
    EXPECT_THAT(run.logs[r], HasSubstr("COLLECTIVE ERROR"));
    EXPECT_THAT(run.logs[r], HasSubstr(absl::StrCat("lost rank ", victim))) << run.logs[r];
    EXPECT_THAT(run.logs[r], HasSubstr(detail)) << run.logs[r];
  }
}

// kill -9 of rank 2 of 4: its neighbours see the connection close, rank 0
// sees only its own neighbour give up, yet all name rank 2.
TEST(GlooFailureTest, KilledRankIsNamedByEveryRank) {
  RanksRun run = RunRanks("trainer/test_worker", 4, {"--mode=kill", "--victim=2", "--timeout=5s"},
                          "tcp", {}, absl::Seconds(60));
  EXPECT_EQ(run.result.first_failed_rank, 2);
  EXPECT_EQ(run.result.exit_code, 128 + 9);
  ExpectSurvivorsName(run, 2, "Gloo AllReduce");
}

// A rank that stops answering is lost once the timeout passes.
TEST(GlooFailureTest, HungRankIsNamedAfterTheTimeout) {
  RanksRun run = RunRanks("trainer/test_worker", 3, {"--mode=hang", "--victim=1", "--timeout=2s"},
                          "tcp", {}, absl::Seconds(1));
  ExpectSurvivorsName(run, 1, "did not answer within 2s");
  EXPECT_TRUE(run.result.ranks[1].stopped_by_launcher);
}

// A rank that never joins fails the rendezvous of the others.
TEST(GlooFailureTest, AbsentRankIsNamedAtRendezvous) {
  RanksRun run =
      RunRanks("trainer/test_worker", 3, {"--mode=absent", "--victim=1", "--timeout=2s"});
  EXPECT_EQ(run.result.ranks[1].code, 0);
  ExpectSurvivorsName(run, 1, "Gloo rendezvous");
}

}  // namespace
}  // namespace modamba
