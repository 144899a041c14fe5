// The training loop every trainer rank runs.
//
// A step, following one batch from the shard to the optimizer:
//   BatchSource::NextStep       this rank's micro-batches of the global batch
//   (all-reduce of counts)      the step's loss denominators, so N ranks and
//                               M micro-batches compute one big batch's gradient
//   LanguageModel::ForwardBackward    per micro-batch; FSDP hooks gather each layer's
//                               parameters before use and reduce-scatter its
//                               gradients after its backward
//   Fsdp::Step                  global grad norm, clipping, AdamW on the shards
//   (all-reduce of losses)      per-modality losses for the log, identical on
//                               every rank
// and every eval_every steps the per-modality validation loss, every
// checkpoint_every steps a sharded checkpoint (one file per rank, a layout and
// a manifest with the data position), from which a run resumes exactly, on
// any number of ranks.
#ifndef MODAMBA_TRAINER_TRAIN_LOOP_H_
#define MODAMBA_TRAINER_TRAIN_LOOP_H_

#include <functional>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/backend.h"
#include "core/model.h"
#include "proto/config.pb.h"
#include "trainer/collectives.h"
#include "trainer/fsdp.h"
#include "trainer/process_groups.h"

namespace modamba {

struct StepRecord {
  int64_t step = 0;
  LossReport loss;        // summed over ranks
  double lr = 0;
  double grad_norm = 0;
  double tokens_per_second = 0;  // all ranks together
  double mfu = 0;                // on a GPU: achieved / 989 TFLOP/s per GPU
  double flops = 0;              // cumulative training FLOPs after this step
  bool evaluated = false;
  LossReport val;                // when evaluated
  std::vector<StepProfile> profile;  // every rank's, by rank
};

struct TrainContext {
  Backend* backend = nullptr;
  // The rank's group; null trains alone.
  Collectives* comm = nullptr;
  // Connects subgroups of `comm`'s ranks, for hybrid sharding
  // (fsdp.shard_group_size); may be empty otherwise.
  CommFactory new_comm;
  // FsdpOptions::on_prefetch (fault injection in tests).
  std::function<void(int group)> on_prefetch;
  // Progress lines (rank 0 writes them); null for silence.
  std::ostream* log = nullptr;
  // Stop (after checkpointing) once this step is done; 0 runs to config.steps.
  int64_t stop_after = 0;
  // Resume from this checkpoint directory instead of the newest one under
  // config.checkpoint_dir (a worker under the coordinator resumes from the
  // checkpoint the coordinator names).
  std::string resume_from;
  // Without resume_from: resume from the newest checkpoint under
  // config.checkpoint_dir. A worker under the coordinator sets false, so it
  // starts fresh unless the coordinator names a checkpoint.
  bool resume_local = true;
  // Delete resume_from once it is loaded (a downloaded copy).
  bool remove_resume_copy = false;
  // Keep only the newest this many checkpoints under config.checkpoint_dir
  // (each pruned after on_checkpoint returns); 0 keeps all.
  int keep_checkpoints = 0;
  // Polled after each step on every rank; true ends training early with
  // CANCELLED (the coordinator asked the worker to stop).
  std::function<bool()> should_stop;
  // Called on every rank after each step, and after each checkpoint.
  std::function<void(const StepRecord&)> on_step;
  // An error ends training with it.
  std::function<absl::Status(const std::string& dir, int64_t step)> on_checkpoint;
};

// Trains `config` (resolved), resuming from the newest checkpoint under
// config.checkpoint_dir when there is one. Returns the records of the steps
// it ran.
absl::StatusOr<std::vector<StepRecord>> Train(const v1::TrainConfig& config,
                                              const TrainContext& context);

// Whether Train failed on a non-finite loss, gradient norm or parameter
// (config.on_nonfinite): the same run fails the same way again.
bool IsNonfiniteError(const absl::Status& status);

}  // namespace modamba

#endif  // MODAMBA_TRAINER_TRAIN_LOOP_H_
