// Starts N local ranks of one program, for runs without a coordinator (and
// for the multi-process tests).
//
// Every rank is its own process group with its own log file and gets
//   MODAMBA_RANK, MODAMBA_WORLD_SIZE, MODAMBA_STORE, MODAMBA_LOCAL_RANK
// in its environment (the local rank picks the GPU; here it is the rank). The store is a
// TcpStoreServer on loopback run by the launcher itself (so it outlives any rank) or a fresh file
// store directory. SIGINT and SIGTERM sent to the launcher are passed on to every rank. When a rank
// fails, the launcher says which, gives the others the grace period to notice and exit, then stops
// them (SIGTERM, and SIGKILL a grace period later).
#ifndef MODAMBA_TRAINER_LAUNCHER_H_
#define MODAMBA_TRAINER_LAUNCHER_H_

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace modamba {

struct LaunchOptions {
  int nproc = 1;
  // argv of every rank; command[0] is looked up in PATH.
  std::vector<std::string> command;
  // rank_<r>.log of each rank goes here (created if missing).
  std::string log_dir;
  // "tcp" or "file" (a directory under log_dir).
  std::string store = "tcp";
  absl::Duration grace_period = absl::Seconds(10);
  // Extra environment of every rank; it may override the MODAMBA_* values
  // (a test pointing the ranks at a store of its own, say).
  std::vector<std::pair<std::string, std::string>> env;
  // Called with each event line (see LaunchResult::events) as it happens.
  std::function<void(const std::string&)> on_event;
};

struct RankExit {
  // Exit code, or 128 + signal number for a rank ended by a signal.
  int code = 0;
  // Whether the launcher itself ended it (after another rank failed, or to
  // pass on a signal).
  bool stopped_by_launcher = false;
};

struct LaunchResult {
  // 0 when every rank exited 0, else the code of the first rank that failed.
  int exit_code = 0;
  int first_failed_rank = -1;  // -1: none failed
  std::vector<RankExit> ranks;
  // One line per notable event, e.g. "rank 1 was killed by signal 9 (Killed)".
  std::vector<std::string> events;
};

// Runs the ranks to the end. Errors are for failures of the launcher itself
// (bad options, no log directory, fork failed); ranks that fail are reported
// in the result. Call it from the main thread: it blocks SIGINT, SIGTERM and
// SIGCHLD in that thread while it runs, to receive them synchronously.
absl::StatusOr<LaunchResult> Launch(const LaunchOptions& options);

}  // namespace modamba

#endif  // MODAMBA_TRAINER_LAUNCHER_H_
