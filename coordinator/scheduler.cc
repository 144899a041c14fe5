#include "coordinator/scheduler.h"

#include "absl/strings/str_cat.h"
#include "coordinator/job_spec.h"

namespace modamba {

Scheduler::Scheduler(int gpus, int cpu_slots) : gpu_busy_(gpus, false), cpu_slots_(cpu_slots) {}

int Scheduler::free_gpus() const {
  int n = 0;
  for (bool busy : gpu_busy_) n += busy ? 0 : 1;
  return n;
}

std::vector<std::pair<std::string, v1::Allocation>> Scheduler::Schedule(
    const std::vector<std::pair<std::string, const v1::JobSpec*>>& pending) {
  std::vector<std::pair<std::string, v1::Allocation>> started;
  for (const auto& [id, spec] : pending) {
    const int need = WorkersOf(*spec);
    v1::Allocation allocation;
    if (spec->device() == "gpu") {
      if (free_gpus() < need) break;
      for (int g = 0; g < gpus() && allocation.gpus_size() < need; ++g) {
        if (!gpu_busy_[g]) {
          gpu_busy_[g] = true;
          allocation.add_gpus(g);
        }
      }
    } else {
      if (free_cpu_slots() < need) break;
      cpu_busy_ += need;
      allocation.set_cpu_slots(need);
    }
    started.emplace_back(id, std::move(allocation));
  }
  return started;
}

absl::Status Scheduler::Restore(const v1::Allocation& allocation) {
  for (int g : allocation.gpus()) {
    if (g < 0 || g >= gpus() || gpu_busy_[g]) {
      return absl::FailedPreconditionError(
          absl::StrCat("GPU ", g, " of a running job is missing or taken (--gpus=", gpus(), ")"));
    }
  }
  if (cpu_busy_ + allocation.cpu_slots() > cpu_slots_) {
    return absl::FailedPreconditionError(
        absl::StrCat("running jobs hold more CPU slots than --cpu_slots=", cpu_slots_));
  }
  for (int g : allocation.gpus()) gpu_busy_[g] = true;
  cpu_busy_ += allocation.cpu_slots();
  return absl::OkStatus();
}

void Scheduler::Release(const v1::Allocation& allocation) {
  for (int g : allocation.gpus()) {
    if (g >= 0 && g < gpus()) gpu_busy_[g] = false;
  }
  cpu_busy_ -= allocation.cpu_slots();
}

}  // namespace modamba
