// launch --nproc=N [--log_dir=DIR] [--store=tcp|file] [--grace_period=10s] -- CMD ARGS...
//
// Starts N local ranks of CMD (see trainer/launcher.h) and exits with the
// first failing rank's exit code, or 0.
// It logs with fprintf, not glog, whose FLAGS_log_dir would clash with ours.
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "core/file_util.h"
#include "trainer/launcher.h"

ABSL_FLAG(int, nproc, 1, "Number of ranks to start.");
ABSL_FLAG(std::string, log_dir, "launch_logs", "Directory for each rank's rank_<r>.log.");
ABSL_FLAG(std::string, store, "tcp",
          "Rendezvous store: 'tcp' (a server in the launcher, on loopback) or 'file' (a fresh "
          "directory under --log_dir).");
ABSL_FLAG(absl::Duration, grace_period, absl::Seconds(10),
          "How long the other ranks get to exit after one fails, and after SIGTERM.");
ABSL_FLAG(int, tail_lines, 20, "Lines of the failing rank's log to print.");

namespace {

void PrintTail(const std::string& path, int lines) {
  absl::StatusOr<std::string> log = modamba::ReadFile(path);
  if (!log.ok()) return;
  std::vector<absl::string_view> all = absl::StrSplit(*log, '\n');
  if (!all.empty() && all.back().empty()) all.pop_back();
  const size_t start = all.size() > static_cast<size_t>(lines) ? all.size() - lines : 0;
  fprintf(stderr, "---- last lines of %s ----\n", path.c_str());
  for (size_t i = start; i < all.size(); ++i) {
    fprintf(stderr, "%.*s\n", static_cast<int>(all[i].size()), all[i].data());
  }
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "launch --nproc=N [--log_dir=DIR] [--store=tcp|file] -- CMD ARGS...");
  std::vector<char*> positional = absl::ParseCommandLine(argc, argv);

  modamba::LaunchOptions options;
  options.nproc = absl::GetFlag(FLAGS_nproc);
  options.log_dir = absl::GetFlag(FLAGS_log_dir);
  options.store = absl::GetFlag(FLAGS_store);
  options.grace_period = absl::GetFlag(FLAGS_grace_period);
  options.command.assign(positional.begin() + 1, positional.end());
  options.on_event = [](const std::string& line) { fprintf(stderr, "launch: %s\n", line.c_str()); };
  if (options.command.empty()) {
    fprintf(stderr, "%s\n", absl::ProgramUsageMessage().data());
    return 2;
  }
  absl::StatusOr<modamba::LaunchResult> result = modamba::Launch(options);
  if (!result.ok()) {
    fprintf(stderr, "launch: %s\n", result.status().ToString().c_str());
    return 2;
  }
  if (result->first_failed_rank >= 0) {
    PrintTail(absl::StrCat(options.log_dir, "/rank_", result->first_failed_rank, ".log"),
              absl::GetFlag(FLAGS_tail_lines));
    fprintf(stderr, "launch: rank %d failed first, with exit code %d\n", result->first_failed_rank,
            result->exit_code);
  }
  return result->exit_code;
}
