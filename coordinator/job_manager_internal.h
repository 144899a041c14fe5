// What the two halves of the job manager (job_manager.cc and
// job_manager_workers.cc) share: its private records and small helpers.
#ifndef MODAMBA_COORDINATOR_JOB_MANAGER_INTERNAL_H_
#define MODAMBA_COORDINATOR_JOB_MANAGER_INTERNAL_H_

#include <string.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "coordinator/job_manager.h"

namespace modamba {

struct JobManager::Worker {
  v1::WorkerInfo info;                          // has no ref until the slot is first launched
  absl::Time last_seen;                         // launch, registration or heartbeat
  absl::Time kill_at = absl::InfiniteFuture();  // when SIGKILL follows SIGTERM
  bool gone = true;                             // its process has ended (or never started)
  int64_t claimed_step = -1;                    // evaluators: the checkpoint being evaluated

  ProcessHandle handle() const {
    return {info.pid(), info.pid_start_ticks(), info.cluster_job_id()};
  }
};

struct JobManager::JobEntry {
  v1::Job job;                                        // without workers
  std::vector<Worker> trainers;                       // by rank
  std::vector<Worker> evaluators;                     // by index
  std::map<int64_t, v1::CheckpointInfo> checkpoints;  // by step
  std::vector<v1::MetricPoint> metrics;               // by seq, which starts at 1
  int64_t version = 0;
  // The old generation is being stopped; the new one starts when it is gone.
  bool restart_pending = false;
  // The last deterministic failure (job_manager.cc), to stop a second repeat.
  std::string last_failure;
};

namespace internal {

inline bool IsTerminal(v1::JobState state) {
  return state == v1::JOB_SUCCEEDED || state == v1::JOB_FAILED || state == v1::JOB_CANCELLED;
}

inline int64_t NowMs() { return absl::ToUnixMillis(absl::Now()); }

inline std::string WorkerName(const v1::WorkerRef& ref) {
  return absl::StrCat(ref.role() == v1::ROLE_TRAINER ? "trainer-" : "evaluator-", ref.rank());
}

inline std::string HostName() {
  char name[256] = {};
  gethostname(name, sizeof(name) - 1);
  return name;
}

inline constexpr char kOomKilled[] = "was killed by the kernel's OOM killer: out of memory";

inline std::string DescribeExit(const ProcessExit& exit) {
  const int code = exit.code;
  if (!exit.cause.empty()) return exit.cause;
  if (code < 0) return "ended while the coordinator was away (exit code unknown)";
  const std::string rss =
      exit.peak_rss_bytes > 0 ? absl::StrFormat("peak RSS %.2f GiB", exit.peak_rss_bytes / 1073741824.0)
                              : "peak RSS unknown";
  if (exit.oom_killed) return absl::StrCat(kOomKilled, " (", rss, ")");
  if (code > 128) {
    return absl::StrCat("was killed by signal ", code - 128, " (", strsignal(code - 128), "; ", rss,
                        ")");
  }
  return absl::StrCat("exited with code ", code);
}

// The first point whose seq is greater than `after_seq`.
inline std::vector<v1::MetricPoint>::const_iterator FirstAfter(
    const std::vector<v1::MetricPoint>& points, int64_t after_seq) {
  return std::upper_bound(
      points.begin(), points.end(), after_seq,
      [](int64_t seq, const v1::MetricPoint& point) { return seq < point.seq(); });
}

}  // namespace internal
}  // namespace modamba

#endif  // MODAMBA_COORDINATOR_JOB_MANAGER_INTERNAL_H_
