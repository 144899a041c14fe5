#include "trainer/flat_bucket.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/status_macros.h"

namespace modamba {
namespace {

// All tensors on the host with one dtype; `what` names them in errors.
absl::StatusOr<DType> CommonHostDType(absl::Span<const Tensor* const> tensors,
                                      absl::string_view what) {
  const Tensor* first = nullptr;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const Tensor* t = tensors[i];
    if (t == nullptr) continue;
    if (t->device() != Device::kCpu) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, " ", i, " is on ", DeviceName(t->device()), ", not the host"));
    }
    if (first == nullptr) first = t;
    if (t->dtype() != first->dtype()) {
      return absl::InvalidArgumentError(absl::StrCat(what, " ", i, " is ", DTypeName(t->dtype()),
                                                     ", the others ", DTypeName(first->dtype())));
    }
  }
  if (first == nullptr) return absl::InvalidArgumentError(absl::StrCat("no ", what, "s given"));
  return first->dtype();
}

absl::Status CheckParams(const FlatLayout& layout, absl::Span<const Tensor* const> params) {
  if (static_cast<int>(params.size()) != layout.num_params()) {
    return absl::InvalidArgumentError(
        absl::StrCat(params.size(), " parameters for a layout of ", layout.num_params()));
  }
  for (int i = 0; i < layout.num_params(); ++i) {
    if (params[i] == nullptr || params[i]->shape() != layout.shape(i)) {
      return absl::InvalidArgumentError(
          absl::StrCat("parameter ", i, " has shape ",
                       params[i] == nullptr ? "(missing)" : ShapeString(params[i]->shape()),
                       ", the layout says ", ShapeString(layout.shape(i))));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckShard(const FlatLayout& layout, const Tensor* shard, int rank) {
  if (shard == nullptr) return absl::InvalidArgumentError(absl::StrCat("shard ", rank, " missing"));
  if (shard->numel() != layout.shard_numel()) {
    return absl::InvalidArgumentError(absl::StrCat("shard ", rank, " has ", shard->numel(),
                                                   " elements, the layout ", layout.shard_numel()));
  }
  return absl::OkStatus();
}

absl::Status CheckFlat(const FlatLayout& layout, BufferView flat, DType dtype) {
  if (flat.device != Device::kCpu || flat.dtype != dtype || flat.count != layout.padded_numel()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "flat buffer of ", flat.count, " ", DTypeName(flat.dtype), " on ", DeviceName(flat.device),
        "; the layout needs ", layout.padded_numel(), " ", DTypeName(dtype), " on the host"));
  }
  return absl::OkStatus();
}

// Copies flat elements [begin, begin + n) of a bucket kept as the shards of
// `layout` into `dst`.
void CopyFromShards(const FlatLayout& layout, absl::Span<const Tensor* const> shards, int64_t begin,
                    int64_t n, size_t es, char* dst) {
  const int64_t s = layout.shard_numel();
  for (int64_t pos = begin; pos < begin + n;) {
    const int k = static_cast<int>(pos / s);
    const int64_t len = std::min(begin + n, (k + 1) * s) - pos;
    memcpy(dst + (pos - begin) * es, shards[k]->data<char>() + (pos - k * s) * es, len * es);
    pos += len;
  }
}

// The part of rank `rank`'s shard that holds parameters (not padding).
std::pair<int64_t, int64_t> DataRange(const FlatLayout& layout, int rank) {
  const int64_t begin = std::min(layout.shard_offset(rank), layout.numel());
  const int64_t end = std::min(layout.shard_offset(rank) + layout.shard_numel(), layout.numel());
  return {begin, end};
}

}  // namespace

FlatLayout::FlatLayout(std::vector<Shape> shapes, std::vector<int64_t> offsets, int world_size,
                       int64_t shard_alignment)
    : shapes_(std::move(shapes)),
      offsets_(std::move(offsets)),
      world_size_(world_size),
      shard_alignment_(shard_alignment) {
  const int64_t per_rank = (numel() + world_size_ - 1) / world_size_;
  shard_numel_ = (per_rank + shard_alignment_ - 1) / shard_alignment_ * shard_alignment_;
}

absl::StatusOr<FlatLayout> FlatLayout::Create(std::vector<Shape> shapes, int world_size,
                                              int64_t shard_alignment) {
  if (world_size < 1) {
    return absl::InvalidArgumentError(absl::StrCat("world size ", world_size, " must be >= 1"));
  }
  if (shard_alignment < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("shard alignment ", shard_alignment, " must be >= 1"));
  }
  std::vector<int64_t> offsets = {0};
  for (size_t i = 0; i < shapes.size(); ++i) {
    for (int64_t d : shapes[i]) {
      if (d < 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("parameter ", i, " has shape ", ShapeString(shapes[i])));
      }
    }
    offsets.push_back(offsets.back() + NumElements(shapes[i]));
  }
  return FlatLayout(std::move(shapes), std::move(offsets), world_size, shard_alignment);
}

absl::StatusOr<FlatLayout> FlatLayout::WithWorldSize(int world_size) const {
  return Create(shapes_, world_size, shard_alignment_);
}

Mat FlatLayout::ParamView(BufferView flat, int i) const {
  Mat m;
  m.data = static_cast<char*>(flat.data) + offsets_[i] * DTypeSize(flat.dtype);
  m.dtype = flat.dtype;
  m.device = flat.device;
  m.cols = shapes_[i].empty() ? 1 : shapes_[i].back();
  m.rows = m.cols == 0 ? 0 : NumElements(shapes_[i]) / m.cols;
  m.ld = m.cols;
  return m;
}

absl::Status PackParams(const FlatLayout& layout, absl::Span<const Tensor* const> params,
                        BufferView flat) {
  RETURN_IF_ERROR(CheckParams(layout, params));
  ASSIGN_OR_RETURN(const DType dtype, CommonHostDType(params, "parameter"));
  RETURN_IF_ERROR(CheckFlat(layout, flat, dtype));
  const size_t es = DTypeSize(dtype);
  char* out = static_cast<char*>(flat.data);
  for (int i = 0; i < layout.num_params(); ++i) {
    memcpy(out + layout.offset(i) * es, params[i]->raw(), params[i]->nbytes());
  }
  memset(out + layout.numel() * es, 0, (layout.padded_numel() - layout.numel()) * es);
  return absl::OkStatus();
}

absl::Status UnpackParams(const FlatLayout& layout, BufferView flat,
                          absl::Span<Tensor* const> params) {
  std::vector<const Tensor*> in(params.begin(), params.end());
  RETURN_IF_ERROR(CheckParams(layout, in));
  ASSIGN_OR_RETURN(const DType dtype, CommonHostDType(in, "parameter"));
  RETURN_IF_ERROR(CheckFlat(layout, flat, dtype));
  const size_t es = DTypeSize(dtype);
  const char* src = static_cast<const char*>(flat.data);
  for (int i = 0; i < layout.num_params(); ++i) {
    memcpy(params[i]->raw(), src + layout.offset(i) * es, params[i]->nbytes());
  }
  return absl::OkStatus();
}

std::unique_ptr<Work> GatherBucket(Collectives& collectives, const FlatLayout& layout,
                                   BufferView shard, BufferView full) {
  if (layout.world_size() != collectives.world_size() || shard.count != layout.shard_numel() ||
      full.count != layout.padded_numel()) {
    return DoneWork(absl::InvalidArgumentError(absl::StrCat(
        "GatherBucket: shard of ", shard.count, " and bucket of ", full.count, " elements over ",
        collectives.world_size(), " ranks; the layout has shards of ", layout.shard_numel(),
        " over ", layout.world_size())));
  }
  return collectives.AllGatherAsync(shard, full);
}

std::unique_ptr<Work> ReduceScatterBucket(Collectives& collectives, const FlatLayout& layout,
                                          BufferView full, BufferView shard) {
  if (layout.world_size() != collectives.world_size() || shard.count != layout.shard_numel() ||
      full.count != layout.padded_numel()) {
    return DoneWork(absl::InvalidArgumentError(absl::StrCat(
        "ReduceScatterBucket: bucket of ", full.count, " and shard of ", shard.count,
        " elements over ", collectives.world_size(), " ranks; the layout has shards of ",
        layout.shard_numel(), " over ", layout.world_size())));
  }
  return collectives.ReduceScatterAsync(full, shard);
}

absl::StatusOr<Tensor> ShardOf(const FlatLayout& layout, int rank,
                               absl::Span<const Tensor* const> params) {
  if (rank < 0 || rank >= layout.world_size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("rank ", rank, " outside [0, ", layout.world_size(), ")"));
  }
  RETURN_IF_ERROR(CheckParams(layout, params));
  ASSIGN_OR_RETURN(const DType dtype, CommonHostDType(params, "parameter"));
  const size_t es = DTypeSize(dtype);
  Tensor shard = Tensor::Zeros(dtype, {layout.shard_numel()});
  const int64_t lo = layout.shard_offset(rank), hi = lo + layout.shard_numel();
  for (int i = 0; i < layout.num_params(); ++i) {
    const int64_t begin = std::max(lo, layout.offset(i));
    const int64_t end = std::min(hi, layout.offset(i + 1));
    if (begin >= end) continue;
    memcpy(shard.data<char>() + (begin - lo) * es,
           params[i]->data<char>() + (begin - layout.offset(i)) * es, (end - begin) * es);
  }
  return shard;
}

absl::StatusOr<std::vector<Tensor>> Consolidate(const FlatLayout& layout,
                                                absl::Span<const Tensor* const> shards) {
  if (static_cast<int>(shards.size()) != layout.world_size()) {
    return absl::InvalidArgumentError(
        absl::StrCat(shards.size(), " shards for a layout over ", layout.world_size(), " ranks"));
  }
  for (int k = 0; k < layout.world_size(); ++k) RETURN_IF_ERROR(CheckShard(layout, shards[k], k));
  ASSIGN_OR_RETURN(const DType dtype, CommonHostDType(shards, "shard"));
  const size_t es = DTypeSize(dtype);
  std::vector<Tensor> params;
  for (int i = 0; i < layout.num_params(); ++i) {
    Tensor& p = params.emplace_back(dtype, layout.shape(i));
    CopyFromShards(layout, shards, layout.offset(i), p.numel(), es, p.data<char>());
  }
  return params;
}

std::vector<int> SourceShards(const FlatLayout& from, const FlatLayout& to, int rank) {
  const auto [begin, end] = DataRange(to, rank);
  std::vector<int> ranks;
  if (begin >= end) return ranks;
  for (int64_t k = begin / from.shard_numel(); k <= (end - 1) / from.shard_numel(); ++k) {
    ranks.push_back(static_cast<int>(k));
  }
  return ranks;
}

absl::StatusOr<Tensor> Reshard(const FlatLayout& from, absl::Span<const Tensor* const> shards,
                               const FlatLayout& to, int rank) {
  if (from.num_params() != to.num_params()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "resharding ", from.num_params(), " parameters into a layout of ", to.num_params()));
  }
  for (int i = 0; i < from.num_params(); ++i) {
    if (from.shape(i) != to.shape(i)) {
      return absl::InvalidArgumentError(absl::StrCat("parameter ", i, " was saved as ",
                                                     ShapeString(from.shape(i)), ", now is ",
                                                     ShapeString(to.shape(i))));
    }
  }
  if (rank < 0 || rank >= to.world_size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("rank ", rank, " outside [0, ", to.world_size(), ")"));
  }
  if (static_cast<int>(shards.size()) != from.world_size()) {
    return absl::InvalidArgumentError(
        absl::StrCat(shards.size(), " shards for a layout over ", from.world_size(), " ranks"));
  }
  const std::vector<int> sources = SourceShards(from, to, rank);
  std::vector<const Tensor*> needed;
  for (int k : sources) {
    RETURN_IF_ERROR(CheckShard(from, shards[k], k));
    needed.push_back(shards[k]);
  }
  // With no parameter data in this shard, the dtype comes from any shard given.
  const absl::Span<const Tensor* const> typed =
      needed.empty() ? shards : absl::Span<const Tensor* const>(needed);
  ASSIGN_OR_RETURN(const DType dtype, CommonHostDType(typed, "shard"));
  Tensor out = Tensor::Zeros(dtype, {to.shard_numel()});
  const auto [begin, end] = DataRange(to, rank);
  CopyFromShards(from, shards, begin, end - begin, DTypeSize(dtype), out.data<char>());
  return out;
}

}  // namespace modamba
