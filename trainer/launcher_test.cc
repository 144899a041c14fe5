#include "trainer/launcher.h"

#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>

#include "absl/strings/str_cat.h"
#include "core/file_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

extern char** environ;

namespace modamba {
namespace {

using ::testing::Contains;
using ::testing::HasSubstr;

std::string TestDir(const std::string& name) {
  static std::atomic<int> counter{0};
  const char* tmp = getenv("TEST_TMPDIR");
  return absl::StrCat(tmp != nullptr ? tmp : "/tmp", "/", name, "_", counter++, "_", getpid());
}

LaunchOptions Shell(int nproc, const std::string& script) {
  LaunchOptions options;
  options.nproc = nproc;
  options.command = {"/bin/sh", "-c", script};
  options.log_dir = TestDir("launch");
  return options;
}

std::string Log(const LaunchOptions& options, int rank) {
  absl::StatusOr<std::string> log = ReadFile(absl::StrCat(options.log_dir, "/rank_", rank, ".log"));
  return log.ok() ? *log : log.status().ToString();
}

TEST(LauncherTest, GivesEveryRankItsEnvironmentAndLog) {
  for (const std::string store : {"tcp", "file"}) {
    LaunchOptions options = Shell(
        3,
        "echo rank=$MODAMBA_RANK size=$MODAMBA_WORLD_SIZE extra=$EXTRA; "
        "echo store=$MODAMBA_STORE; "
        "case $MODAMBA_STORE in tcp://127.0.0.1:*) ;; *) test -d $MODAMBA_STORE || exit 9;; esac");
    options.store = store;
    options.env = {{"EXTRA", "yes"}};
    absl::StatusOr<LaunchResult> result = Launch(options);
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_EQ(result->exit_code, 0);
    EXPECT_EQ(result->first_failed_rank, -1);
    for (int r = 0; r < 3; ++r) {
      EXPECT_EQ(result->ranks[r].code, 0) << Log(options, r);
      EXPECT_THAT(Log(options, r), HasSubstr(absl::StrCat("rank=", r, " size=3 extra=yes")));
    }
  }
}

TEST(LauncherTest, StopsTheOthersWhenOneFails) {
  LaunchOptions options = Shell(3, "if [ $MODAMBA_RANK = 1 ]; then exit 7; fi; exec sleep 60");
  options.grace_period = absl::Milliseconds(200);
  absl::StatusOr<LaunchResult> result = Launch(options);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->exit_code, 7);
  EXPECT_EQ(result->first_failed_rank, 1);
  EXPECT_FALSE(result->ranks[1].stopped_by_launcher);
  for (int r : {0, 2}) {
    EXPECT_TRUE(result->ranks[r].stopped_by_launcher);
    EXPECT_EQ(result->ranks[r].code, 128 + SIGTERM);
  }
  EXPECT_THAT(result->events, Contains(HasSubstr("rank 1 exited with code 7")));
}

TEST(LauncherTest, KillsRanksThatIgnoreSigterm) {
  LaunchOptions options = Shell(2,
                                "trap '' TERM; if [ $MODAMBA_RANK = 0 ]; then exit 3; fi; "
                                "while true; do sleep 0.05; done");
  options.grace_period = absl::Milliseconds(200);
  absl::StatusOr<LaunchResult> result = Launch(options);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->exit_code, 3);
  EXPECT_EQ(result->ranks[1].code, 128 + SIGKILL);
}

TEST(LauncherTest, ReportsARankKilledBySignal) {
  LaunchOptions options = Shell(2, "if [ $MODAMBA_RANK = 1 ]; then kill -9 $$; fi; exit 0");
  absl::StatusOr<LaunchResult> result = Launch(options);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->exit_code, 128 + SIGKILL);
  EXPECT_EQ(result->first_failed_rank, 1);
  EXPECT_THAT(result->events, Contains(HasSubstr("rank 1 was killed by signal 9")));
}

TEST(LauncherTest, ReportsACommandThatCannotStart) {
  LaunchOptions options;
  options.nproc = 1;
  options.command = {"/nonexistent/program"};
  options.log_dir = TestDir("launch");
  absl::StatusOr<LaunchResult> result = Launch(options);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->exit_code, 127);
  EXPECT_THAT(Log(options, 0), HasSubstr("exec failed"));
}

TEST(LauncherTest, RefusesBadOptions) {
  LaunchOptions options = Shell(0, "true");
  EXPECT_EQ(Launch(options).status().code(), absl::StatusCode::kInvalidArgument);
  options = Shell(1, "true");
  options.store = "redis";
  EXPECT_EQ(Launch(options).status().code(), absl::StatusCode::kInvalidArgument);
  options = Shell(1, "true");
  options.command.clear();
  EXPECT_EQ(Launch(options).status().code(), absl::StatusCode::kInvalidArgument);
}

// The launch binary passes SIGTERM on to every rank and exits with the code
// of the first rank that then fails.
TEST(LaunchBinaryTest, ForwardsSigterm) {
  const std::string dir = TestDir("launch_binary");
  const std::string log_flag = absl::StrCat("--log_dir=", dir);
  const std::string script =
      "trap 'echo got TERM; exit 5' TERM; echo started; while true; do sleep 0.05; done";
  std::vector<std::string> args = {"trainer/launch", "--nproc=2", log_flag, "--",
                                   "/bin/sh",        "-c",        script};
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  ASSERT_EQ(posix_spawn(&pid, argv[0], nullptr, nullptr, argv.data(), environ), 0);
  // Both ranks are up once their logs say so.
  for (int r = 0; r < 2; ++r) {
    const std::string log = absl::StrCat(dir, "/rank_", r, ".log");
    while (true) {
      absl::StatusOr<std::string> text = ReadFile(log);
      if (text.ok() && text->find("started") != std::string::npos) break;
      int status = 0;
      ASSERT_EQ(waitpid(pid, &status, WNOHANG), 0) << "launch ended before its ranks started";
      usleep(10000);
    }
  }
  kill(pid, SIGTERM);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 5);
  for (int r = 0; r < 2; ++r) {
    EXPECT_THAT(*ReadFile(absl::StrCat(dir, "/rank_", r, ".log")), HasSubstr("got TERM"));
  }
}

}  // namespace
}  // namespace modamba
