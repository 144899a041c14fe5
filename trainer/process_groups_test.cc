#include "trainer/process_groups.h"

#include <vector>

#include "gtest/gtest.h"

namespace modamba {
namespace {

// Only a place in a group; no operation is ever issued.
class PlaceOnly : public Collectives {
 public:
  PlaceOnly(int rank, int world) : rank_(rank), world_(world) {}
  int rank() const override { return rank_; }
  int world_size() const override { return world_; }
  Device device() const override { return Device::kCpu; }
  std::unique_ptr<Work> AllGatherAsync(BufferView, BufferView) override { return Unused(); }
  std::unique_ptr<Work> ReduceScatterAsync(BufferView, BufferView) override { return Unused(); }
  std::unique_ptr<Work> AllReduceAsync(BufferView) override { return Unused(); }
  std::unique_ptr<Work> BroadcastAsync(BufferView, int) override { return Unused(); }
  absl::Status Barrier() override { return Unused()->Wait(); }
  absl::Status Synchronize() override { return Unused()->Wait(); }
  WaitTimes TakeWaitTimes() override { return {}; }

 private:
  static std::unique_ptr<Work> Unused() { return DoneWork(absl::UnimplementedError("unused")); }
  const int rank_, world_;
};

// Connects rank `rank` of `world` with `g` ranks a shard group; returns the
// options the factory saw, in order.
std::vector<CollectivesOptions> Connect(int rank, int world, int g, absl::Status* status) {
  std::vector<CollectivesOptions> seen;
  PlaceOnly all(rank, world);
  auto groups = ConnectHybridGroups(all, g, [&](const CollectivesOptions& o) {
    seen.push_back(o);
    return absl::StatusOr<std::unique_ptr<Collectives>>(
        std::make_unique<PlaceOnly>(o.rank, o.world_size));
  });
  *status = groups.status();
  return seen;
}

TEST(ProcessGroups, SixRanksAsThreeHostsOfTwo) {
  absl::Status status;
  // Rank 3: host 1 (ranks 2, 3), replica group 1 (ranks 1, 3, 5).
  std::vector<CollectivesOptions> seen = Connect(3, 6, 2, &status);
  ASSERT_TRUE(status.ok()) << status;
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[0].prefix, "shard1");
  EXPECT_EQ(seen[0].rank, 1);
  EXPECT_EQ(seen[0].world_size, 2);
  EXPECT_EQ(seen[0].job_ranks, (std::vector<int>{2, 3}));
  EXPECT_EQ(seen[1].prefix, "replica1");
  EXPECT_EQ(seen[1].rank, 1);
  EXPECT_EQ(seen[1].world_size, 3);
  EXPECT_EQ(seen[1].job_ranks, (std::vector<int>{1, 3, 5}));
  EXPECT_EQ(JobRank(seen[1], 2), 5);
  EXPECT_EQ(JobRank(seen[1], -1), -1);
}

TEST(ProcessGroups, PlainShardingMakesNoGroups) {
  for (int g : {0, 4}) {
    absl::Status status;
    EXPECT_TRUE(Connect(1, 4, g, &status).empty()) << g;
    EXPECT_TRUE(status.ok()) << status;
  }
}

TEST(ProcessGroups, SizeMustDivideTheWorld) {
  absl::Status status;
  Connect(0, 6, 4, &status);
  EXPECT_TRUE(absl::IsInvalidArgument(status));
  EXPECT_NE(status.message().find("fsdp.shard_group_size 4"), std::string::npos) << status;
}

}  // namespace
}  // namespace modamba
