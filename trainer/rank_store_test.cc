// Ranks of a launched group meet through either store kind.
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "rendezvous/open_store.h"
#include "rendezvous/tcp_store.h"
#include "trainer/test_util.h"

namespace modamba {
namespace {

// Three ranks each read their neighbour's key, add to one counter and see
// their own Get of a missing key time out.
class RankStoreTest : public ::testing::TestWithParam<std::string> {};

TEST_P(RankStoreTest, RanksMeetThroughTheStore) {
  std::unique_ptr<TcpStoreServer> server;
  std::string address;
  if (GetParam() == "tcp") {
    server = *TcpStoreServer::Start("127.0.0.1", 0);
    address = absl::StrCat("tcp://127.0.0.1:", server->port());
  } else {
    address = FreshTestDir("file_store");
  }
  std::unique_ptr<KvStore> store = *OpenKvStore(address);
  RanksRun run = RunRanks("trainer/test_worker", 3, {"--mode=store"}, GetParam(),
                          {{"MODAMBA_STORE", address}});
  for (int r = 0; r < 3; ++r) EXPECT_EQ(run.result.ranks[r].code, 0) << run.logs[r];
  EXPECT_EQ(*store->Get("counter", absl::Seconds(1)), "150");
}

INSTANTIATE_TEST_SUITE_P(Stores, RankStoreTest, ::testing::Values("tcp", "file"));

}  // namespace
}  // namespace modamba
