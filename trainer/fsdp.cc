#include "trainer/fsdp.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "core/checkpoint.h"
#include "core/optimizer.h"
#include "core/safetensors.h"
#include "core/status_macros.h"

namespace modamba {
namespace {

Tensor ToHost(Backend* be, const Tensor& t) {
  Tensor host(t.dtype(), t.shape());
  be->Copy(t.mat(), host.mat());
  return host;
}

}  // namespace

absl::StatusOr<FsdpOptions> FsdpOptionsFrom(const v1::FsdpConfig& config) {
  if (config.layers_per_bucket() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("fsdp.layers_per_bucket is ", config.layers_per_bucket(), "; must be >= 0"));
  }
  FsdpOptions options;
  options.overlap = !config.has_overlap() || config.overlap();
  options.layers_per_bucket = std::max(1, config.layers_per_bucket());
  return options;
}

absl::StatusOr<std::unique_ptr<Fsdp>> Fsdp::Create(ParamSet* params, Collectives* comm,
                                                   const v1::OptimizerConfig& optimizer,
                                                   const FsdpOptions& options) {
  for (const Collectives* c : {comm, options.replicas, options.all}) {
    if (c != nullptr && c->device() != params->backend()->device()) {
      return absl::InvalidArgumentError(absl::StrCat("collectives on ", DeviceName(c->device()),
                                                     " cannot shard parameters on ",
                                                     DeviceName(params->backend()->device())));
    }
  }
  if (options.layers_per_bucket < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("layers per bucket ", options.layers_per_bucket, " must be >= 1"));
  }
  if ((options.replicas == nullptr) != (options.all == nullptr) ||
      (options.all != nullptr &&
       options.all->world_size() != comm->world_size() * options.replicas->world_size())) {
    return absl::InvalidArgumentError(
        "hybrid sharding needs the replicas' and all ranks' communicators, of world sizes whose "
        "product with the shard group's is the whole");
  }
  std::unique_ptr<Fsdp> fsdp(new Fsdp(params, comm, optimizer, options));
  Backend* be = params->backend();
  fsdp->buckets_.resize(params->num_buckets());
  for (const auto& p : params->all()) fsdp->buckets_[p->bucket].params.push_back(p.get());
  const int rank = comm->rank();
  for (Bucket& bucket : fsdp->buckets_) {
    std::vector<Shape> shapes;
    for (Param* p : bucket.params) shapes.push_back(p->value.shape());
    ASSIGN_OR_RETURN(FlatLayout layout, FlatLayout::Create(shapes, comm->world_size()));
    bucket.layout = std::make_unique<FlatLayout>(std::move(layout));
    const FlatLayout& l = *bucket.layout;
    // Flatten the (identical) full values, keep this rank's shard, free the rest.
    Tensor full = be->Empty(params->dtype(), {l.padded_numel()});
    be->Fill(full.mat(), 0);
    for (size_t i = 0; i < bucket.params.size(); ++i) {
      be->Copy(bucket.params[i]->value.mat(), l.ParamView(BufferView::Of(full), i));
      bucket.params[i]->value = Tensor();
      bucket.params[i]->grad = Tensor();
    }
    for (Tensor* t : {&bucket.value, &bucket.grad, &bucket.m, &bucket.v}) {
      *t = be->Empty(params->dtype(), {l.shard_numel()});
      be->Fill(t->mat(), 0);
    }
    be->Copy(Tensor::View(full, l.shard_offset(rank), {l.shard_numel()}).mat(), bucket.value.mat());
  }
  return fsdp;
}

int Fsdp::Last(int g) const {
  return g == 0 ? 0 : std::min(num_buckets() - 1, g * options_.layers_per_bucket);
}

std::unique_ptr<Work> Fsdp::Issue(std::unique_ptr<Work> work) {
  return options_.overlap ? std::move(work) : DoneWork(work->Wait());
}

absl::Status Fsdp::StartGather(int first, int last) {
  for (int b = first; b <= last; ++b) {
    Bucket& bucket = buckets_[b];
    if (!bucket.full.empty() || bucket.gathering) continue;
    if (single()) {
      bucket.full = Tensor::View(bucket.value, 0, {bucket.layout->padded_numel()});
      continue;
    }
    bucket.full = params_->backend()->Empty(params_->dtype(), {bucket.layout->padded_numel()});
    bucket.gathering = Issue(GatherBucket(*comm_, *bucket.layout, BufferView::Of(bucket.value),
                                          BufferView::Of(bucket.full)));
  }
  return absl::OkStatus();
}

absl::Status Fsdp::Prefetch(int g) {
  if (!options_.overlap) return absl::OkStatus();
  const bool issued = buckets_[First(g)].full.empty();
  RETURN_IF_ERROR(StartGather(First(g), Last(g)));
  if (issued && options_.on_prefetch) options_.on_prefetch(g);
  return absl::OkStatus();
}

absl::Status Fsdp::Gather(int b, int first, int last) {
  Bucket& bucket = buckets_[b];
  if (bucket.full.empty()) RETURN_IF_ERROR(StartGather(first, last));
  if (bucket.gathering) {
    RETURN_IF_ERROR(bucket.gathering->Wait());
    bucket.gathering.reset();
  }
  for (size_t i = 0; i < bucket.params.size(); ++i) {
    bucket.params[i]->value = Tensor::View(bucket.full, bucket.layout->offset(i),
                                           bucket.layout->shape(i));
  }
  return absl::OkStatus();
}

void Fsdp::Release(int b) {
  Bucket& bucket = buckets_[b];
  for (Param* p : bucket.params) {
    p->value = Tensor();
    p->grad = Tensor();
  }
  bucket.full = Tensor();
  bucket.full_grad = Tensor();
}

absl::Status Fsdp::BeforeForward(int b) {
  RETURN_IF_ERROR(Gather(b, b, Last(GroupOf(b))));
  // Bucket 0's gradients (head, then embedding) are written during the
  // backward before and after all layers: keep its buffer for the step.
  if (b == 0) MakeFullGrad(buckets_[0]);
  // Prefetch the next communication bucket while this one computes.
  if (GroupOf(b) + 1 < num_groups()) RETURN_IF_ERROR(Prefetch(GroupOf(b) + 1));
  return absl::OkStatus();
}

absl::Status Fsdp::AfterForward(int b) {
  if (b == 0) {
    // The end of an evaluation (a training forward goes on into the
    // backward): release what the overlapped schedule kept.
    for (int i = 0; i < num_buckets(); ++i) Release(i);
    return absl::OkStatus();
  }
  // The top communication bucket is the backward's first: the overlapped
  // schedule keeps it rather than gather it again. Layers below it are
  // gathered again for the backward.
  if (options_.overlap && GroupOf(b) == num_groups() - 1) return absl::OkStatus();
  Release(b);
  return absl::OkStatus();
}

absl::Status Fsdp::BeforeBackward(int b) {
  RETURN_IF_ERROR(Gather(b, First(GroupOf(b)), b));
  MakeFullGrad(buckets_[b]);
  if (GroupOf(b) > 1) RETURN_IF_ERROR(Prefetch(GroupOf(b) - 1));
  return absl::OkStatus();
}

void Fsdp::MakeFullGrad(Bucket& bucket) {
  if (single()) {  // backward ops accumulate into parameter gradients
    bucket.full_grad = Tensor::View(bucket.grad, 0, {bucket.layout->padded_numel()});
  } else {
    bucket.full_grad =
        params_->backend()->Empty(params_->dtype(), {bucket.layout->padded_numel()});
    params_->backend()->Fill(bucket.full_grad.mat(), 0);
  }
  for (size_t i = 0; i < bucket.params.size(); ++i) {
    bucket.params[i]->grad = Tensor::View(bucket.full_grad, bucket.layout->offset(i),
                                          bucket.layout->shape(i));
  }
}

absl::Status Fsdp::AfterBackward(int b) {
  if (single()) {
    Release(b);
    return absl::OkStatus();
  }
  buckets_[b].done_grad = std::move(buckets_[b].full_grad);
  Release(b);
  // The backward goes down the layers: a communication bucket's gradients
  // are complete after its first layer.
  if (b != First(GroupOf(b))) return absl::OkStatus();
  for (int i = b; i <= Last(GroupOf(b)); ++i) RETURN_IF_ERROR(StartReduction(buckets_[i]));
  return absl::OkStatus();
}

absl::Status Fsdp::StartReduction(Bucket& bucket) {
  RETURN_IF_ERROR(FinishReduction(bucket));  // a previous micro-batch's
  bucket.reducing_full = std::move(bucket.done_grad);
  bucket.reduced = params_->backend()->Empty(params_->dtype(), {bucket.layout->shard_numel()});
  bucket.reducing = Issue(ReduceScatterBucket(*comm_, *bucket.layout,
                                              BufferView::Of(bucket.reducing_full),
                                              BufferView::Of(bucket.reduced)));
  return absl::OkStatus();
}

absl::Status Fsdp::FinishReduction(Bucket& bucket) {
  if (!bucket.reducing) return absl::OkStatus();
  RETURN_IF_ERROR(bucket.reducing->Wait());
  params_->backend()->Axpy(1.0, bucket.reduced.mat(), bucket.grad.mat());
  bucket.reducing.reset();
  bucket.reducing_full = Tensor();
  bucket.reduced = Tensor();
  return absl::OkStatus();
}

absl::Status Fsdp::FinishReductions() {
  for (Bucket& bucket : buckets_) RETURN_IF_ERROR(FinishReduction(bucket));
  if (options_.replicas == nullptr) return absl::OkStatus();
  // Hybrid: every group's gradient shard becomes the sum over the groups.
  std::vector<std::unique_ptr<Work>> works;
  for (Bucket& bucket : buckets_) {
    works.push_back(Issue(options_.replicas->AllReduceAsync(BufferView::Of(bucket.grad))));
  }
  for (auto& work : works) RETURN_IF_ERROR(work->Wait());
  return absl::OkStatus();
}

absl::Status Fsdp::SumOverRanks(std::vector<double>* values) {
  Backend* be = params_->backend();
  const int64_t n = values->size();
  Mat host{values->data(), DType::kF64, Device::kCpu, 1, n, n};
  Tensor buffer = be->Empty(DType::kF64, {n});
  be->Copy(host, buffer.mat());
  RETURN_IF_ERROR(all()->AllReduce(BufferView::Of(buffer)));
  be->Copy(buffer.mat(), host);
  return absl::OkStatus();
}

absl::StatusOr<bool> Fsdp::StateFinite() {
  std::vector<Mat> state;
  for (const Bucket& bucket : buckets_) {
    for (const Tensor* t : {&bucket.value, &bucket.m, &bucket.v}) state.push_back(t->mat());
  }
  std::vector<double> sq = {params_->backend()->SumSquares(state)};
  RETURN_IF_ERROR(SumOverRanks(&sq));
  return std::isfinite(sq[0]);
}

absl::StatusOr<OptimizerStepInfo> Fsdp::Step(int64_t step, int64_t total_steps, bool skip) {
  RETURN_IF_ERROR(FinishReductions());
  Backend* be = params_->backend();
  // Global gradient norm (the shards partition every gradient; padding is
  // 0), and whether any rank asks to skip, in one all-reduce.
  std::vector<Mat> grads;
  for (const Bucket& bucket : buckets_) grads.push_back(bucket.grad.mat());
  // Hybrid: the groups hold the same gradient shards; the first counts them.
  const bool counts = options_.replicas == nullptr || options_.replicas->rank() == 0;
  std::vector<double> sums = {counts ? be->SumSquares(grads) : 0.0, skip ? 1.0 : 0.0};
  RETURN_IF_ERROR(SumOverRanks(&sums));
  const double grad_norm = std::sqrt(sums[0]);
  if (sums[1] > 0 || !(grad_norm < kMaxGradNorm)) {
    for (Bucket& bucket : buckets_) be->Fill(bucket.grad.mat(), 0);
    OptimizerStepInfo info;
    info.lr = LearningRate(optimizer_, step, total_steps);
    info.grad_norm = grad_norm;
    info.applied = false;
    return info;
  }

  // This rank's shard in runs of adjacent parameters that share a weight
  // decay (parameters lie back to back in a bucket): one update per run.
  std::vector<AdamWTarget> targets;
  for (Bucket& bucket : buckets_) {
    const FlatLayout& l = *bucket.layout;
    const int64_t begin = l.shard_offset(comm_->rank()), end = begin + l.shard_numel();
    int64_t run_lo = 0, run_hi = 0;
    bool run_decay = false;
    auto flush = [&] {
      if (run_lo >= run_hi) return;
      auto part = [&](const Tensor& t) { return Tensor::View(t, run_lo - begin, {run_hi - run_lo}); };
      targets.push_back({part(bucket.value), part(bucket.grad), part(bucket.m), part(bucket.v),
                         run_decay});
    };
    for (size_t i = 0; i < bucket.params.size(); ++i) {
      const int64_t lo = std::max(begin, l.offset(i));
      const int64_t hi = std::min(end, l.offset(i) + NumElements(l.shape(i)));
      if (lo >= hi) continue;
      if (lo == run_hi && bucket.params[i]->decay == run_decay) {
        run_hi = hi;
        continue;
      }
      flush();
      run_lo = lo;
      run_hi = hi;
      run_decay = bucket.params[i]->decay;
    }
    flush();
  }
  OptimizerStepInfo info = ApplyAdamW(be, optimizer_, step, total_steps, grad_norm, &targets);
  for (Bucket& bucket : buckets_) be->Fill(bucket.grad.mat(), 0);
  return info;
}

void Fsdp::StartProfile() {
  for (Collectives* c : {comm_, options_.replicas, options_.all}) {
    if (c != nullptr) c->TakeWaitTimes();
  }
  profile_start_ = absl::Now();
}

absl::StatusOr<std::vector<StepProfile>> Fsdp::EndProfile() {
  StepProfile mine;
  mine.step_s = absl::ToDoubleSeconds(absl::Now() - profile_start_);
  const WaitTimes shard = comm_->TakeWaitTimes();
  mine.exposed_comm_s = shard.transfer_s;
  mine.idle_s = shard.sync_s;  // without hybrid, comm_ carries the small all-reduces too
  if (options_.replicas != nullptr) {
    const WaitTimes replicas = options_.replicas->TakeWaitTimes();
    const WaitTimes all = options_.all->TakeWaitTimes();
    mine.exposed_comm_s += replicas.transfer_s + replicas.sync_s;
    mine.idle_s += all.transfer_s + all.sync_s;
  }
  mine.compute_s = std::max(0.0, mine.step_s - mine.exposed_comm_s - mine.idle_s);
  // Each rank fills its row of the table; the sum over ranks is the table.
  const int n = all()->world_size(), r = all()->rank();
  std::vector<double> table(4 * n, 0.0);
  table[4 * r] = mine.step_s;
  table[4 * r + 1] = mine.compute_s;
  table[4 * r + 2] = mine.exposed_comm_s;
  table[4 * r + 3] = mine.idle_s;
  RETURN_IF_ERROR(SumOverRanks(&table));
  std::vector<StepProfile> profiles(n);
  for (int i = 0; i < n; ++i) {
    profiles[i] = {table[4 * i], table[4 * i + 1], table[4 * i + 2], table[4 * i + 3]};
  }
  return profiles;
}

int64_t Fsdp::shard_bytes() const {
  int64_t bytes = 0;
  for (const Bucket& b : buckets_) bytes += 4 * b.value.nbytes();
  return bytes;
}

absl::Status Fsdp::SaveShard(const std::string& dir) const {
  // Hybrid: the first group writes the shards; the others hold copies.
  if (options_.replicas != nullptr && options_.replicas->rank() != 0) return absl::OkStatus();
  Backend* be = params_->backend();
  std::vector<Tensor> host;
  std::vector<std::string> names;
  for (size_t b = 0; b < buckets_.size(); ++b) {
    for (auto [name, t] : {std::pair{"value", &buckets_[b].value}, std::pair{"m", &buckets_[b].m},
                           std::pair{"v", &buckets_[b].v}}) {
      host.push_back(ToHost(be, *t));
      names.push_back(ShardTensorName(b, name));
    }
  }
  std::vector<std::pair<std::string, const Tensor*>> entries;
  for (size_t i = 0; i < host.size(); ++i) entries.emplace_back(names[i], &host[i]);
  RETURN_IF_ERROR(SaveSafetensors(dir + "/" + ShardFileName(comm_->rank(), comm_->world_size()),
                                  entries));
  if (comm_->rank() != 0) return absl::OkStatus();
  ShardLayout layout{comm_->world_size(), DTypeName(params_->dtype()), {}};
  for (const Bucket& bucket : buckets_) {
    std::vector<ShardLayout::Param>& params = layout.buckets.emplace_back();
    for (size_t i = 0; i < bucket.params.size(); ++i) {
      params.push_back({bucket.params[i]->name, bucket.layout->shape(i)});
    }
  }
  return WriteShardLayout(dir, layout);
}

absl::Status Fsdp::LoadShards(const std::string& dir) {
  ASSIGN_OR_RETURN(const ShardLayout layout, ReadShardLayout(dir));
  auto bad = [&](const std::string& why) {
    return absl::DataLossError(absl::StrCat(dir, "/layout.json: ", why));
  };
  const int saved_world = layout.world_size;
  if (layout.buckets.size() != buckets_.size()) {
    return bad(absl::StrCat("has ", layout.buckets.size(), " buckets, the model has ",
                            buckets_.size()));
  }
  std::map<int, SafetensorsFile> files;  // old rank -> its shard file, loaded on demand
  Backend* be = params_->backend();
  for (size_t b = 0; b < buckets_.size(); ++b) {
    Bucket& bucket = buckets_[b];
    const std::vector<ShardLayout::Param>& saved = layout.buckets[b];
    if (saved.size() != bucket.params.size()) return bad(absl::StrCat("bucket ", b, " differs"));
    for (size_t i = 0; i < saved.size(); ++i) {
      if (saved[i].name != bucket.params[i]->name || saved[i].shape != bucket.layout->shape(i)) {
        return bad(absl::StrCat("parameter ", i, " of bucket ", b, " is ", saved[i].name,
                                ShapeString(saved[i].shape), ", the model has ",
                                bucket.params[i]->name, ShapeString(bucket.layout->shape(i))));
      }
    }
    ASSIGN_OR_RETURN(FlatLayout from, bucket.layout->WithWorldSize(saved_world));
    std::vector<int> sources = SourceShards(from, *bucket.layout, comm_->rank());
    for (int r : sources) {
      if (files.count(r)) continue;
      ASSIGN_OR_RETURN(files[r], LoadSafetensors(dir + "/" + ShardFileName(r, saved_world)));
    }
    for (auto [name, dst] : {std::pair{"value", &bucket.value}, std::pair{"m", &bucket.m},
                             std::pair{"v", &bucket.v}}) {
      const std::string key = ShardTensorName(b, name);
      std::vector<const Tensor*> shards(saved_world, nullptr);
      for (int r : sources) {
        auto it = files[r].tensors.find(key);
        if (it == files[r].tensors.end()) {
          return absl::DataLossError(absl::StrCat(dir, "/", ShardFileName(r, saved_world),
                                                  ": no tensor '", key, "'"));
        }
        shards[r] = &it->second;
      }
      ASSIGN_OR_RETURN(Tensor mine, Reshard(from, shards, *bucket.layout, comm_->rank()));
      be->Copy(mine.mat(), dst->mat());
    }
    be->Fill(bucket.grad.mat(), 0);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::pair<std::string, Tensor>>> Fsdp::Consolidated() {
  std::vector<std::pair<std::string, Tensor>> out;
  for (int b = 0; b < num_buckets(); ++b) {
    RETURN_IF_ERROR(Gather(b, b, b));
    for (Param* p : buckets_[b].params) {
      out.emplace_back(p->name, ToHost(params_->backend(), p->value));
    }
    Release(b);
  }
  return out;
}

}  // namespace modamba
