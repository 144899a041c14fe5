#include "core/model.h"

#include <cmath>
#include <numeric>

#include "absl/strings/str_cat.h"
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
}

MambaLM::MambaLM(const v1::ModelConfig& config, Backend* backend, DType dtype)
    : config_(config), backend_(backend), dtype_(dtype), params_(backend, dtype) {
  const int d = config.d_model(), v = config.vocab_size();
  embed_ = params_.Add("embed.weight", {v, d}, true);
  for (int l = 0; l < config.n_layer(); ++l) {
    std::string name = absl::StrCat("layers.", l);
    norms_.emplace_back(&params_, name + ".norm", d, config.norm_eps());
    blocks_.emplace_back(&params_, name + ".mixer", config);
  }
  norm_f_ = std::make_unique<RmsNorm>(&params_, "norm_f", d, config.norm_eps());
  lm_head_ = config.tie_embeddings() ? embed_ : params_.Add("lm_head.weight", {v, d}, true);
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
}

absl::Status MambaLM::Validate(const Batch& b) const {
  const int64_t n = b.rows();
  if (b.batch <= 0 || b.seq_len <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("batch: batch (", b.batch, ") and seq_len (",
                                                   b.seq_len, ") must be positive"));
  }
  auto size_error = [&](const char* field, size_t got) {
    return absl::InvalidArgumentError(absl::StrCat("batch: ", field, " has ", got,
                                                   " entries, expected batch * seq_len = ", n));
  };
  if (b.tokens.size() != n) return size_error("tokens", b.tokens.size());
  if (b.modality.size() != n) return size_error("modality", b.modality.size());
  if (b.doc_start.size() != n) return size_error("doc_start", b.doc_start.size());
  if (b.targets.size() != n) return size_error("targets", b.targets.size());
  if (b.target_modality.size() != n) return size_error("target_modality", b.target_modality.size());
  if (b.loss_mask.size() != n) return size_error("loss_mask", b.loss_mask.size());
  const int v = config_.vocab_size(), m = config_.n_modalities();
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

absl::StatusOr<LossReport> MambaLM::Evaluate(const Batch& batch) { return Run(batch, false, 1.0); }

absl::StatusOr<LossReport> MambaLM::ForwardBackward(const Batch& batch, double loss_scale) {
  return Run(batch, true, loss_scale);
}

namespace {
// Copies a host vector into a new device tensor.
template <typename T>
Tensor Upload(Backend* be, DType dtype, const std::vector<T>& host) {
  Tensor t = be->Empty(dtype, {static_cast<int64_t>(host.size())});
  Mat src{const_cast<T*>(host.data()), dtype, Device::kCpu, 1, t.numel(), t.numel()};
  be->Copy(src, t.mat());
  return t;
}
}  // namespace

absl::StatusOr<LossReport> MambaLM::Run(const Batch& batch, bool backward, double loss_scale) {
  RETURN_IF_ERROR(Validate(batch));
  Backend* be = backend_;
  const int64_t n = batch.rows();
  const int d = config_.d_model(), v = config_.vocab_size(), m = config_.n_modalities();
  const int n_layer = config_.n_layer();

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
  BatchContext ctx{SeqLayout{batch.batch, batch.seq_len, &doc_start}, by_modality.get(), shared.get()};

  // Loss weights: the mean over predicted tokens.
  const double predicted = std::accumulate(batch.loss_mask.begin(), batch.loss_mask.end(), 0.0);
  std::vector<float> weight(n);
  for (int64_t i = 0; i < n; ++i) {
    weight[i] = predicted > 0 ? static_cast<float>(batch.loss_mask[i] * loss_scale / predicted) : 0.f;
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
      normed_[l] = be->Empty(dtype_, {n, d});
      rstd_[l] = be->Empty(dtype_, {n});
    }
  }
  be->EmbeddingForward(tokens, embed_->value, residual_[0].mat());
  Tensor block_out = be->Empty(dtype_, {n, d});
  for (int l = 0; l < n_layer; ++l) {
    norms_[l].Forward(residual_[l].mat(), normed_[l].mat(), &rstd_[l]);
    blocks_[l].Forward(ctx, normed_[l].mat(), block_out.mat(), &acts_[l]);
    be->Copy(residual_[l].mat(), residual_[l + 1].mat());
    be->Axpy(1.0, block_out.mat(), residual_[l + 1].mat());
  }
  norm_f_->Forward(residual_[n_layer].mat(), normed_[n_layer].mat(), &rstd_[n_layer]);
  if (logits_.empty() || logits_.dim(0) != n) logits_ = be->Empty(dtype_, {n, v});
  Mat head{lm_head_->value.raw(), dtype_, be->device(), v, d, d};
  be->Gemm(false, true, 1.0, normed_[n_layer].mat(), head, 0.0, logits_.mat());

  Tensor losses_dev = be->Empty(dtype_, {n});
  Tensor dlogits = be->Empty(dtype_, {n, v});
  be->CrossEntropy(logits_.mat(), targets_dev, weight_dev, &losses_dev, dlogits.mat());
  Tensor losses(dtype_, {n});
  be->Copy(losses_dev.mat(), losses.mat());
  auto loss_at = [&](int64_t i) -> double {
    return dtype_ == DType::kF64 ? losses.data<double>()[i] : losses.data<float>()[i];
  };
  LossReport report{std::vector<double>(m, 0.0), std::vector<int64_t>(m, 0)};
  for (int64_t i = 0; i < n; ++i) {
    if (!batch.loss_mask[i]) continue;
    report.sum[batch.target_modality[i]] += loss_at(i);
    report.count[batch.target_modality[i]]++;
  }
  if (!backward) return report;

  // ---- backward ----
  Tensor dres = be->Empty(dtype_, {n, d});
  Tensor dnormed = be->Empty(dtype_, {n, d});
  Mat dhead{lm_head_->grad.raw(), dtype_, be->device(), v, d, d};
  be->Gemm(false, false, 1.0, dlogits.mat(), head, 0.0, dnormed.mat());
  be->Gemm(true, false, 1.0, dlogits.mat(), normed_[n_layer].mat(), 1.0, dhead);
  be->Fill(dres.mat(), 0);
  norm_f_->Backward(residual_[n_layer].mat(), rstd_[n_layer], dnormed.mat(), dres.mat());
  for (int l = n_layer - 1; l >= 0; --l) {
    // dres holds d(loss)/d(x_{l+1}); the residual passes it through unchanged.
    blocks_[l].Backward(ctx, normed_[l].mat(), acts_[l], dres.mat(), dnormed.mat());
    norms_[l].Backward(residual_[l].mat(), rstd_[l], dnormed.mat(), dres.mat());
  }
  be->EmbeddingBackward(tokens, dres.mat(), &embed_->grad);
  return report;
}

}  // namespace modamba
