#include "trainer/nccl_collectives.h"

#include <stdlib.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/cuda_backend.h"
#include "rendezvous/file_store.h"
#include "trainer/test_util.h"

namespace modamba {
namespace {

using ::testing::HasSubstr;

TEST(NcclCollectivesTest, RefusesNvlinkMulticast) {
  std::unique_ptr<KvStore> store = *FileStore::Open(FreshTestDir("nvls"));
  const char* saved = getenv("NCCL_NVLS_ENABLE");
  const std::string previous = saved == nullptr ? "" : saved;
  setenv("NCCL_NVLS_ENABLE", "1", 1);
  absl::StatusOr<std::unique_ptr<Collectives>> c = NewNcclCollectives(store.get(), NcclOptions());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(c.status().message(), HasSubstr("NCCL_NVLS_ENABLE"));
  if (saved == nullptr) {
    unsetenv("NCCL_NVLS_ENABLE");
  } else {
    setenv("NCCL_NVLS_ENABLE", previous.c_str(), 1);
  }
}

TEST(NcclCollectivesTest, CollectivesGiveExactResults) {
  const int gpus = CudaDeviceCount();
  if (gpus == 0) GTEST_SKIP() << "no GPU";
  const int n = std::min(gpus, 4);
  RanksRun run = RunRanks("trainer/nccl_test_worker", n, {"--mode=collectives"});
  for (int r = 0; r < n; ++r) EXPECT_EQ(run.result.ranks[r].code, 0) << run.logs[r];
}

TEST(NcclCollectivesTest, KilledRankIsNamed) {
  const int gpus = CudaDeviceCount();
  if (gpus < 2) GTEST_SKIP() << "needs 2 GPUs, found " << gpus;
  const int n = std::min(gpus, 4);
  RanksRun run =
      RunRanks("trainer/nccl_test_worker", n, {"--mode=kill", "--victim=1", "--timeout=5s"}, "tcp",
               {}, absl::Seconds(60));
  EXPECT_EQ(run.result.first_failed_rank, 1);
  for (int r = 0; r < n; ++r) {
    if (r == 1) continue;
    EXPECT_EQ(run.result.ranks[r].code, 3) << run.logs[r];
    EXPECT_THAT(run.logs[r], HasSubstr("lost rank 1")) << run.logs[r];
  }
}

}  // namespace
}  // namespace modamba
