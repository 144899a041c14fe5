// Job specs: parsing a JobSpec textproto, checking every field and filling the
// defaults, so that workers receive a spec with nothing left to guess. Every
// error is INVALID_ARGUMENT and names the source and the field.
#ifndef MODAMBA_COORDINATOR_JOB_SPEC_H_
#define MODAMBA_COORDINATOR_JOB_SPEC_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "proto/job.pb.h"

namespace modamba {

// Specs larger than this are refused before parsing.
inline constexpr size_t kMaxJobSpecBytes = 1 << 20;

// What a spec is checked against: the coordinator's host and configuration.
struct SpecContext {
  std::string data_root;  // dataset_dir and train.text_path must lie inside it
  bool has_evaluator_binary = false;
  int gpus = 0;  // the host's totals: a job that can never fit is refused
  int cpu_slots = 0;
  // Memory one worker may use: host memory per CPU slot, and device memory
  // per GPU; a job whose estimate exceeds it is refused. 0: not checked.
  int64_t worker_memory_bytes = 0;
  int64_t gpu_memory_bytes = 0;
};

// What one trainer rank of a resolved spec needs, estimated from the
// model's size and the tokens of one micro-batch (f32 throughout):
struct MemoryEstimate {
  int64_t state = 0;        // its shards of parameters, gradients, AdamW m and v
  int64_t gathered = 0;     // the largest bucket gathered twice (prefetch), values and grads
  int64_t activations = 0;  // what the backward keeps, plus the head's logits
  int64_t runtime = 0;      // the process itself: code, collectives, data reader
  int64_t total() const { return state + gathered + activations + runtime; }
  std::string Describe() const;
};
MemoryEstimate EstimateTrainerMemory(const v1::JobSpec& spec);

// Parses the text format; unknown fields and syntax errors name
// "source:line:column".
absl::StatusOr<v1::JobSpec> ParseJobSpec(absl::string_view text, const std::string& source);

// Checks and completes `spec` in place: defaults filled, dataset_dir made an
// absolute path inside the data root, train resolved as core/config.h does and
// train.checkpoint_every set to checkpoint_every_steps.
absl::Status ResolveJobSpec(v1::JobSpec* spec, const SpecContext& context,
                            const std::string& source);

// Workers one job occupies: its trainer ranks plus its evaluators, each on one
// GPU ("gpu" jobs) or one CPU slot ("cpu" jobs).
int WorkersOf(const v1::JobSpec& spec);

}  // namespace modamba

#endif  // MODAMBA_COORDINATOR_JOB_SPEC_H_
