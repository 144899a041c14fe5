// Starting and stopping workers. The local launcher runs each worker as a
// process in its own session (so its process group, and anything it forks,
// can be signalled as one), with stdout and stderr appended to its log file.
// Workers outlive the coordinator: after a restart the coordinator re-adopts
// them by pid, and the recorded start time keeps it from ever signalling a
// recycled pid. The Slurm launcher (slurm_launcher.h) runs them on a cluster.
#ifndef MODAMBA_COORDINATOR_LAUNCHER_H_
#define MODAMBA_COORDINATOR_LAUNCHER_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace modamba {

// Where a worker runs on a cluster; the local launcher ignores it. The
// workers of one group share one allocation (a Slurm job) of `nodes` nodes
// with `tasks_per_node` workers on each.
struct Placement {
  std::string job_id;  // the coordinator's job ("job-3")
  std::string group;   // unique within the job ("trainers", "evaluator-0")
  std::string name;    // the worker incarnation ("trainer-1-g2"), unique within the group
  int nodes = 1;
  int tasks_per_node = 1;
  int gpus_per_task = 0;
  int cpus_per_task = 0;       // 0: the cluster's default
  int node = 0;                // the worker's node within the allocation, in [0, nodes)
  // A flag the worker is given its node's host name with ("--hostname"), so
  // that its peers on other nodes reach it; "": none.
  std::string host_flag;
  std::string partition;       // "": the launcher's default
  int time_limit_minutes = 0;  // 0: the partition's limit
};

struct ProcessSpec {
  std::vector<std::string> argv;  // argv[0] is a path, or a name looked up in PATH
  // Set on top of the coordinator's environment.
  std::vector<std::pair<std::string, std::string>> env;
  // Removed from the inherited environment (e.g. the coordinator's token).
  std::vector<std::string> unset_env;
  std::string log_path;  // stdout and stderr are appended here
  Placement placement;
};

// How a process ended.
struct ProcessExit {
  int code = -1;                // 128 + N when killed by signal N; -1: unknown (not our child)
  int64_t peak_rss_bytes = -1;  // -1: unknown
  bool oom_killed = false;      // SIGKILL while the kernel's OOM killer ran
  // Why it ended when the cluster ended it ("its Slurm job 12 ended in
  // NODE_FAIL"); empty otherwise.
  std::string cause;
};

struct ProcessHandle {
  int64_t pid = 0;
  int64_t start_ticks = 0;  // /proc/PID/stat start time; 0: unknown
  std::string cluster_job;  // the cluster's job it runs in (Slurm's job id); "" locally
};

// A cluster job as its scheduler sees it.
struct ClusterJobState {
  std::string state;    // the scheduler's word: "PENDING", "RUNNING", "NODE_FAIL", ...
  bool queued = false;  // waiting for resources: the worker cannot register yet
};

class Launcher {
 public:
  virtual ~Launcher() = default;
  virtual absl::StatusOr<ProcessHandle> Start(const ProcessSpec& spec) = 0;
  // SIGTERM (kill = false) or SIGKILL to the process's group, if it still runs.
  virtual void Stop(const ProcessHandle& process, bool kill) = 0;
  // How the process ended, once it has; nullopt while it runs.
  virtual std::optional<ProcessExit> Poll(const ProcessHandle& process) = 0;
  // The state of the cluster job the process runs in; nullopt locally.
  virtual std::optional<ClusterJobState> ClusterState(const ProcessHandle& process) {
    return std::nullopt;
  }
  // The job has ended and none of its processes runs: what the cluster still
  // holds for it (allocations) is given back.
  virtual void Release(const std::string& job_id) {}
};

class LocalLauncher : public Launcher {
 public:
  absl::StatusOr<ProcessHandle> Start(const ProcessSpec& spec) override;
  void Stop(const ProcessHandle& process, bool kill) override;
  std::optional<ProcessExit> Poll(const ProcessHandle& process) override;

 private:
  // The kernel's count of OOM kills (/proc/vmstat oom_kill) when each child
  // started: a child killed by SIGKILL after it grew was the OOM killer's.
  std::map<int64_t, int64_t> oom_kills_at_start_;
};

// The kernel's count of processes the OOM killer has killed since boot; -1
// when the kernel does not say.
int64_t OomKillCount();

// The start time of process `pid` in clock ticks since boot; 0 when it does not exist.
int64_t ProcessStartTicks(int64_t pid);

}  // namespace modamba

#endif  // MODAMBA_COORDINATOR_LAUNCHER_H_
