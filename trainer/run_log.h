// A run directory's record of training, the files `modamba compare` reads:
//
//   config.textproto  the resolved TrainConfig that ran
//   metrics.jsonl     one JSON line per step, appended (a resumed run or a
//                     restarted coordinator job appends the steps it
//                     repeats; readers keep the latest line of a step):
//     {"step": S, "flops": F,
//      "loss": {"text": ..., "image": ..., "speech": ..., "objective": ...},
//      "scalars": {"lr", "grad_norm", "tokens_per_s", "mfu", "<modality>_tokens"},
//      "val": {"text": ..., "objective": ...},          (at evaluations only)
//      "profile": {"step_ms", "compute_ms", "exposed_comm_ms", "idle_ms"}}
//                                                        (a list each, by rank;
//                                                        trainer/fsdp.h StepProfile)
//
// The per-modality names and scalars are those of the coordinator's
// MetricPoints (LossMetrics, StepScalars), so a coordinator job's run
// directory, `modamba train`'s and the experiment scripts' read alike.
// Written by `modamba train`, modamba-trainer --metrics_out and, under the
// coordinator, trainer rank 0 into RUN_ROOT/<job>/.
#ifndef MODAMBA_TRAINER_RUN_LOG_H_
#define MODAMBA_TRAINER_RUN_LOG_H_

#include <fstream>
#include <map>
#include <string>

#include "absl/status/statusor.h"
#include "core/model.h"
#include "proto/config.pb.h"
#include "trainer/train_loop.h"

namespace modamba {

// Per-modality mean losses ("text", "image", ..., "diffusion_mse").
std::map<std::string, double> LossMetrics(const LossReport& report);
// The step's scalars: objective, lr, grad_norm, tokens_per_s, mfu, <modality>_tokens.
std::map<std::string, double> StepScalars(const StepRecord& record);
// One metrics.jsonl line (no newline).
std::string MetricsLine(const StepRecord& record);

// Writes dir/config.textproto atomically.
absl::Status WriteRunConfig(const std::string& dir, const v1::TrainConfig& config);

// A metrics.jsonl opened for appending.
class MetricsFile {
 public:
  static absl::StatusOr<std::unique_ptr<MetricsFile>> Open(const std::string& path);
  // Appends and flushes one line.
  absl::Status Append(const StepRecord& record);
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::ofstream out_;
};

}  // namespace modamba

#endif  // MODAMBA_TRAINER_RUN_LOG_H_
