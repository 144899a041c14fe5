#include "rendezvous/kv_store.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <thread>

#include "absl/strings/str_cat.h"
#include "core/file_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "rendezvous/file_store.h"
#include "rendezvous/open_store.h"
#include "rendezvous/tcp_store.h"

namespace modamba {
namespace {

using ::testing::HasSubstr;

std::string FreshDir() {
  static std::atomic<int> counter{0};
  const std::string dir = absl::StrCat(::testing::TempDir(), "/file_store_", counter++);
  EXPECT_TRUE(MakeDirs(dir).ok()) << dir;
  return dir;
}

class StoreTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (GetParam() == "tcp") {
      absl::StatusOr<std::unique_ptr<TcpStoreServer>> server =
          TcpStoreServer::Start("127.0.0.1", 0);
      ASSERT_TRUE(server.ok()) << server.status();
      server_ = *std::move(server);
      address_ = absl::StrCat("tcp://127.0.0.1:", server_->port());
    } else {
      address_ = FreshDir();
    }
    absl::StatusOr<std::unique_ptr<KvStore>> store = OpenKvStore(address_);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
  }

  std::unique_ptr<TcpStoreServer> server_;
  std::string address_;
  std::unique_ptr<KvStore> store_;
};

TEST_P(StoreTest, SetGetAddCheck) {
  const std::string binary("a\0b/c\n", 6);
  ASSERT_TRUE(store_->Set("dir/key", binary).ok());
  EXPECT_EQ(*store_->Get("dir/key", absl::Seconds(1)), binary);
  ASSERT_TRUE(store_->Set("dir/key", "second").ok());
  EXPECT_EQ(*store_->Get("dir/key", absl::Seconds(1)), "second");

  EXPECT_EQ(*store_->Add("count", 5), 5);
  EXPECT_EQ(*store_->Add("count", -2), 3);
  EXPECT_EQ(*store_->Get("count", absl::Seconds(1)), "3");
  EXPECT_EQ(store_->Add("dir/key", 1).status().code(), absl::StatusCode::kInvalidArgument);

  EXPECT_TRUE(*store_->Check({"dir/key", "count"}));
  EXPECT_FALSE(*store_->Check({"dir/key", "nothing"}));
  EXPECT_TRUE(*store_->Check({}));
}

TEST_P(StoreTest, GetTimesOutNamingTheKey) {
  absl::StatusOr<std::string> value = store_->Get("never/set", absl::Milliseconds(100));
  EXPECT_EQ(value.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(value.status().message(), HasSubstr("never/set"));
}

TEST_P(StoreTest, GetWaitsForALaterSet) {
  absl::StatusOr<std::string> seen;
  std::thread reader([&] { seen = store_->Get("late", absl::Seconds(20)); });
  ASSERT_TRUE(store_->Set("late", "here").ok());
  reader.join();
  ASSERT_TRUE(seen.ok()) << seen.status();
  EXPECT_EQ(*seen, "here");
}

TEST_P(StoreTest, RefusesOversizedEntries) {
  EXPECT_EQ(store_->Set("big", std::string(kMaxKvValueBytes + 1, 'x')).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->Set(std::string(kMaxKvKeyBytes + 1, 'k'), "v").code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->Set("", "v").code(), absl::StatusCode::kInvalidArgument);
}

INSTANTIATE_TEST_SUITE_P(Stores, StoreTest, ::testing::Values("tcp", "file"));

TEST(TcpStoreTest, ServerRefusesAnOversizedFrame) {
  std::unique_ptr<TcpStoreServer> server = *TcpStoreServer::Start("127.0.0.1", 0);
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(server->port());
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  const unsigned char huge[4] = {0xf0, 0xff, 0xff, 0xff};  // a 4 GiB frame
  ASSERT_EQ(write(fd, huge, 4), 4);
  char reply[256];
  ssize_t got = 0, n;
  while ((n = read(fd, reply + got, sizeof(reply) - got)) > 0) got += n;  // until closed
  close(fd);
  ASSERT_GE(got, 5);
  EXPECT_EQ(reply[4], static_cast<char>(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(std::string(reply + 9, got - 9), HasSubstr("exceeds the limit"));
  // The server still serves everyone else.
  std::unique_ptr<TcpStore> store = *TcpStore::Connect("127.0.0.1", server->port());
  EXPECT_TRUE(store->Set("k", "v").ok());
}

TEST(TcpStoreTest, LostServerIsUnavailable) {
  auto server = *TcpStoreServer::Start("127.0.0.1", 0);
  const int port = server->port();
  std::unique_ptr<TcpStore> store = *TcpStore::Connect("127.0.0.1", port);
  absl::StatusOr<std::string> pending;
  std::thread waiter([&] { pending = store->Get("never", absl::Seconds(60)); });
  ASSERT_TRUE(store->Set("k", "v").ok());
  server.reset();
  waiter.join();
  EXPECT_EQ(pending.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(store->Set("k", "v").code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(TcpStore::Connect("127.0.0.1", port, absl::Milliseconds(100)).status().code(),
            absl::StatusCode::kUnavailable);
}

TEST(KvStoreAddressTest, ParsesAddresses) {
  std::string host;
  int port = 0;
  ASSERT_TRUE(ParseTcpAddress("tcp://10.0.0.2:2900", &host, &port).ok());
  EXPECT_EQ(host, "10.0.0.2");
  EXPECT_EQ(port, 2900);
  ASSERT_TRUE(ParseTcpAddress("tcp://[::1]:80", &host, &port).ok());
  EXPECT_EQ(host, "::1");
  EXPECT_FALSE(ParseTcpAddress("tcp://host", &host, &port).ok());
  EXPECT_FALSE(ParseTcpAddress("tcp://host:0", &host, &port).ok());
  EXPECT_FALSE(ParseTcpAddress("http://host:1", &host, &port).ok());
  EXPECT_EQ(OpenKvStore("ftp://host/dir").status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace modamba
