#include "coordinator/launcher.h"

#include <signal.h>
#include <unistd.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "core/file_util.h"
#include "gtest/gtest.h"

namespace modamba {
namespace {

std::string Temp(const char* name) { return absl::StrCat(getenv("TEST_TMPDIR"), "/", name); }

// Polls until the process ends; its exit code.
int WaitExit(Launcher* launcher, const ProcessHandle& process) {
  for (int i = 0; i < 500; ++i) {
    if (std::optional<ProcessExit> exit = launcher->Poll(process)) return exit->code;
    absl::SleepFor(absl::Milliseconds(10));
  }
  return -999;
}

TEST(LauncherTest, RunsAWorkerWithItsEnvironmentAndLog) {
  LocalLauncher launcher;
  setenv("SECRET_OF_THE_COORDINATOR", "x", 1);
  ProcessSpec spec;
  spec.argv = {"sh", "-c",
               "echo out $MODAMBA_RANK ${SECRET_OF_THE_COORDINATOR:-unset}; echo err >&2; exit 7"};
  spec.env = {{"MODAMBA_RANK", "3"}};
  spec.unset_env = {"SECRET_OF_THE_COORDINATOR"};
  spec.log_path = Temp("worker.log");
  auto process = launcher.Start(spec);
  ASSERT_TRUE(process.ok()) << process.status();
  EXPECT_GT(process->start_ticks, 0);
  EXPECT_EQ(WaitExit(&launcher, *process), 7);
  const std::string log = ReadFile(spec.log_path).value_or("");
  EXPECT_TRUE(absl::StrContains(log, "out 3 unset")) << log;
  EXPECT_TRUE(absl::StrContains(log, "err")) << log;
}

TEST(LauncherTest, StopEndsTheWholeProcessGroup) {
  LocalLauncher launcher;
  ProcessSpec spec;
  // The worker forks a child that would outlive it; SIGTERM is ignored, so
  // only SIGKILL ends them.
  const std::string child_pid = Temp("child.pid");
  spec.argv = {"sh", "-c",
               absl::StrCat("trap '' TERM; sleep 100 & echo $! > ", child_pid, "; wait")};
  spec.log_path = Temp("group.log");
  auto process = launcher.Start(spec);
  ASSERT_TRUE(process.ok());
  pid_t child = 0;
  for (int i = 0; i < 500 && child == 0; ++i) {
    child = std::atoi(ReadFile(child_pid).value_or("0").c_str());
    absl::SleepFor(absl::Milliseconds(10));
  }
  ASSERT_GT(child, 0);
  launcher.Stop(*process, /*kill=*/false);
  absl::SleepFor(absl::Milliseconds(200));
  EXPECT_FALSE(launcher.Poll(*process).has_value()) << "SIGTERM was to be ignored";
  launcher.Stop(*process, /*kill=*/true);
  EXPECT_EQ(WaitExit(&launcher, *process), 128 + SIGKILL);
  for (int i = 0; i < 200 && ProcessStartTicks(child) != 0; ++i)
    absl::SleepFor(absl::Milliseconds(10));
  EXPECT_EQ(ProcessStartTicks(child), 0) << "the child survived";
}

TEST(LauncherTest, RecognisesProcessesItDidNotStart) {
  LocalLauncher launcher;
  // Our own pid is alive but not our child.
  ProcessHandle self{getpid(), ProcessStartTicks(getpid())};
  EXPECT_FALSE(launcher.Poll(self).has_value());
  // The same pid with another start time is a recycled pid: gone, and never signalled.
  ProcessHandle recycled{getpid(), self.start_ticks + 1};
  EXPECT_EQ(launcher.Poll(recycled)->code, -1);
  launcher.Stop(recycled, /*kill=*/true);  // must not kill this test
  EXPECT_EQ(launcher.Poll(ProcessHandle{0, 0})->code, -1);
}

TEST(LauncherTest, AMissingProgramIsAnError) {
  LocalLauncher launcher;
  ProcessSpec spec;
  spec.argv = {"/nonexistent/worker"};
  spec.log_path = Temp("missing.log");
  EXPECT_FALSE(launcher.Start(spec).ok());
}

}  // namespace
}  // namespace modamba
