// Starting and stopping workers. The local launcher runs each worker as a
// process in its own session (so its process group, and anything it forks,
// can be signalled as one), with stdout and stderr appended to its log file.
// Workers outlive the coordinator: after a restart the coordinator re-adopts
// them by pid, and the recorded start time keeps it from ever signalling a
// recycled pid.
#ifndef MODAMBA_COORDINATOR_LAUNCHER_H_
#define MODAMBA_COORDINATOR_LAUNCHER_H_

#include <cstdint>
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
  // The exit code once the process has ended (128 + N when killed by signal N;
  // -1 when it was not our child, so its code is unknown); nullopt while it runs.
  virtual std::optional<int> Poll(const ProcessHandle& process) = 0;
};

class LocalLauncher : public Launcher {
 public:
  absl::StatusOr<ProcessHandle> Start(const ProcessSpec& spec) override;
  void Stop(const ProcessHandle& process, bool kill) override;
  std::optional<int> Poll(const ProcessHandle& process) override;
};

// The start time of process `pid` in clock ticks since boot; 0 when it does not exist.
int64_t ProcessStartTicks(int64_t pid);

}  // namespace modamba

#endif  // MODAMBA_COORDINATOR_LAUNCHER_H_
