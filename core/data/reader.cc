#include "core/data/reader.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "core/data/permutation.h"
#include "core/rng.h"
#include "core/status_macros.h"

namespace modamba::data {

absl::StatusOr<std::unique_ptr<ShardReader>> ShardReader::Open(const std::string& dataset_dir,
                                                               const std::string& split,
                                                               int rank, int world_size,
                                                               const ReaderOptions& options) {
  if (world_size < 1 || rank < 0 || rank >= world_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("reader rank ", rank, " outside world of size ", world_size));
  }
  std::unique_ptr<ShardReader> reader(new ShardReader);
  ASSIGN_OR_RETURN(reader->manifest_, ReadDatasetManifest(dataset_dir));
  ASSIGN_OR_RETURN(const SplitStats* stats, reader->manifest_.split(split));
  reader->shard_begin_.push_back(0);
  for (const ShardEntry& entry : stats->shards) {
    ASSIGN_OR_RETURN(std::unique_ptr<ShardFile> shard,
                     ShardFile::Open(absl::StrCat(dataset_dir, "/", entry.file)));
    if (shard->seq_len() != reader->manifest_.seq_len ||
        shard->patch_dim() != reader->manifest_.patch_dim ||
        shard->num_sequences() != entry.sequences) {
      return absl::DataLossError(absl::StrCat(
          shard->path(), ": shard disagrees with the manifest (seq_len ", shard->seq_len(),
          ", patch_dim ", shard->patch_dim(), ", sequences ", shard->num_sequences(), ")"));
    }
    reader->shard_begin_.push_back(reader->shard_begin_.back() + shard->num_sequences());
    reader->shards_.push_back(std::move(shard));
  }
  reader->total_ = reader->shard_begin_.back();
  if (reader->total_ == 0) {
    return absl::FailedPreconditionError(
        absl::StrCat(dataset_dir, ": split '", split, "' has no sequences"));
  }
  reader->rank_ = rank;
  reader->world_size_ = world_size;
  reader->shuffle_ = options.shuffle.value_or(split == "train");
  reader->seed_ = options.seed.value_or(reader->manifest_.seed);
  return reader;
}

absl::Status ShardReader::Seek(int64_t position) {
  if (position < 0) return absl::InvalidArgumentError(absl::StrCat("negative position ", position));
  position_ = position;
  return absl::OkStatus();
}

int64_t ShardReader::SequenceAt(int64_t k) {
  const int64_t epoch = k / total_;
  const int64_t j = k % total_;
  if (!shuffle_) return j;
  if (epoch != cached_epoch_) {
    Rng rng = Rng::ForName(seed_ + static_cast<uint64_t>(epoch), "shard_reader_epoch");
    permutation_ = Permutation(total_, &rng);
    cached_epoch_ = epoch;
  }
  return permutation_[j];
}

void ShardReader::Resize(int batch, int seq_len, int patch_dim, PackedBatch* out) {
  const size_t n = static_cast<size_t>(batch) * seq_len;
  out->batch = batch;
  out->seq_len = seq_len;
  out->patch_dim = patch_dim;
  out->tokens.resize(n);
  out->modality.resize(n);
  out->loss_mask.resize(n);
  out->doc_start.resize(n);
  out->patch_flag.resize(n);
  out->patches.clear();
  out->sequence_index.resize(batch);
}

absl::Status ShardReader::ReadRow(int64_t sequence, int row, PackedBatch* out) const {
  const int shard = static_cast<int>(
      std::upper_bound(shard_begin_.begin(), shard_begin_.end(), sequence) -
      shard_begin_.begin() - 1);
  const size_t offset = static_cast<size_t>(row) * out->seq_len;
  SequenceSink sink{out->tokens.data() + offset,    out->modality.data() + offset,
                    out->loss_mask.data() + offset, out->doc_start.data() + offset,
                    out->patch_flag.data() + offset, &out->patches};
  out->sequence_index[row] = sequence;
  const int64_t local = sequence - shard_begin_[shard];
  RETURN_IF_ERROR(shards_[shard]->Read(local, sink));
  // Out-of-range ids or modalities are input errors, never silently mapped.
  for (int t = 0; t < out->seq_len; ++t) {
    if (sink.tokens[t] < 0 || sink.tokens[t] >= manifest_.vocab.size() || sink.modality[t] < 0 ||
        sink.modality[t] >= manifest_.num_modalities) {
      return absl::DataLossError(absl::StrCat(
          shards_[shard]->path(), ": sequence ", local, " token ", t, " has id ", sink.tokens[t],
          " and modality ", sink.modality[t], " outside the vocabulary of ",
          manifest_.vocab.size(), " and ", manifest_.num_modalities, " modalities"));
    }
  }
  return absl::OkStatus();
}

absl::Status ShardReader::Next(int batch_size, PackedBatch* out) {
  if (batch_size < 1) return absl::InvalidArgumentError(absl::StrCat("batch size ", batch_size));
  Resize(batch_size, manifest_.seq_len, manifest_.patch_dim, out);
  for (int b = 0; b < batch_size; ++b) {
    const int64_t k = position_ + static_cast<int64_t>(b) * world_size_ + rank_;
    RETURN_IF_ERROR(ReadRow(SequenceAt(k), b, out));
  }
  position_ += static_cast<int64_t>(batch_size) * world_size_;
  return absl::OkStatus();
}

absl::Status ShardReader::ReadSequence(int64_t index, PackedBatch* out) const {
  if (index < 0 || index >= total_) {
    return absl::OutOfRangeError(absl::StrCat("sequence ", index, " outside [0, ", total_, ")"));
  }
  Resize(1, manifest_.seq_len, manifest_.patch_dim, out);
  return ReadRow(index, 0, out);
}

}  // namespace modamba::data
