// Checkpoint directories: step-NNNNNNNN/ under a run's checkpoint root, each
// holding the files a trainer wrote (trainer/fsdp.h: one shard per rank plus
// layout.json) and manifest.json (proto CheckpointManifest), written last with
// the sha256 of every other file. A directory without a manifest is
// incomplete and never used.
#ifndef MODAMBA_CORE_CHECKPOINT_H_
#define MODAMBA_CORE_CHECKPOINT_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "proto/config.pb.h"

namespace modamba {

// Directory name of the checkpoint of `step` under `root`.
std::string CheckpointPath(const std::string& root, int64_t step);
// The steps of the complete checkpoints under `root`, ascending.
std::vector<int64_t> CheckpointSteps(const std::string& root);
// The newest complete checkpoint under `root` ("" when there is none).
absl::StatusOr<std::string> LatestCheckpoint(const std::string& root);
// `dir` itself when it is a complete checkpoint, else the newest complete one
// under it (a run directory); NOT_FOUND, naming `dir`, when there is none.
absl::StatusOr<std::string> ResolveCheckpoint(const std::string& dir);

// Removes all but the newest `keep` complete checkpoints under `root`.
absl::Status PruneCheckpoints(const std::string& root, int keep);

// Hashes every file in `dir`, records them in `manifest` and writes it.
absl::Status WriteCheckpointManifest(const std::string& dir, v1::CheckpointManifest manifest);
absl::StatusOr<v1::CheckpointManifest> ReadManifest(const std::string& dir);
// Checks every listed file's size and sha256; DATA_LOSS names a bad file.
absl::Status VerifyCheckpoint(const std::string& dir);

}  // namespace modamba

#endif  // MODAMBA_CORE_CHECKPOINT_H_
