#include "trainer/test_util.h"

#include <stdlib.h>

#include <atomic>

#include "absl/strings/str_cat.h"
#include "core/file_util.h"
#include "gtest/gtest.h"

namespace modamba {

std::string FreshTestDir(const std::string& name) {
  static std::atomic<int> counter{0};
  const char* tmp = getenv("TEST_TMPDIR");
  const std::string dir = absl::StrCat(tmp != nullptr ? tmp : "/tmp", "/", name, "_",
                                       counter.fetch_add(1), "_", getpid());
  EXPECT_TRUE(MakeDirs(dir).ok()) << dir;
  return dir;
}

RanksRun RunRanks(const std::string& binary, int nproc, std::vector<std::string> args,
                  const std::string& store, std::vector<std::pair<std::string, std::string>> env,
                  absl::Duration grace_period) {
  LaunchOptions options;
  options.nproc = nproc;
  options.command = {binary};
  options.command.insert(options.command.end(), args.begin(), args.end());
  options.log_dir = FreshTestDir("ranks");
  options.store = store;
  options.env = std::move(env);
  options.grace_period = grace_period;
  RanksRun run;
  absl::StatusOr<LaunchResult> result = Launch(options);
  EXPECT_TRUE(result.ok()) << result.status();
  if (!result.ok()) return run;
  run.result = *std::move(result);
  for (int r = 0; r < nproc; ++r) {
    absl::StatusOr<std::string> log = ReadFile(absl::StrCat(options.log_dir, "/rank_", r, ".log"));
    run.logs.push_back(log.ok() ? *log : log.status().ToString());
  }
  return run;
}

}  // namespace modamba
