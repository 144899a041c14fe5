// Per-modality validation loss of a model on a dataset's val split:
//   text:   cross-entropy per text target (nats) and bits per byte (over the
//           targets that are UTF-8 bytes, whose count is the text's length)
//   image:  cross-entropy of VQ codes (Chameleon, tri-modal), or the
//           diffusion MSE (Transfusion) with each image noised at a random
//           step as in training, and at fixed steps (default 100, 500, 900)
//   speech: cross-entropy and top-1 accuracy of the units
// Batches are built as the trainer builds them (ToModelBatch); the noise is
// seeded, so two evaluations of one checkpoint agree exactly.
#ifndef MODAMBA_EVALUATOR_VALIDATION_H_
#define MODAMBA_EVALUATOR_VALIDATION_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/model.h"

namespace modamba::eval {

struct ValidationOptions {
  int64_t max_sequences = 16;  // from the split's start; <= 0: all of it
  int batch_size = 4;
  uint64_t seed = 0;           // names the noise of Transfusion's images
  std::vector<int32_t> diffusion_steps = {100, 500, 900};
};

struct ValidationMetrics {
  int64_t sequences = 0;
  std::vector<double> ce;          // [M] mean CE per target of the modality (nats)
  std::vector<double> accuracy;    // [M] top-1 accuracy of those targets
  std::vector<int64_t> targets;    // [M]
  double loss = 0;                 // mean CE over all targets (the trainer's val loss)
  double text_bits_per_byte = 0;
  int64_t text_bytes = 0;
  // Transfusion only (diffusion_elements > 0).
  double diffusion_mse = 0;        // at the training distribution of steps
  int64_t diffusion_elements = 0;
  std::map<int32_t, double> diffusion_mse_at;  // step -> MSE

  // Flat "val/..." names for reports: val/loss, val/text_ce, val/text_bpb,
  // val/image_ce, val/image_accuracy, val/speech_ce, val/speech_accuracy,
  // val/diffusion_mse, val/diffusion_mse_t500, ... (only what was measured).
  std::map<std::string, double> Flat() const;
};

absl::StatusOr<ValidationMetrics> EvaluateValidation(LanguageModel* model,
                                                     const std::string& dataset_dir,
                                                     const ValidationOptions& options);

// The same metrics (but the fixed-step diffusion MSEs) over given batches,
// e.g. the byte-level text validation batches of a text-only run.
absl::StatusOr<ValidationMetrics> EvaluateBatches(LanguageModel* model,
                                                  const std::vector<Batch>& batches);

}  // namespace modamba::eval

#endif  // MODAMBA_EVALUATOR_VALIDATION_H_
