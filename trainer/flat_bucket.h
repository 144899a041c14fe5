// FSDP bookkeeping, independent of the model.
//
// A bucket (one per layer) holds an ordered list of parameters flattened into
// one buffer: parameter i occupies elements [offset(i), offset(i) + numel_i),
// and the buffer is zero-padded at the end to world_size equal shards. Rank r
// owns shard r, elements [r * shard_numel, (r + 1) * shard_numel), and keeps
// only that shard of the parameters, their gradients and the AdamW moments.
//
// The flat order does not depend on the world size; only the padding does.
// So a shard saved by a group of one size maps onto a group of any other size
// by ranges (Reshard), and a consolidated parameter set maps onto shards and
// back (ShardOf, Consolidate): save with 2 ranks, load with 3.
//
// Copies to and from host buffers are here; for device buffers, ParamView
// gives the view to pass to Backend::Copy. The collectives work on either.
#ifndef MODAMBA_TRAINER_FLAT_BUCKET_H_
#define MODAMBA_TRAINER_FLAT_BUCKET_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "core/tensor.h"
#include "trainer/collectives.h"

namespace modamba {

class FlatLayout {
 public:
  // `shard_alignment` rounds the shard size up to a multiple of that many
  // elements (e.g. to keep every shard 128-byte aligned on a GPU).
  static absl::StatusOr<FlatLayout> Create(std::vector<Shape> shapes, int world_size,
                                           int64_t shard_alignment = 1);
  // The same parameters sharded over another number of ranks.
  absl::StatusOr<FlatLayout> WithWorldSize(int world_size) const;

  int world_size() const { return world_size_; }
  int num_params() const { return static_cast<int>(shapes_.size()); }
  const Shape& shape(int i) const { return shapes_[i]; }
  // Where parameter i starts in the flat buffer.
  int64_t offset(int i) const { return offsets_[i]; }
  // Elements of all parameters, without padding.
  int64_t numel() const { return offsets_.back(); }
  // The flat buffer's size: world_size * shard_numel.
  int64_t padded_numel() const { return shard_numel_ * world_size_; }
  int64_t shard_numel() const { return shard_numel_; }
  int64_t shard_offset(int rank) const { return rank * shard_numel_; }
  int64_t shard_alignment() const { return shard_alignment_; }

  // Parameter i inside a flat buffer of padded_numel elements (host or
  // device), shaped like Tensor::mat() of the parameter.
  Mat ParamView(BufferView flat, int i) const;

 private:
  FlatLayout(std::vector<Shape> shapes, std::vector<int64_t> offsets, int world_size,
             int64_t shard_alignment);

  std::vector<Shape> shapes_;
  std::vector<int64_t> offsets_;  // num_params + 1 entries
  int world_size_ = 1;
  int64_t shard_alignment_ = 1;
  int64_t shard_numel_ = 0;
};

// Host copies between the parameters (CPU tensors of the layout's shapes, one
// dtype) and a flat buffer of padded_numel elements. Packing zeroes the
// padding.
absl::Status PackParams(const FlatLayout& layout, absl::Span<const Tensor* const> params,
                        BufferView flat);
absl::Status UnpackParams(const FlatLayout& layout, BufferView flat,
                          absl::Span<Tensor* const> params);

// Enqueues the all-gather of every rank's shard (shard_numel elements) into
// `full` (padded_numel elements): the whole bucket on every rank. `shard` may
// be this rank's slice of `full`.
std::unique_ptr<Work> GatherBucket(Collectives& collectives, const FlatLayout& layout,
                                   BufferView shard, BufferView full);

// Enqueues the reduce-scatter of every rank's full gradient bucket: `shard`
// becomes the sum over ranks of this rank's slice.
std::unique_ptr<Work> ReduceScatterBucket(Collectives& collectives, const FlatLayout& layout,
                                          BufferView full, BufferView shard);

// Rank `rank`'s shard (a CPU tensor of shard_numel elements, zero-padded) of
// a consolidated parameter set given in layout order.
absl::StatusOr<Tensor> ShardOf(const FlatLayout& layout, int rank,
                               absl::Span<const Tensor* const> params);

// The consolidated parameters (CPU tensors of the layout's shapes) from all
// world_size shards, in rank order.
absl::StatusOr<std::vector<Tensor>> Consolidate(const FlatLayout& layout,
                                                absl::Span<const Tensor* const> shards);

// The ranks of layout `from` whose shards hold part of rank `rank`'s shard in
// layout `to` (same parameters, any world sizes).
std::vector<int> SourceShards(const FlatLayout& from, const FlatLayout& to, int rank);

// Rank `rank`'s shard in layout `to`, cut from the shards saved under layout
// `from` (indexed by old rank; only those named by SourceShards are read and
// the others may be null).
absl::StatusOr<Tensor> Reshard(const FlatLayout& from, absl::Span<const Tensor* const> shards,
                               const FlatLayout& to, int rank);

}  // namespace modamba

#endif  // MODAMBA_TRAINER_FLAT_BUCKET_H_
