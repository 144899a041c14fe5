// Helpers of the multi-process tests: run the test worker as N ranks.
#ifndef MODAMBA_TRAINER_TEST_UTIL_H_
#define MODAMBA_TRAINER_TEST_UTIL_H_

#include <string>
#include <utility>
#include <vector>

#include "trainer/launcher.h"

namespace modamba {

struct RanksRun {
  LaunchResult result;
  std::vector<std::string> logs;  // each rank's output
};

// Launches `nproc` ranks of `binary` (a path relative to the test's runfiles,
// e.g. "trainer/test_worker") with `args`, logging to a fresh directory under
// the test's temporary directory. Fails the test when the launch itself fails.
RanksRun RunRanks(const std::string& binary, int nproc, std::vector<std::string> args,
                  const std::string& store = "tcp",
                  std::vector<std::pair<std::string, std::string>> env = {},
                  absl::Duration grace_period = absl::Seconds(10));

// A fresh directory under the test's temporary directory.
std::string FreshTestDir(const std::string& name);

}  // namespace modamba

#endif  // MODAMBA_TRAINER_TEST_UTIL_H_
