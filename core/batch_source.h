// Where a rank's batches come from: byte-level text (text_path) or packed
// multi-modal shards (dataset_dir). Either way a step's global batch of
// batch_size sequences is fixed by the data position alone, whatever the
// world size; rank r of N takes its contiguous 1/N of it, split into
// grad_accum_steps micro-batches. So 1, 2 or 4 ranks train on the same data.
#ifndef MODAMBA_CORE_BATCH_SOURCE_H_
#define MODAMBA_CORE_BATCH_SOURCE_H_

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "core/data/reader.h"
#include "core/model.h"
#include "proto/config.pb.h"

namespace modamba {

class BatchSource {
 public:
  virtual ~BatchSource() = default;
  // This rank's micro-batches of the next step.
  virtual absl::StatusOr<std::vector<Batch>> NextStep() = 0;
  // The position of the next step; a checkpoint stores it.
  virtual int64_t position() const = 0;
  virtual absl::Status Seek(int64_t position) = 0;
  // This rank's share of eval_batches validation batches (the same every time).
  virtual absl::StatusOr<std::vector<Batch>> Validation() = 0;
};

absl::StatusOr<std::unique_ptr<BatchSource>> OpenBatchSource(const v1::TrainConfig& config,
                                                             int rank, int world_size);

// Whether packed shards described by `m` can feed `config` (seq_len, vocab,
// patch_dim); errors name the field after `where`. The coordinator checks
// it at submission, so a spec that could never run is refused, not retried.
absl::Status CheckDatasetFits(const v1::TrainConfig& config, const data::DatasetManifest& m,
                              const std::string& where);

// A packed batch as the model's Batch: targets are the next tokens (masked by
// the shard's loss mask and never across a document start); for Transfusion
// each image (a run of patch positions) is noised at its own timestep, with
// noise drawn from a stream named by (seed, stream_items[row], image).
Batch ToModelBatch(const data::PackedBatch& packed, const v1::ModelConfig& model, uint64_t seed,
                   const std::vector<int64_t>& stream_items);

// Sequences [begin, begin + n) of a batch.
Batch SliceBatch(const Batch& batch, int64_t begin, int64_t n);

}  // namespace modamba

#endif  // MODAMBA_CORE_BATCH_SOURCE_H_
