// Starting and stopping workers. The local launcher runs each worker as a
// process in its own session (so its process group, and anything it forks,
// can be signalled as one), with stdout and stderr appended to its log file.
// Workers outlive the coordinator: after a restart the coordinator re-adopts
// them by pid, and the recorded start time keeps it from ever signalling a
// recycled pid.
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

struct ProcessSpec {
  std::vector<std::string> argv;  // argv[0] is a path, or a name looked up in PATH
  // Set on top of the coordinator's environment.
  std::vector<std::pair<std::string, std::string>> env;
  // Removed from the inherited environment (e.g. the coordinator's token).
  std::vector<std::string> unset_env;
  std::string log_path;  // stdout and stderr are appended here
};

// How a process ended.
struct ProcessExit {
  int code = -1;                // 128 + N when killed by signal N; -1: unknown (not our child)
  int64_t peak_rss_bytes = -1;  // -1: unknown
  bool oom_killed = false;      // SIGKILL while the kernel's OOM killer ran
};

struct ProcessHandle {
  int64_t pid = 0;
  int64_t start_ticks = 0;  // /proc/PID/stat start time; 0: unknown
};

class Launcher {
 public:
  virtual ~Launcher() = default;
  virtual absl::StatusOr<ProcessHandle> Start(const ProcessSpec& spec) = 0;
  // SIGTERM (kill = false) or SIGKILL to the process's group, if it still runs.
  virtual void Stop(const ProcessHandle& process, bool kill) = 0;
  // How the process ended, once it has; nullopt while it runs.
  virtual std::optional<ProcessExit> Poll(const ProcessHandle& process) = 0;
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
