// The shard reader that trainer and evaluator ranks use.
//
// A split's sequences (all its shards, in manifest order) form one stream that
// repeats epoch after epoch; with shuffling on, epoch e visits the sequences in
// a permutation seeded by (seed, e). Stream item k is sequence perm_{k / N}[k % N]
// of the N sequences. The stream is consumed in rounds of world_size items:
// rank r takes item position + r, then position advances by world_size. So a
// global batch is the contiguous block [position, position + world_size * batch)
// and ranks get disjoint sequences within an epoch. position() is the same on
// every rank that has read the same number of batches; Seek(position()) on a
// fresh reader, even one with another world size, continues the same global
// stream exactly.
#ifndef MODAMBA_CORE_DATA_READER_H_
#define MODAMBA_CORE_DATA_READER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/data/manifest.h"
#include "core/data/shard.h"

namespace modamba::data {

struct PackedBatch {
  int batch = 0;
  int seq_len = 0;
  int patch_dim = 0;
  // Per token, [batch * seq_len] row-major.
  std::vector<int32_t> tokens;
  std::vector<int32_t> modality;
  std::vector<uint8_t> loss_mask;
  std::vector<uint8_t> doc_start;
  std::vector<uint8_t> patch_flag;  // all zero without a continuous payload
  // [flagged tokens, patch_dim]: one row per patch_flag = 1, in token order.
  std::vector<float> patches;
  // [batch]: the index of each row's sequence within the split.
  std::vector<int64_t> sequence_index;
};

struct ReaderOptions {
  // Default: shuffle the "train" split, read other splits in order.
  std::optional<bool> shuffle;
  // Default: the seed in the dataset manifest.
  std::optional<uint64_t> seed;
};

class ShardReader {
 public:
  static absl::StatusOr<std::unique_ptr<ShardReader>> Open(const std::string& dataset_dir,
                                                           const std::string& split, int rank,
                                                           int world_size,
                                                           const ReaderOptions& options = {});

  // The next batch_size sequences of this rank.
  absl::Status Next(int batch_size, PackedBatch* out);
  int64_t position() const { return position_; }
  absl::Status Seek(int64_t position);

  // Sequence `index` of the split as a batch of one row (random access).
  absl::Status ReadSequence(int64_t index, PackedBatch* out) const;

  const DatasetManifest& manifest() const { return manifest_; }
  int64_t num_sequences() const { return total_; }
  int rank() const { return rank_; }
  int world_size() const { return world_size_; }

 private:
  ShardReader() = default;
  // The split sequence that stream item k refers to.
  int64_t SequenceAt(int64_t k);
  absl::Status ReadRow(int64_t sequence, int row, PackedBatch* out) const;
  static void Resize(int batch, int seq_len, int patch_dim, PackedBatch* out);

  DatasetManifest manifest_;
  std::vector<std::unique_ptr<ShardFile>> shards_;
  std::vector<int64_t> shard_begin_;  // first sequence of each shard; back() = total
  int64_t total_ = 0;
  int rank_ = 0;
  int world_size_ = 1;
  bool shuffle_ = false;
  uint64_t seed_ = 0;
  int64_t position_ = 0;
  int64_t cached_epoch_ = -1;
  std::vector<int64_t> permutation_;
};

}  // namespace modamba::data

#endif  // MODAMBA_CORE_DATA_READER_H_
