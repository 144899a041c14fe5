// The single-process training loop of `modamba train`: byte-level text, one
// backend, checkpoints every k steps, exact resume from the newest one.
//
// A step: corpus batch (a pure function of the step) -> MambaLM::ForwardBackward
// -> AdamW (clip, warmup + cosine) -> log line; every eval_every steps the
// validation loss; every checkpoint_every steps a checkpoint.
#ifndef MODAMBA_TRAINER_TRAIN_LOOP_H_
#define MODAMBA_TRAINER_TRAIN_LOOP_H_

#include <ostream>
#include <vector>

#include "absl/status/statusor.h"
#include "core/backend.h"
#include "core/model.h"
#include "proto/config.pb.h"

namespace modamba {

struct StepRecord {
  int64_t step = 0;
  LossReport loss;
  double lr = 0;
  double grad_norm = 0;
  double tokens_per_second = 0;
  double flops = 0;  // cumulative training FLOPs after this step
  double val_loss = -1;  // when evaluated at this step
};

struct TrainOptions {
  std::ostream* log = nullptr;  // progress lines; null for silence
  // Stop (after checkpointing) once this step is done; 0 runs to config.steps.
  // Lets tests interrupt a run at a known point.
  int64_t stop_after = 0;
};

// Trains `config` (resolved), resuming from config.checkpoint_dir's newest
// checkpoint when there is one. Returns the records of the steps it ran.
absl::StatusOr<std::vector<StepRecord>> TrainText(const v1::TrainConfig& config, Backend* backend,
                                                  const TrainOptions& options);

}  // namespace modamba

#endif  // MODAMBA_TRAINER_TRAIN_LOOP_H_
