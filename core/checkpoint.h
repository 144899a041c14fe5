// Checkpoints: saving, finding and loading them.
//
// A checkpoint is a directory step-NNNNNNNN/ under a run's checkpoint root:
//   shard-RRRRR-of-WWWWW.safetensors  one per rank: tensors bucket.B.value,
//                                     bucket.B.m, bucket.B.v, the rank's
//                                     slice of bucket B's flat parameter
//                                     buffer and AdamW moments (trainer/fsdp.h)
//   layout.json                       the world size, dtype and each bucket's
//                                     parameters (name, shape) in flat order
//   manifest.json                     proto CheckpointManifest, written last
//                                     with the sha256 of every other file
// A directory without a manifest is incomplete and never used. The flat order
// does not depend on the world size, so a checkpoint loads on any number of
// ranks.
#ifndef MODAMBA_CORE_CHECKPOINT_H_
#define MODAMBA_CORE_CHECKPOINT_H_

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "core/backend.h"
#include "core/model.h"
#include "core/tensor.h"
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

// Writing one takes three moves, so that every rank writes its own files in
// between: rank 0 calls StartCheckpoint (an empty staging directory,
// replacing whatever a rerun of the step left), every rank writes into
// CheckpointStagingPath, then rank 0 calls SealCheckpoint: the manifest last,
// then the rename to CheckpointPath. A crash at any point leaves no
// complete-looking checkpoint.
std::string CheckpointStagingPath(const std::string& root, int64_t step);
absl::Status StartCheckpoint(const std::string& root, int64_t step);
absl::Status SealCheckpoint(const std::string& root, int64_t step,
                            const v1::CheckpointManifest& manifest);

// layout.json.
struct ShardLayout {
  struct Param {
    std::string name;
    Shape shape;
  };
  int world_size = 1;
  std::string dtype;
  std::vector<std::vector<Param>> buckets;
};
std::string ShardFileName(int rank, int world_size);
// "bucket.B.value", "bucket.B.m" or "bucket.B.v".
std::string ShardTensorName(int bucket, const std::string& part);
absl::Status WriteShardLayout(const std::string& dir, const ShardLayout& layout);
// DATA_LOSS naming the file when it is not a valid layout.
absl::StatusOr<ShardLayout> ReadShardLayout(const std::string& dir);

// Every parameter of checkpoint `dir` (written by any number of ranks) as a
// whole host tensor, in layout order.
absl::StatusOr<std::vector<std::pair<std::string, Tensor>>> LoadCheckpointParams(
    const std::string& dir);
// The checkpoint's model with every parameter resident on `backend`
// (evaluation, generation, export); its files are checked against the
// manifest first, and a non-finite parameter is DATA_LOSS naming it.
absl::StatusOr<std::unique_ptr<LanguageModel>> LoadTrainedModel(const std::string& dir,
                                                                Backend* backend);

// Hashes every file in `dir`, records them in `manifest` and writes it.
absl::Status WriteCheckpointManifest(const std::string& dir, v1::CheckpointManifest manifest);
absl::StatusOr<v1::CheckpointManifest> ReadManifest(const std::string& dir);
// Checks every listed file's size and sha256; DATA_LOSS names a bad file.
absl::Status VerifyCheckpoint(const std::string& dir);

}  // namespace modamba

#endif  // MODAMBA_CORE_CHECKPOINT_H_
