#include "trainer/train_loop.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "core/batch_source.h"
#include "core/checkpoint.h"
#include "core/file_util.h"
#include "core/flops.h"
#include "core/status_macros.h"
#include "trainer/fsdp.h"
#include "trainer/local_collectives.h"

namespace modamba {
namespace {

constexpr double kPeakFlopsPerGpu = 989e12;  // H100 SXM dense bf16

// Sums `values` over the group (through a device buffer of the backend).
absl::Status AllReduceSum(Collectives* comm, Backend* be, std::vector<double>* values) {
  const int64_t n = values->size();
  Mat host{values->data(), DType::kF64, Device::kCpu, 1, n, n};
  Tensor buffer = be->Empty(DType::kF64, {n});
  be->Copy(host, buffer.mat());
  RETURN_IF_ERROR(comm->AllReduce(BufferView::Of(buffer)));
  be->Copy(buffer.mat(), host);
  return absl::OkStatus();
}

// Per-modality sums and counts, then the diffusion terms, as one vector.
std::vector<double> Flatten(const LossReport& r) {
  std::vector<double> v(r.sum);
  v.insert(v.end(), r.count.begin(), r.count.end());
  v.push_back(r.diffusion_sum);
  v.push_back(r.diffusion_count);
  return v;
}

LossReport Unflatten(const std::vector<double>& v, int m, double diffusion_weight) {
  LossReport r{std::vector<double>(v.begin(), v.begin() + m), std::vector<int64_t>(m)};
  for (int i = 0; i < m; ++i) r.count[i] = static_cast<int64_t>(v[m + i]);
  r.diffusion_sum = v[2 * m];
  r.diffusion_count = static_cast<int64_t>(v[2 * m + 1]);
  r.diffusion_weight = diffusion_weight;
  return r;
}

absl::StatusOr<LossReport> SumOverRanks(Collectives* comm, Backend* be, const LossReport& local,
                                        const v1::ModelConfig& model) {
  std::vector<double> v = Flatten(local);
  RETURN_IF_ERROR(AllReduceSum(comm, be, &v));
  return Unflatten(v, model.n_modalities(), local.diffusion_weight);
}

// "1.2345 (text 1.0000 on 5120 tok, image ...)": the objective, then each
// modality's loss and how many of its tokens it was measured on.
std::string Describe(const LossReport& r) {
  std::string s = absl::StrFormat("%.4f", r.objective());
  if (r.count.size() > 1 || r.diffusion_count > 0) {
    std::vector<std::string> parts;
    for (size_t m = 0; m < r.count.size(); ++m) {
      if (r.count[m] > 0) {
        parts.push_back(absl::StrFormat("%s %.4f on %d tok", ModalityLabel(m), r.mean(m), r.count[m]));
      }
    }
    if (r.diffusion_count > 0) parts.push_back(absl::StrFormat("mse %.4f", r.diffusion_mse()));
    absl::StrAppend(&s, " (", absl::StrJoin(parts, ", "), ")");
  }
  return s;
}

constexpr char kNonfinitePayload[] = "modamba.dev/nonfinite";

absl::Status NonfiniteError(const std::string& message) {
  absl::Status status = absl::FailedPreconditionError(message);
  status.SetPayload(kNonfinitePayload, absl::Cord());
  return status;
}

// "" for a sound step; else what was not finite, naming the step: the
// reduced loss, the gradient norm (Fsdp::Step then skipped the update) or,
// as a backstop, the parameters and moments after an applied update.
absl::StatusOr<std::string> NonfiniteEvent(int64_t step, const LossReport& loss,
                                           const OptimizerStepInfo& info, Fsdp* fsdp) {
  if (!std::isfinite(loss.objective())) {
    return absl::StrFormat("step %d: non-finite loss (%s)", step, Describe(loss));
  }
  if (!std::isfinite(info.grad_norm)) {
    return absl::StrFormat("step %d: non-finite gradient norm (%g; loss %.4f)", step,
                           info.grad_norm, loss.objective());
  }
  if (!info.applied) {
    return absl::StrFormat("step %d: gradient norm %g overflows float32 when squared (loss %.4f)",
                           step, info.grad_norm, loss.objective());
  }
  ASSIGN_OR_RETURN(bool finite, fsdp->StateFinite());
  if (finite) return std::string();
  return absl::StrFormat(
      "step %d: the update made parameters or AdamW moments non-finite (gradient norm %g)", step,
      info.grad_norm);
}

}  // namespace

absl::StatusOr<std::vector<StepRecord>> Train(const v1::TrainConfig& c, const TrainContext& ctx) {
  Backend* be = ctx.backend;
  std::unique_ptr<Collectives> local;
  Collectives* comm = ctx.comm;
  if (comm == nullptr) {
    local = NewLocalCollectives(be);
    comm = local.get();
  }
  const int rank = comm->rank(), world = comm->world_size();
  std::ostream* log = rank == 0 ? ctx.log : nullptr;
  ASSIGN_OR_RETURN(std::unique_ptr<BatchSource> source, OpenBatchSource(c, rank, world));
  ASSIGN_OR_RETURN(std::unique_ptr<LanguageModel> model,
                   LanguageModel::Create(c.model(), be, DType::kF32, c.seed()));
  ASSIGN_OR_RETURN(FsdpOptions fsdp_options, FsdpOptionsFrom(c.fsdp()));
  ASSIGN_OR_RETURN(HybridGroups hybrid,
                   ConnectHybridGroups(*comm, c.fsdp().shard_group_size(), ctx.new_comm));
  fsdp_options.on_prefetch = ctx.on_prefetch;
  if (hybrid.shard) {
    fsdp_options.replicas = hybrid.replicas.get();
    fsdp_options.all = comm;
  }
  ASSIGN_OR_RETURN(std::unique_ptr<Fsdp> fsdp,
                   Fsdp::Create(model->mutable_params(), hybrid.shard ? hybrid.shard.get() : comm,
                                c.optimizer(), fsdp_options));
  model->set_bucket_hooks(fsdp.get());
  model->set_recompute_activations(c.recompute_activations());
  if (log) {
    *log << absl::StrFormat("FSDP over %d rank(s): %d buckets, %.1f MiB of parameters, gradients and "
                            "AdamW moments per rank\n",
                            world, fsdp->num_buckets(), fsdp->shard_bytes() / 1048576.0);
  }
  const double flops_per_token = TrainingFlopsPerToken(c.model(), c.seq_len());
  const int64_t tokens_per_step = int64_t{c.batch_size()} * c.seq_len();

  int64_t first_step = 1;
  double flops = 0;
  std::string latest = ctx.resume_from;
  if (latest.empty() && ctx.resume_local && !c.checkpoint_dir().empty()) {
    ASSIGN_OR_RETURN(latest, LatestCheckpoint(c.checkpoint_dir()));
  }
  // Where a rollback returns to: the newest checkpoint of this run on disk.
  std::string rollback_to;
  if (!latest.empty()) {
    ASSIGN_OR_RETURN(v1::CheckpointManifest manifest, ReadManifest(latest));
    RETURN_IF_ERROR(VerifyCheckpoint(latest));
    RETURN_IF_ERROR(fsdp->LoadShards(latest));
    RETURN_IF_ERROR(source->Seek(manifest.data_position()));
    first_step = manifest.step() + 1;
    flops = manifest.flops();
    if (log) *log << "resumed from " << latest << " at step " << manifest.step() << "\n";
    if (ctx.remove_resume_copy) {
      RETURN_IF_ERROR(RemoveTree(latest));
    } else {
      rollback_to = latest;
    }
  }

  // Every rank writes its shard between rank 0's start and seal (core/checkpoint.h).
  auto checkpoint = [&](int64_t step) -> absl::Status {
    const std::string dir = CheckpointPath(c.checkpoint_dir(), step);
    if (rank == 0) RETURN_IF_ERROR(StartCheckpoint(c.checkpoint_dir(), step));
    RETURN_IF_ERROR(comm->Barrier());
    RETURN_IF_ERROR(fsdp->SaveShard(CheckpointStagingPath(c.checkpoint_dir(), step)));
    RETURN_IF_ERROR(comm->Barrier());
    if (rank == 0) {
      v1::CheckpointManifest manifest;
      *manifest.mutable_config() = c;
      manifest.set_step(step);
      manifest.set_flops(flops);
      manifest.set_data_position(source->position());
      manifest.set_world_size(world);
      RETURN_IF_ERROR(SealCheckpoint(c.checkpoint_dir(), step, manifest));
      if (log) *log << "checkpoint " << dir << "\n";
    }
    RETURN_IF_ERROR(comm->Barrier());
    if (ctx.on_checkpoint) RETURN_IF_ERROR(ctx.on_checkpoint(dir, step));
    rollback_to = dir;
    if (rank == 0 && ctx.keep_checkpoints > 0) {
      RETURN_IF_ERROR(PruneCheckpoints(c.checkpoint_dir(), ctx.keep_checkpoints));
    }
    return absl::OkStatus();
  };

  std::vector<StepRecord> records;
  const int64_t last_step =
      ctx.stop_after > 0 ? std::min<int64_t>(ctx.stop_after, c.steps()) : c.steps();
  int nonfinite_steps = 0;
  // What ends every step that counts, a skipped one too.
  auto end_step = [&](int64_t step) -> absl::Status {
    if (ctx.should_stop && ctx.should_stop()) {
      return absl::CancelledError(absl::StrCat("stopped on request after step ", step));
    }
    const bool periodic = c.checkpoint_every() > 0 && step % c.checkpoint_every() == 0;
    if (!c.checkpoint_dir().empty() && (periodic || step == last_step)) {
      RETURN_IF_ERROR(checkpoint(step));
    }
    return absl::OkStatus();
  };
  for (int64_t step = first_step; step <= last_step; ++step) {
    auto start = std::chrono::steady_clock::now();
    fsdp->StartProfile();
    ASSIGN_OR_RETURN(std::vector<Batch> micro, source->NextStep());
    std::vector<double> counts = {0, 0};
    for (const Batch& b : micro) {
      for (float m : b.loss_mask) counts[0] += m;
      counts[1] += b.patch_input.size();
    }
    RETURN_IF_ERROR(AllReduceSum(comm, be, &counts));
    const LossDenominators denominators{counts[0], counts[1]};
    LossReport local{std::vector<double>(c.model().n_modalities(), 0.0),
                     std::vector<int64_t>(c.model().n_modalities(), 0)};
    for (const Batch& b : micro) {
      ASSIGN_OR_RETURN(LossReport r, model->ForwardBackward(b, denominators));
      local.Add(r);
    }
    ASSIGN_OR_RETURN(OptimizerStepInfo info,
                     fsdp->Step(step, c.steps(), !std::isfinite(local.objective())));
    StepRecord rec;
    rec.step = step;
    ASSIGN_OR_RETURN(rec.loss, SumOverRanks(comm, be, local, c.model()));
    ASSIGN_OR_RETURN(std::string nonfinite, NonfiniteEvent(step, rec.loss, info, fsdp.get()));
    if (!nonfinite.empty()) {
      // Every rank sees the same reduced loss, norm and state check, so all
      // take this branch together.
      if (c.on_nonfinite() == "fail") {
        return NonfiniteError(absl::StrCat(nonfinite, "; on_nonfinite: fail"));
      }
      if (++nonfinite_steps > c.max_nonfinite_steps()) {
        return NonfiniteError(absl::StrCat(nonfinite, "; more than max_nonfinite_steps (",
                                           c.max_nonfinite_steps(), ") non-finite steps"));
      }
      if (c.on_nonfinite() == "skip_step" && info.applied) {
        return NonfiniteError(absl::StrCat(nonfinite, "; on_nonfinite: skip_step cannot undo it"));
      }
      std::string action = "step skipped";
      if (c.on_nonfinite() == "rollback") {
        if (rollback_to.empty()) {
          return NonfiniteError(
              absl::StrCat(nonfinite, "; on_nonfinite: rollback, but this run has no checkpoint yet"));
        }
        ASSIGN_OR_RETURN(v1::CheckpointManifest manifest, ReadManifest(rollback_to));
        RETURN_IF_ERROR(fsdp->LoadShards(rollback_to));
        // The data position stays: the batches that led here are not repeated.
        step = manifest.step();
        flops = manifest.flops();
        action = absl::StrCat("rolled back to step ", step);
      } else {
        flops += flops_per_token * tokens_per_step;
      }
      if (log) {
        *log << absl::StrFormat("%s; %s (%d of max_nonfinite_steps %d)\n", nonfinite, action,
                                nonfinite_steps, c.max_nonfinite_steps());
      }
      if (c.on_nonfinite() == "skip_step") RETURN_IF_ERROR(end_step(step));
      continue;
    }
    be->Synchronize();
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    ASSIGN_OR_RETURN(rec.profile, fsdp->EndProfile());
    flops += flops_per_token * tokens_per_step;
    rec.lr = info.lr;
    rec.grad_norm = info.grad_norm;
    rec.tokens_per_second = tokens_per_step / seconds;
    if (be->device() == Device::kCuda) {
      rec.mfu = flops_per_token * tokens_per_step / seconds / (kPeakFlopsPerGpu * world);
    }
    rec.flops = flops;
    if (c.eval_every() > 0 && (step % c.eval_every() == 0 || step == c.steps())) {
      ASSIGN_OR_RETURN(std::vector<Batch> val, source->Validation());
      LossReport v{std::vector<double>(c.model().n_modalities(), 0.0),
                   std::vector<int64_t>(c.model().n_modalities(), 0)};
      for (const Batch& b : val) {
        ASSIGN_OR_RETURN(LossReport r, model->Evaluate(b));
        v.Add(r);
      }
      ASSIGN_OR_RETURN(rec.val, SumOverRanks(comm, be, v, c.model()));
      rec.evaluated = true;
    }
    if (log && (step % c.log_every() == 0 || step == last_step || rec.evaluated)) {
      *log << absl::StrFormat("step %5d/%d | loss %s | lr %.2e | grad norm %.3f | %8.0f tok/s",
                              step, c.steps(), Describe(rec.loss), rec.lr, rec.grad_norm,
                              rec.tokens_per_second);
      if (rec.mfu > 0) *log << absl::StrFormat(" | MFU %.1f%%", 100 * rec.mfu);
      if (world > 1) {
        double exposed = 0, idle = 0;
        for (const StepProfile& p : rec.profile) {
          exposed = std::max(exposed, p.exposed_comm_s);
          idle = std::max(idle, p.idle_s);
        }
        *log << absl::StrFormat(" | exposed comm %.1f ms, idle %.1f ms (worst rank)", 1e3 * exposed,
                                1e3 * idle);
      }
      *log << absl::StrFormat(" | %.3e FLOPs", rec.flops);
      if (rec.evaluated) *log << " | val " << Describe(rec.val);
      *log << std::endl;
    }
    records.push_back(rec);
    if (ctx.on_step) ctx.on_step(rec);
    RETURN_IF_ERROR(end_step(step));
  }
  return records;
}

bool IsNonfiniteError(const absl::Status& status) {
  return status.GetPayload(kNonfinitePayload).has_value();
}

}  // namespace modamba
