// Launching workers on a Slurm cluster through its command line (sbatch,
// srun, squeue, scancel). Each group of a job (its trainer ranks, or one
// evaluator) holds one Slurm job, an allocation of the nodes, tasks and GPUs
// its Placement asks for, submitted with `sbatch --no-requeue` and kept alive
// by a batch step that only sleeps; each worker is one job step in it,
// `srun --jobid=ID --relative=NODE --overlap`, whose client runs on the
// coordinator's host as a local process (so its exit is the worker's, and
// SIGTERM to it cancels the step). A client started while the allocation
// still waits in the queue waits with it.
//
// The coordinator keeps owning restarts: the allocation is never requeued by
// Slurm. A worker whose allocation ends (NODE_FAIL, PREEMPTED, TIMEOUT,
// CANCELLED) fails with that cause, its group restarts from the newest
// complete checkpoint, and the new generation's first worker submits a new
// allocation. Allocations are found again by name
// (`<prefix>-<job>-<group>`), so a restarted coordinator reuses them.
#ifndef MODAMBA_COORDINATOR_SLURM_LAUNCHER_H_
#define MODAMBA_COORDINATOR_SLURM_LAUNCHER_H_

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "coordinator/launcher.h"

namespace modamba {

struct SlurmOptions {
  std::string job_prefix = "modamba";  // Slurm job names: PREFIX-<job>-<group>
  std::string partition;               // for placements without one; "": the cluster's default
  // squeue is asked at most this often (a tick polls every worker).
  absl::Duration refresh = absl::Seconds(1);
};

class SlurmLauncher : public Launcher {
 public:
  explicit SlurmLauncher(SlurmOptions options) : options_(std::move(options)) {}

  absl::StatusOr<ProcessHandle> Start(const ProcessSpec& spec) override;
  void Stop(const ProcessHandle& process, bool kill) override;
  std::optional<ProcessExit> Poll(const ProcessHandle& process) override;
  std::optional<ClusterJobState> ClusterState(const ProcessHandle& process) override;
  void Release(const std::string& job_id) override;

 private:
  struct SlurmJob {
    std::string name;
    std::string state;
    std::string reason;  // why it waits or ended ("Resources", "None")
  };
  // Re-reads our Slurm jobs (squeue) unless read within options_.refresh.
  void Refresh(bool force);
  // The id of the group's allocation, submitted when it has none alive.
  absl::StatusOr<std::string> Allocation(const ProcessSpec& spec);

  const SlurmOptions options_;
  LocalLauncher local_;                   // the srun clients
  std::map<std::string, SlurmJob> jobs_;  // by Slurm job id
  // Exits of srun clients (by pid) whose allocation is still COMPLETING, and
  // until when they wait for its final state.
  std::map<int64_t, std::pair<ProcessExit, absl::Time>> held_;
  absl::Time refreshed_ = absl::InfinitePast();
};

// Slurm's job states: which mean the job still holds (or waits for) its
// nodes, and which end it for a reason outside its own program.
bool SlurmJobAlive(const std::string& state);
bool SlurmJobQueued(const std::string& state);

// The sbatch command line that allocates `placement` (named `name`, its batch
// step's output to `log_path`); `partition` when the placement names none.
std::vector<std::string> SbatchCommand(const Placement& placement, const std::string& name,
                                       const std::string& partition, const std::string& log_path);

}  // namespace modamba

#endif  // MODAMBA_COORDINATOR_SLURM_LAUNCHER_H_
