#include "core/model.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "core/diffusion.h"
#include "core/status_macros.h"

namespace modamba {

double LossReport::total_sum() const { return std::accumulate(sum.begin(), sum.end(), 0.0); }
int64_t LossReport::total_count() const {
  return std::accumulate(count.begin(), count.end(), int64_t{0});
}
void LossReport::Add(const LossReport& other) {
  for (size_t m = 0; m < sum.size(); ++m) {
    sum[m] += other.sum[m];
    count[m] += other.count[m];
  }
  diffusion_sum += other.diffusion_sum;
  diffusion_count += other.diffusion_count;
  diffusion_weight = other.diffusion_weight;
}

namespace {
constexpr int kTimeFeatures = 64;  // sinusoidal features of the diffusion step
}  // namespace

MambaLM::MambaLM(const v1::ModelConfig& config, Backend* backend, DType dtype)
    : config_(config), backend_(backend), dtype_(dtype), params_(backend, dtype) {
  const int d = config.d_model(), v = config.vocab_size();
  embed_ = params_.Add("embed.weight", {v, d}, true);
  for (int l = 0; l < config.n_layer(); ++l) {
    std::string name = absl::StrCat("layers.", l);
    params_.set_bucket(1 + l);
    norms_.emplace_back(&params_, name + ".norm", d, config.norm_eps());
    blocks_.emplace_back(&params_, name + ".mixer", config);
  }
  params_.set_bucket(0);
  norm_f_ = std::make_unique<RmsNorm>(&params_, "norm_f", d, config.norm_eps());
  lm_head_ = config.tie_embeddings() ? embed_ : params_.Add("lm_head.weight", {v, d}, true);
  if (config.patch_dim() > 0) {
    image_in_ = std::make_unique<Linear>(&params_, "image_in", config.patch_dim(), d, 1);
    time_embed_ = std::make_unique<Linear>(&params_, "time_embed", kTimeFeatures, d, 1);
    image_out_ = std::make_unique<Linear>(&params_, "image_out", d, config.patch_dim(), 1);
  }
}

absl::StatusOr<std::unique_ptr<MambaLM>> MambaLM::Create(const v1::ModelConfig& config,
                                                         Backend* backend, DType dtype,
                                                         uint64_t seed) {
  if (!config.has_d_model() || config.n_modalities() < 1 || config.d_state() < 1) {
    return absl::InvalidArgumentError("MambaLM::Create needs a resolved ModelConfig");
  }
  std::unique_ptr<MambaLM> model(new MambaLM(config, backend, dtype));
  model->Init(seed);
  return model;
}

void MambaLM::Init(uint64_t seed) {
  Rng rng = Rng::ForName(seed, embed_->name);
  params_.Set(embed_, NormalInit(dtype_, embed_->value.shape(), config_.init_std(), &rng));
  for (size_t l = 0; l < blocks_.size(); ++l) {
    norms_[l].Init();
    blocks_[l].Init(seed);
  }
  norm_f_->Init();
  if (lm_head_ != embed_) {
    Rng head_rng = Rng::ForName(seed, lm_head_->name);
    params_.Set(lm_head_, NormalInit(dtype_, lm_head_->value.shape(), config_.init_std(), &head_rng));
  }
  if (image_in_) {
    image_in_->Init(seed, 1.0 / std::sqrt(config_.patch_dim()));
    time_embed_->Init(seed, 1.0 / std::sqrt(kTimeFeatures));
    image_out_->Init(seed, 1.0 / std::sqrt(config_.d_model()));
  }
}

absl::Status MambaLM::Validate(const Batch& b) const {
  const int64_t n = b.rows();
  if (b.batch <= 0 || b.seq_len <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("batch: batch (", b.batch, ") and seq_len (",
                                                   b.seq_len, ") must be positive"));
  }
  auto size_error = [&](const char* field, size_t got) {
    return absl::InvalidArgumentError(absl::StrCat("batch: ", field, " has ", got,
                                                   " entries, which does not match the batch"));
  };
  if (b.tokens.size() != n) return size_error("tokens", b.tokens.size());
  if (b.modality.size() != n) return size_error("modality", b.modality.size());
  if (b.doc_start.size() != n) return size_error("doc_start", b.doc_start.size());
  if (b.targets.size() != n) return size_error("targets", b.targets.size());
  if (b.target_modality.size() != n) return size_error("target_modality", b.target_modality.size());
  if (b.loss_mask.size() != n) return size_error("loss_mask", b.loss_mask.size());
  const int v = config_.vocab_size(), m = config_.n_modalities();
  const size_t np = b.patch_rows.size(), pd = config_.patch_dim();
  if (np > 0 && pd == 0) {
    return absl::InvalidArgumentError("batch: patch_rows given but model.patch_dim is 0");
  }
  if (b.patch_input.size() != np * pd) return size_error("patch_input", b.patch_input.size());
  if (b.patch_target.size() != np * pd) return size_error("patch_target", b.patch_target.size());
  if (b.patch_timestep.size() != np) return size_error("patch_timestep", b.patch_timestep.size());
  std::vector<bool> seen(n, false);
  for (size_t i = 0; i < np; ++i) {
    const int32_t r = b.patch_rows[i];
    if (r < 0 || r >= n || seen[r]) {
      return absl::InvalidArgumentError(absl::StrCat("batch: patch_rows[", i, "] = ", r,
                                                     " is out of range or repeated"));
    }
    seen[r] = true;
    if (b.patch_timestep[i] < 0 || b.patch_timestep[i] > config_.diffusion_steps()) {
      return absl::InvalidArgumentError(absl::StrCat("batch: patch_timestep[", i, "] = ",
                                                     b.patch_timestep[i], " is outside [0, ",
                                                     config_.diffusion_steps(), "]"));
    }
  }
  for (int64_t i = 0; i < n; ++i) {
    if (b.tokens[i] < 0 || b.tokens[i] >= v) {
      return absl::InvalidArgumentError(
          absl::StrCat("batch: tokens[", i, "] = ", b.tokens[i], " is outside the vocab [0, ", v, ")"));
    }
    if (b.modality[i] < 0 || b.modality[i] >= m) {
      return absl::InvalidArgumentError(absl::StrCat("batch: modality[", i, "] = ", b.modality[i],
                                                     " is outside [0, ", m, ")"));
    }
    if (b.loss_mask[i] != 0) {
      if (b.targets[i] < 0 || b.targets[i] >= v) {
        return absl::InvalidArgumentError(absl::StrCat("batch: targets[", i, "] = ", b.targets[i],
                                                       " is outside the vocab [0, ", v, ")"));
      }
      if (b.target_modality[i] < 0 || b.target_modality[i] >= m) {
        return absl::InvalidArgumentError(absl::StrCat("batch: target_modality[", i, "] = ",
                                                       b.target_modality[i], " is outside [0, ", m, ")"));
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<LossReport> MambaLM::Evaluate(const Batch& batch) { return Run(batch, false, {}); }

absl::StatusOr<LossReport> MambaLM::ForwardBackward(const Batch& batch,
                                                    const LossDenominators& denominators) {
  return Run(batch, true, denominators);
}

namespace {
bool AnyRouted(const v1::ModelConfig& c) {
  return c.route_in() || c.route_x() || c.route_dt() || c.route_out();
}

// `b` with its per-token fields moved to the rows that hold them when each
// modality's tokens are contiguous (core/backend.h): modality 0's first, in
// sequence order inside each. row_of[n] is the row of position n. doc_start
// stays by position; patches keep their order and point at their new rows.
Batch SortByModality(const Batch& b, int num_modalities, std::vector<int32_t>* row_of) {
  const int64_t n = b.rows();
  std::vector<int32_t> next(num_modalities + 1, 0);  // first free row of each modality
  for (int32_t m : b.modality) next[m + 1]++;
  std::partial_sum(next.begin(), next.end(), next.begin());
  row_of->resize(n);
  for (int64_t i = 0; i < n; ++i) (*row_of)[i] = next[b.modality[i]]++;
  Batch s = b;
  for (int64_t i = 0; i < n; ++i) {
    const int32_t r = (*row_of)[i];
    s.tokens[r] = b.tokens[i];
    s.modality[r] = b.modality[i];
    s.targets[r] = b.targets[i];
    s.target_modality[r] = b.target_modality[i];
    s.loss_mask[r] = b.loss_mask[i];
  }
  for (int32_t& r : s.patch_rows) r = (*row_of)[r];
  return s;
}
}  // namespace

absl::StatusOr<LossReport> MambaLM::Run(const Batch& given, bool backward,
                                        const LossDenominators& denominators) {
  RETURN_IF_ERROR(Validate(given));
  Backend* be = backend_;
  const int64_t n = given.rows();
  const int d = config_.d_model(), v = config_.vocab_size(), m = config_.n_modalities();
  const int n_layer = config_.n_layer();

  // Rows grouped by modality for the whole step when that splits a routed
  // projection's rows into ranges (core/backend.h); `batch` is in row order.
  std::vector<int32_t> row_of;
  Batch sorted;
  if (group_rows_ && AnyRouted(config_) &&
      !std::is_sorted(given.modality.begin(), given.modality.end())) {
    sorted = SortByModality(given, m, &row_of);
  }
  const Batch& batch = row_of.empty() ? given : sorted;
  Tensor row_map = row_of.empty() ? Tensor() : Upload(be, DType::kI32, row_of);

  // Per-batch device state: ids, the document layout and the two routings.
  Tensor tokens = Upload(be, DType::kI32, batch.tokens);
  // Unpredicted rows may hold any target (e.g. -1 padding); the loss ignores them.
  std::vector<int32_t> safe_targets(n);
  for (int64_t i = 0; i < n; ++i) safe_targets[i] = batch.loss_mask[i] ? batch.targets[i] : 0;
  Tensor targets_dev = Upload(be, DType::kI32, safe_targets);
  Tensor doc_start = Upload(be, DType::kU8, batch.doc_start);
  std::unique_ptr<Routing> by_modality = be->MakeRouting(batch.modality.data(), n, m);
  std::vector<int32_t> zeros(n, 0);
  std::unique_ptr<Routing> shared = be->MakeRouting(zeros.data(), n, 1);
  BatchContext ctx{
      SeqLayout{batch.batch, batch.seq_len, &doc_start, row_of.empty() ? nullptr : &row_map},
      by_modality.get(), shared.get()};

  // Loss weights: the mean over the predicted tokens of the whole step.
  const double predicted = denominators.tokens > 0
      ? denominators.tokens
      : std::accumulate(batch.loss_mask.begin(), batch.loss_mask.end(), 0.0);
  std::vector<float> weight(n);
  for (int64_t i = 0; i < n; ++i) {
    weight[i] = predicted > 0 ? static_cast<float>(batch.loss_mask[i] / predicted) : 0.f;
  }
  Tensor weight_dev = Upload(be, DType::kF32, weight);

  // ---- forward ----
  residual_.resize(n_layer + 1);
  normed_.resize(n_layer + 1);
  rstd_.resize(n_layer + 1);
  acts_.resize(n_layer);
  for (int l = 0; l <= n_layer; ++l) {
    if (residual_[l].empty() || residual_[l].dim(0) != n) {
      residual_[l] = be->Empty(dtype_, {n, d});
      // A layer's normed input feeds only in_proj; the final one also
      // the Transfusion rows' gather, so it stays in the model's dtype.
      normed_[l] = be->Empty(l < n_layer ? be->MatmulInputDType(dtype_) : dtype_, {n, d});
      rstd_[l] = be->Empty(dtype_, {n});
    }
  }
  // Bucket 0 (embedding, head, final norm, image linears) stays gathered for
  // the whole step: the embedding's gradient is the backward's last act.
  auto hook = [&](absl::Status (BucketHooks::*fn)(int), int bucket) {
    return hooks_ != nullptr ? (hooks_->*fn)(bucket) : absl::OkStatus();
  };
  RETURN_IF_ERROR(hook(&BucketHooks::BeforeForward, 0));
  be->EmbeddingForward(tokens, embed_->value, residual_[0].mat());

  // Transfusion: a noised patch enters on top of its row's embedding (the PAD
  // token's, which so acts as the patch projection's bias), with its timestep.
  const int64_t np = batch.patch_rows.size();
  const int pd = config_.patch_dim();
  Tensor patch_rows, patch_x, time_features;
  std::unique_ptr<Routing> patch_routing;
  BatchContext patch_ctx;
  if (np > 0) {
    patch_rows = Upload(be, DType::kI32, batch.patch_rows);
    patch_x = UploadMatrix(be, dtype_, batch.patch_input, np, pd);
    std::vector<float> features(np * kTimeFeatures);
    for (int64_t i = 0; i < np; ++i) {
      TimestepFeatures(batch.patch_timestep[i], kTimeFeatures, &features[i * kTimeFeatures]);
    }
    time_features = UploadMatrix(be, dtype_, features, np, kTimeFeatures);
    std::vector<int32_t> one_group(np, 0);
    patch_routing = be->MakeRouting(one_group.data(), np, 1);
    patch_ctx.shared = patch_routing.get();
    Tensor emb = be->Empty(dtype_, {np, d}), t_emb = be->Empty(dtype_, {np, d});
    image_in_->Forward(patch_ctx, patch_x.mat(), emb.mat());
    time_embed_->Forward(patch_ctx, time_features.mat(), t_emb.mat());
    be->Axpy(1.0, t_emb.mat(), emb.mat());
    be->ScatterAddRows(emb.mat(), patch_rows, residual_[0].mat());
  }
  // x_{l+1} = block_l(x_l) + x_l: block l writes its output into
  // residual_[l + 1] and the norm that reads x_{l+1} (layer l + 1's, or the
  // final one) first adds x_l there, in the same pass.
  auto norm_input = [&](const RmsNorm& norm, int l) {
    if (l == 0) {
      norm.Forward(residual_[0].mat(), normed_[0].mat(), &rstd_[0]);
    } else {
      norm.AddForward(residual_[l].mat(), residual_[l - 1].mat(), normed_[l].mat(), &rstd_[l]);
    }
  };
  for (int l = 0; l < n_layer; ++l) {
    RETURN_IF_ERROR(hook(&BucketHooks::BeforeForward, 1 + l));  // also gathers norms_[l]
    norm_input(norms_[l], l);
    blocks_[l].Forward(ctx, normed_[l].mat(), residual_[l + 1].mat(), &acts_[l]);
    RETURN_IF_ERROR(hook(&BucketHooks::AfterForward, 1 + l));
  }
  norm_input(*norm_f_, n_layer);
  Mat head{lm_head_->value.raw(), dtype_, be->device(), v, d, d};
  Tensor losses_dev = be->Empty(dtype_, {n});
  Tensor dnormed = be->Empty(dtype_, {n, d});  // d(loss)/d(final normed hidden)
  if (backward) {
    // Training never reads the logits: the fused op may keep them narrow.
    Mat dhead{lm_head_->grad.raw(), dtype_, be->device(), v, d, d};
    be->LmHeadCrossEntropy(normed_[n_layer].mat(), head, targets_dev, weight_dev, &losses_dev,
                           dnormed.mat(), dhead);
  } else {
    if (logits_.empty() || logits_.dim(0) != n) logits_ = be->Empty(dtype_, {n, v});
    // logits_ is in the batch's order: sorted rows' logits land in `scratch`,
    // go back to their tokens' rows, and the loss runs on them in place.
    Tensor scratch = be->Empty(dtype_, {n, v});
    const Mat by_row = row_of.empty() ? logits_.mat() : scratch.mat();
    be->Gemm(false, true, 1.0, normed_[n_layer].mat(), head, 0.0, by_row);
    if (!row_of.empty()) be->GatherRows(by_row, row_map, logits_.mat());
    be->CrossEntropy(by_row, targets_dev, weight_dev, &losses_dev, scratch.mat());
  }
  Tensor losses(dtype_, {n});
  be->Copy(losses_dev.mat(), losses.mat());
  auto loss_at = [&](int64_t i) -> double {
    return dtype_ == DType::kF64 ? losses.data<double>()[i] : losses.data<float>()[i];
  };
  // Summed in sequence order, so the report does not depend on the rows' order.
  LossReport report{std::vector<double>(m, 0.0), std::vector<int64_t>(m, 0)};
  for (int64_t i = 0; i < n; ++i) {
    if (!given.loss_mask[i]) continue;
    report.sum[given.target_modality[i]] += loss_at(row_of.empty() ? i : row_of[i]);
    report.count[given.target_modality[i]]++;
  }
  // Transfusion: image_out predicts each patch row's eps; diff = pred - eps.
  Tensor patch_hidden, patch_diff;
  if (np > 0) {
    patch_hidden = be->Empty(dtype_, {np, d});
    be->GatherRows(normed_[n_layer].mat(), patch_rows, patch_hidden.mat());
    patch_diff = be->Empty(dtype_, {np, pd});
    image_out_->Forward(patch_ctx, patch_hidden.mat(), patch_diff.mat());
    Tensor eps = UploadMatrix(be, dtype_, batch.patch_target, np, pd);
    be->Axpy(-1.0, eps.mat(), patch_diff.mat());
    report.diffusion_sum = be->SumSquares({patch_diff.mat()});
    report.diffusion_count = np * pd;
  }
  report.diffusion_weight = config_.patch_dim() > 0 ? config_.diffusion_weight() : 0.0;
  if (!backward) {
    RETURN_IF_ERROR(hook(&BucketHooks::AfterForward, 0));
    return report;
  }

  // ---- backward ----
  Tensor dres = be->Empty(dtype_, {n, d});
  if (np > 0) {
    // d(lambda * mean(diff^2)) / d(pred) = 2 lambda diff / count
    const double count = denominators.patch_elements > 0 ? denominators.patch_elements : np * pd;
    be->Scale(2.0 * config_.diffusion_weight() / count, patch_diff.mat());
    Tensor dhidden = be->Empty(dtype_, {np, d});
    image_out_->Backward(patch_ctx, patch_hidden.mat(), patch_diff.mat(), dhidden.mat(), false);
    be->ScatterAddRows(dhidden.mat(), patch_rows, dnormed.mat());
  }
  be->Fill(dres.mat(), 0);
  norm_f_->Backward(residual_[n_layer].mat(), rstd_[n_layer], dnormed.mat(), dres.mat());
  for (int l = n_layer - 1; l >= 0; --l) {
    // dres holds d(loss)/d(x_{l+1}); the residual passes it through unchanged.
    RETURN_IF_ERROR(hook(&BucketHooks::BeforeBackward, 1 + l));
    blocks_[l].Backward(ctx, normed_[l].mat(), acts_[l], dres.mat(), dnormed.mat());
    norms_[l].Backward(residual_[l].mat(), rstd_[l], dnormed.mat(), dres.mat());
    RETURN_IF_ERROR(hook(&BucketHooks::AfterBackward, 1 + l));
  }
  be->EmbeddingBackward(tokens, dres.mat(), &embed_->grad);
  if (np > 0) {
    Tensor demb = be->Empty(dtype_, {np, d});
    be->GatherRows(dres.mat(), patch_rows, demb.mat());
    Tensor unused_dx = be->Empty(dtype_, {np, std::max(pd, kTimeFeatures)});
    image_in_->Backward(patch_ctx, patch_x.mat(), demb.mat(), unused_dx.mat().Cols(0, pd), false);
    time_embed_->Backward(patch_ctx, time_features.mat(), demb.mat(),
                          unused_dx.mat().Cols(0, kTimeFeatures), false);
  }
  RETURN_IF_ERROR(hook(&BucketHooks::AfterBackward, 0));
  return report;
}

}  // namespace modamba
