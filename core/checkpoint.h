// Checkpoints: one directory per step holding model.safetensors (parameters
// and AdamW moments, so PyTorch users can open them) and manifest.json (the
// config, step, cumulative FLOPs, RNG state, data position and the weights'
// sha256). A checkpoint directory is written under a temporary name and
// renamed into place, so a crash never leaves a half-written one behind.
#ifndef MODAMBA_CORE_CHECKPOINT_H_
#define MODAMBA_CORE_CHECKPOINT_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/layers.h"
#include "proto/config.pb.h"

namespace modamba {

// `moments` are the optimizer's m and v in ParamSet order (may be empty).
absl::Status SaveCheckpoint(const std::string& dir, const ParamSet& params,
                            const std::vector<Tensor>& m, const std::vector<Tensor>& v,
                            const v1::CheckpointManifest& manifest);

// The newest complete checkpoint under `root` ("" when there is none).
absl::StatusOr<std::string> LatestCheckpoint(const std::string& root);
// Directory name of the checkpoint of `step` under `root`.
std::string CheckpointPath(const std::string& root, int64_t step);

absl::StatusOr<v1::CheckpointManifest> ReadManifest(const std::string& dir);
// Verifies the weights' sha256, then loads every parameter (and the moments,
// when non-null) by name; shape or name mismatches are errors naming them.
absl::Status LoadCheckpoint(const std::string& dir, ParamSet* params, std::vector<Tensor>* m,
                            std::vector<Tensor>* v);

}  // namespace modamba

#endif  // MODAMBA_CORE_CHECKPOINT_H_
