// The `modamba` client commands against a real coordinator.
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <iostream>
#include <sstream>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "core/file_util.h"
#include "gtest/gtest.h"
#include "tests/cluster.h"
#include "tools/cli/client_command.h"

namespace modamba {
namespace {

class CliTest : public ClusterTest {
 protected:
  // Runs `modamba ARGS...` with the cluster's address and token; stdout in `out`.
  int Run(std::vector<std::string> args, std::string* out) {
    args.push_back(absl::StrCat("--coordinator=127.0.0.1:", cluster_->grpc_port()));
    args.push_back("--token_file=" + cluster_->root() + "/token");
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    std::ostringstream captured;
    std::streambuf* old = std::cout.rdbuf(captured.rdbuf());
    const int code = RunClientCommand(static_cast<int>(argv.size()), argv.data());
    std::cout.rdbuf(old);
    *out = captured.str();
    return code;
  }

};

TEST_F(CliTest, SubmitWatchStatusLogsCheckpoints) {
  const std::string dataset = cluster_->MakeDataset("cli", "step_ms=10\n");
  const std::string spec_path = cluster_->root() + "/job.textproto";
  ASSERT_TRUE(WriteFileAtomic(spec_path, Cluster::Spec("cli-job", dataset, 40, 2, 1, 10)).ok());
  std::string out;
  ASSERT_EQ(Run({"submit", spec_path, "--watch"}, &out), 0) << out;
  EXPECT_TRUE(absl::StrContains(out, "submitted job-1 (cli-job)")) << out;
  EXPECT_TRUE(absl::StrContains(out, "100%  step 40/40")) << out;
  EXPECT_TRUE(absl::StrContains(out, "job-1 SUCCEEDED")) << out;
  EXPECT_TRUE(absl::StrContains(out, "final train loss: image ")) << out;

  // Logs are complete once the workers have exited and given their slots back.
  ASSERT_TRUE(
      cluster_->WaitJob("job-1", [](const v1::Job& j) { return !j.has_allocation(); }).ok());
  ASSERT_EQ(Run({"status"}, &out), 0);
  EXPECT_TRUE(absl::StrContains(out, "job-1")) << out;
  EXPECT_TRUE(absl::StrContains(out, "40/40")) << out;
  ASSERT_EQ(Run({"status", "job-1"}, &out), 0);
  EXPECT_TRUE(absl::StrContains(out, "evaluator-0")) << out;
  ASSERT_EQ(Run({"watch", "job-1"}, &out), 0);  // an ended job: at once
  ASSERT_EQ(Run({"checkpoints", "job-1"}, &out), 0);
  for (const char* step : {"10 ", "20 ", "30 ", "40 "})
    EXPECT_TRUE(absl::StrContains(out, step)) << out;
  EXPECT_TRUE(absl::StrContains(out, "deleted")) << out;
  ASSERT_EQ(Run({"logs", "job-1", "--worker=evaluator-0"}, &out), 0);
  EXPECT_TRUE(absl::StrContains(out, "fake_worker: done")) << out;
  ASSERT_EQ(Run({"logs", "job-1", "--worker=trainer-1", "--bytes=10"}, &out), 0);
  EXPECT_EQ(out.size(), 10u);
}

TEST_F(CliTest, CancelAndErrors) {
  const std::string dataset = cluster_->MakeDataset("long", "step_ms=20\n");
  const std::string spec_path = cluster_->root() + "/long.textproto";
  ASSERT_TRUE(WriteFileAtomic(spec_path, Cluster::Spec("long", dataset, 100000, 1, 0, 1000)).ok());
  std::string out;
  ASSERT_EQ(Run({"submit", spec_path}, &out), 0) << out;
  ASSERT_EQ(Run({"cancel", "job-1"}, &out), 0);
  EXPECT_TRUE(absl::StrContains(out, "job-1: CANCELLED")) << out;
  EXPECT_EQ(Run({"watch", "job-1"}, &out), 1);  // did not succeed

  EXPECT_EQ(Run({"status", "job-7"}, &out), 1);
  EXPECT_EQ(Run({"cancel"}, &out), 2);
  EXPECT_EQ(Run({"status", "--colour=red"}, &out), 2);
  EXPECT_EQ(Run({"frobnicate"}, &out), 2);
  ASSERT_TRUE(WriteFileAtomic(cluster_->root() + "/bad.textproto", "world_size: 0").ok());
  EXPECT_EQ(Run({"submit", cluster_->root() + "/bad.textproto"}, &out), 1);
}

TEST_F(CliTest, ACoordinatorThatIsAwayIsWaitedFor) {
  ASSERT_TRUE(cluster_->KillCoordinator().ok());
  std::thread restart([&] {
    absl::SleepFor(absl::Seconds(2));
    EXPECT_TRUE(cluster_->RestartCoordinator().ok());
  });
  std::string out;
  const int code = Run({"status"}, &out);
  restart.join();
  EXPECT_EQ(code, 0) << out;
}

// A coordinator started without a token: it writes one where the CLI looks,
// and the CLI finds it unasked.
class TokenDiscoveryTest : public ClusterTest {
 protected:
  ClusterOptions Options() override {
    home_ = std::string(getenv("TEST_TMPDIR")) + "/home";
    setenv("HOME", home_.c_str(), 1);
    for (const char* name : {"XDG_CONFIG_HOME", "MODAMBA_TOKEN", "MODAMBA_TOKEN_FILE"}) unsetenv(name);
    ClusterOptions options;
    options.default_token_file = true;
    return options;
  }
  int Run(std::vector<std::string> args, std::string* err) {
    args.push_back(absl::StrCat("--coordinator=127.0.0.1:", cluster_->grpc_port()));
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    std::ostringstream captured, ignored;
    std::streambuf* old_err = std::cerr.rdbuf(captured.rdbuf());
    std::streambuf* old_out = std::cout.rdbuf(ignored.rdbuf());
    const int code = RunClientCommand(static_cast<int>(argv.size()), argv.data());
    std::cerr.rdbuf(old_err);
    std::cout.rdbuf(old_out);
    *err = captured.str();
    return code;
  }
  std::string home_;
};

TEST_F(TokenDiscoveryTest, TheCliFindsTheCoordinatorsTokenAndSaysWhereItLooked) {
  const std::string path = home_ + "/.config/modamba/token";
  struct stat st;
  ASSERT_EQ(stat(path.c_str(), &st), 0) << path;
  EXPECT_EQ(st.st_mode & 0777, 0600);
  std::string err;
  EXPECT_EQ(Run({"status"}, &err), 0) << err;

  ASSERT_TRUE(WriteFileAtomic(path, "not-the-token\n").ok());
  EXPECT_EQ(Run({"status"}, &err), 1);
  EXPECT_TRUE(absl::StrContains(err, "wrong bearer token")) << err;
  EXPECT_TRUE(absl::StrContains(err, path)) << err;
  ASSERT_EQ(unlink(path.c_str()), 0);
  EXPECT_EQ(Run({"status"}, &err), 1);
  EXPECT_TRUE(absl::StrContains(err, "no token")) << err;
  EXPECT_TRUE(absl::StrContains(err, path)) << err;
}

}  // namespace
}  // namespace modamba
