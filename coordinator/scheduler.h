// The host's devices and who holds them. Each worker of a job takes one GPU
// ("gpu" jobs) or one CPU slot ("cpu" jobs) for the job's whole life, restarts
// included. Jobs start in submission order: the first pending job that does
// not fit blocks the ones behind it, so a large job is never starved by a
// stream of small ones. Not thread-safe (the job manager's lock guards it).
#ifndef MODAMBA_COORDINATOR_SCHEDULER_H_
#define MODAMBA_COORDINATOR_SCHEDULER_H_

#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "proto/job.pb.h"

namespace modamba {

class Scheduler {
 public:
  Scheduler(int gpus, int cpu_slots);

  // Allocations for the pending jobs (id, spec; in submission order) that
  // start now; they are marked busy.
  std::vector<std::pair<std::string, v1::Allocation>> Schedule(
      const std::vector<std::pair<std::string, const v1::JobSpec*>>& pending);

  // Marks an allocation restored from the database busy again.
  absl::Status Restore(const v1::Allocation& allocation);
  void Release(const v1::Allocation& allocation);

  int gpus() const { return static_cast<int>(gpu_busy_.size()); }
  int cpu_slots() const { return cpu_slots_; }
  int free_cpu_slots() const { return cpu_slots_ - cpu_busy_; }
  int free_gpus() const;

 private:
  std::vector<bool> gpu_busy_;
  const int cpu_slots_;
  int cpu_busy_ = 0;
};

}  // namespace modamba

#endif  // MODAMBA_COORDINATOR_SCHEDULER_H_
