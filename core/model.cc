#include "core/model.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "core/mamba_block.h"
#include "core/transformer_block.h"
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

std::string ModalityLabel(int m) {
  static const char* kNames[] = {"text", "image", "speech"};
  return m < 3 ? kNames[m] : absl::StrCat("m", m);
}

LanguageModel::LanguageModel(const v1::ModelConfig& config, Backend* backend, DType dtype)
    : config_(config), backend_(backend), dtype_(dtype), params_(backend, dtype) {
  const int d = config.d_model(), v = config.vocab_size();
  embed_ = params_.Add("embed.weight", {v, d}, true);
  for (int l = 0; l < config.n_layer(); ++l) {
    params_.set_bucket(1 + l);
    const std::string name = absl::StrCat("layers.", l);
    if (config.architecture() == v1::ModelConfig::TRANSFORMER) {
      blocks_.push_back(std::make_unique<TransformerBlock>(&params_, name, config));
    } else {
      blocks_.push_back(std::make_unique<MambaBlock>(&params_, name, config));
    }
  }
  params_.set_bucket(0);
  norm_f_ = std::make_unique<RmsNorm>(&params_, "norm_f", d, config.norm_eps());
  lm_head_ = config.tie_embeddings() ? embed_ : params_.Add("lm_head.weight", {v, d}, true);
  if (config.patch_dim() > 0) {
    patches_ = std::make_unique<PatchLayer>(&params_, config.patch_dim(), d);
  }
}

absl::StatusOr<std::unique_ptr<LanguageModel>> LanguageModel::Create(const v1::ModelConfig& config,
                                                                     Backend* backend, DType dtype,
                                                                     uint64_t seed) {
  if (!config.has_d_model() || config.n_modalities() < 1 || config.d_state() < 1) {
    return absl::InvalidArgumentError("LanguageModel::Create needs a resolved ModelConfig");
  }
  std::unique_ptr<LanguageModel> model(new LanguageModel(config, backend, dtype));
  model->Init(seed);
  return model;
}

void LanguageModel::Init(uint64_t seed) {
  Rng rng = Rng::ForName(seed, embed_->name);
  params_.Set(embed_, NormalInit(dtype_, embed_->value.shape(), config_.init_std(), &rng));
  for (const std::unique_ptr<Block>& block : blocks_) block->Init(seed);
  norm_f_->Init();
  if (lm_head_ != embed_) {
    Rng head_rng = Rng::ForName(seed, lm_head_->name);
    params_.Set(lm_head_, NormalInit(dtype_, lm_head_->value.shape(), config_.init_std(), &head_rng));
  }
  if (patches_) patches_->Init(seed);
}

absl::Status LanguageModel::Validate(const Batch& b) const {
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

absl::StatusOr<LossReport> LanguageModel::Evaluate(const Batch& batch) {
  return Run(batch, false, {});
}

absl::StatusOr<LossReport> LanguageModel::ForwardBackward(const Batch& batch,
                                                          const LossDenominators& denominators) {
  return Run(batch, true, denominators);
}

namespace {
bool AnyRouted(const v1::ModelConfig& c) {
  return c.route_in() || c.route_x() || c.route_dt() || c.route_out() || c.route_qkv() ||
         c.route_attn_out() || c.route_ffn_in() || c.route_ffn_out() || c.route_norms();
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

struct LanguageModel::DeviceBatch {
  const Batch* given = nullptr;  // in sequence order
  // Rows grouped by modality for the whole step when that splits a routed
  // projection's rows into ranges (core/backend.h): `sorted` holds the
  // batch in row order, row_of[n] the row of position n; both empty when the
  // rows are the positions.
  Batch sorted;
  std::vector<int32_t> row_of;
  Tensor row_map;
  const Batch& rows() const { return row_of.empty() ? *given : sorted; }

  // The per-batch device state: ids, the document layout and the routings.
  Tensor tokens, targets, doc_start, weight;
  std::unique_ptr<Routing> by_modality, shared;
  BatchContext ctx;
  PatchLayer::Patches patches;
};

LanguageModel::DeviceBatch LanguageModel::PrepareBatch(const Batch& given,
                                                       const LossDenominators& denominators) const {
  Backend* be = backend_;
  const int64_t n = given.rows();
  const int m = config_.n_modalities();
  DeviceBatch b;
  b.given = &given;
  if (group_rows_ && AnyRouted(config_) &&
      !std::is_sorted(given.modality.begin(), given.modality.end())) {
    b.sorted = SortByModality(given, m, &b.row_of);
    b.row_map = Upload(be, DType::kI32, b.row_of);
  }
  const Batch& batch = b.rows();
  b.tokens = Upload(be, DType::kI32, batch.tokens);
  // Unpredicted rows may hold any target (e.g. -1 padding); the loss ignores them.
  std::vector<int32_t> safe_targets(n);
  for (int64_t i = 0; i < n; ++i) safe_targets[i] = batch.loss_mask[i] ? batch.targets[i] : 0;
  b.targets = Upload(be, DType::kI32, safe_targets);
  b.doc_start = Upload(be, DType::kU8, batch.doc_start);
  b.by_modality = be->MakeRouting(batch.modality.data(), n, m);
  std::vector<int32_t> zeros(n, 0);
  b.shared = be->MakeRouting(zeros.data(), n, 1);
  b.ctx = BatchContext{
      SeqLayout{batch.batch, batch.seq_len, &b.doc_start, b.row_of.empty() ? nullptr : &b.row_map},
      b.by_modality.get(), b.shared.get()};

  // Loss weights: the mean over the predicted tokens of the whole step.
  const double predicted = denominators.tokens > 0
      ? denominators.tokens
      : std::accumulate(batch.loss_mask.begin(), batch.loss_mask.end(), 0.0);
  std::vector<float> weight(n);
  for (int64_t i = 0; i < n; ++i) {
    weight[i] = predicted > 0 ? static_cast<float>(batch.loss_mask[i] / predicted) : 0.f;
  }
  b.weight = Upload(be, DType::kF32, weight);
  if (!batch.patch_rows.empty()) {
    b.patches = patches_->Upload(batch.patch_rows, batch.patch_input, batch.patch_timestep);
  }
  return b;
}

absl::Status LanguageModel::Hook(absl::Status (BucketHooks::*fn)(int), int bucket) const {
  return hooks_ != nullptr ? (hooks_->*fn)(bucket) : absl::OkStatus();
}

Block::Activations* LanguageModel::LayerActs(int layer) const {
  return acts_[recompute_ ? 0 : layer].get();
}

absl::Status LanguageModel::TrunkForward(const DeviceBatch& b) {
  Backend* be = backend_;
  const int64_t n = b.given->rows();
  const int d = config_.d_model(), n_layer = config_.n_layer();
  residual_.resize(n_layer + 1);
  // Recomputing, the layers share one set of activations (every block of a
  // model is of one kind).
  acts_.resize(recompute_ ? 1 : n_layer);
  for (int l = 0; l <= n_layer; ++l) {
    if (residual_[l].empty() || residual_[l].dim(0) != n) residual_[l] = be->Empty(dtype_, {n, d});
  }
  for (size_t l = 0; l < acts_.size(); ++l) {
    if (acts_[l] == nullptr) acts_[l] = blocks_[l]->NewActivations();
  }
  if (normed_f_.empty() || normed_f_.dim(0) != n) {
    // The final norm's output also feeds the Transfusion rows' gather, so it
    // stays in the model's dtype.
    normed_f_ = be->Empty(dtype_, {n, d});
    rstd_f_ = be->Empty(dtype_, {n});
  }
  // Bucket 0 (embedding, head, final norm, image linears) stays gathered for
  // the whole step: the embedding's gradient is the backward's last act.
  RETURN_IF_ERROR(Hook(&BucketHooks::BeforeForward, 0));
  be->EmbeddingForward(b.tokens, embed_->value, residual_[0].mat());
  // A noised patch enters on top of its row's embedding (the PAD token's,
  // which so acts as the patch projection's bias), with its timestep.
  if (b.patches.count > 0) patches_->AddInput(b.patches, residual_[0].mat());
  for (int l = 0; l < n_layer; ++l) {
    RETURN_IF_ERROR(Hook(&BucketHooks::BeforeForward, 1 + l));
    blocks_[l]->Forward(b.ctx, residual_[l].mat(), residual_[l + 1].mat(), LayerActs(l));
    RETURN_IF_ERROR(Hook(&BucketHooks::AfterForward, 1 + l));
  }
  norm_f_->Forward(residual_[n_layer].mat(), normed_f_.mat(), &rstd_f_);
  return absl::OkStatus();
}

LossReport LanguageModel::HeadAndLoss(const DeviceBatch& b, bool backward, Tensor* dnormed) {
  Backend* be = backend_;
  const Batch& given = *b.given;
  const int64_t n = given.rows();
  const int d = config_.d_model(), v = config_.vocab_size(), m = config_.n_modalities();
  Mat head{lm_head_->value.raw(), dtype_, be->device(), v, d, d};
  Tensor losses_dev = be->Empty(dtype_, {n});
  *dnormed = be->Empty(dtype_, {n, d});  // d(loss)/d(final normed hidden)
  if (backward) {
    // Training never reads the logits: the fused op may keep them narrow.
    Mat dhead{lm_head_->grad.raw(), dtype_, be->device(), v, d, d};
    be->LmHeadCrossEntropy(normed_f_.mat(), head, b.targets, b.weight, &losses_dev,
                           dnormed->mat(), dhead);
  } else {
    if (logits_.empty() || logits_.dim(0) != n) logits_ = be->Empty(dtype_, {n, v});
    // logits_ is in the batch's order: sorted rows' logits land in `scratch`,
    // go back to their tokens' rows, and the loss runs on them in place.
    Tensor scratch = be->Empty(dtype_, {n, v});
    const Mat by_row = b.row_of.empty() ? logits_.mat() : scratch.mat();
    be->Gemm(false, true, 1.0, normed_f_.mat(), head, 0.0, by_row);
    if (!b.row_of.empty()) be->GatherRows(by_row, b.row_map, logits_.mat());
    be->CrossEntropy(by_row, b.targets, b.weight, &losses_dev, scratch.mat());
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
    report.sum[given.target_modality[i]] += loss_at(b.row_of.empty() ? i : b.row_of[i]);
    report.count[given.target_modality[i]]++;
  }
  // Transfusion: image_out predicts each patch row's eps; diff = pred - eps.
  const int64_t np = b.patches.count;
  if (np > 0) {
    const int pd = config_.patch_dim();
    patches_->Output(b.patches, normed_f_.mat(), &patch_hidden_, &patch_diff_);
    Tensor eps = UploadMatrix(be, dtype_, b.rows().patch_target, np, pd);
    be->Axpy(-1.0, eps.mat(), patch_diff_.mat());
    report.diffusion_sum = be->SumSquares({patch_diff_.mat()});
    report.diffusion_count = np * pd;
  }
  report.diffusion_weight = config_.patch_dim() > 0 ? config_.diffusion_weight() : 0.0;
  return report;
}

absl::Status LanguageModel::Backward(const DeviceBatch& b, const LossDenominators& denominators,
                                     Tensor* dnormed) {
  Backend* be = backend_;
  const int64_t n = b.given->rows();
  const int n_layer = config_.n_layer();
  const int64_t np = b.patches.count;
  if (np > 0) {
    // d(lambda * mean(diff^2)) / d(pred) = 2 lambda diff / count
    const double count = denominators.patch_elements > 0 ? denominators.patch_elements
                                                         : np * config_.patch_dim();
    be->Scale(2.0 * config_.diffusion_weight() / count, patch_diff_.mat());
    patches_->OutputBackward(b.patches, patch_hidden_, patch_diff_.mat(), dnormed->mat());
  }
  // dres holds d(loss)/d(x_l) as it goes down the stack.
  Tensor dres = be->Empty(dtype_, {n, config_.d_model()});
  be->Fill(dres.mat(), 0);
  norm_f_->Backward(residual_[n_layer].mat(), rstd_f_, dnormed->mat(), dres.mat());
  *dnormed = Tensor();  // each block has its own; peak memory stays as it was
  for (int l = n_layer - 1; l >= 0; --l) {
    RETURN_IF_ERROR(Hook(&BucketHooks::BeforeBackward, 1 + l));
    // The layer's output is written again with the bits it had: the layer
    // above, its only reader, is done with it.
    if (recompute_) {
      blocks_[l]->Forward(b.ctx, residual_[l].mat(), residual_[l + 1].mat(), LayerActs(l));
    }
    blocks_[l]->Backward(b.ctx, residual_[l].mat(), *LayerActs(l), dres.mat());
    RETURN_IF_ERROR(Hook(&BucketHooks::AfterBackward, 1 + l));
  }
  be->EmbeddingBackward(b.tokens, dres.mat(), &embed_->grad);
  if (np > 0) patches_->InputBackward(b.patches, dres.mat());
  return Hook(&BucketHooks::AfterBackward, 0);
}

absl::StatusOr<LossReport> LanguageModel::Run(const Batch& batch, bool backward,
                                              const LossDenominators& denominators) {
  RETURN_IF_ERROR(Validate(batch));
  const DeviceBatch b = PrepareBatch(batch, denominators);
  RETURN_IF_ERROR(TrunkForward(b));
  Tensor dnormed;
  LossReport report = HeadAndLoss(b, backward, &dnormed);
  if (!backward) {
    RETURN_IF_ERROR(Hook(&BucketHooks::AfterForward, 0));
    return report;
  }
  RETURN_IF_ERROR(Backward(b, denominators, &dnormed));
  return report;
}

RecurrentState LanguageModel::NewState(int streams) const {
  RecurrentState state;
  state.streams = streams;
  for (const std::unique_ptr<Block>& block : blocks_) state.layers.push_back(block->NewState(streams));
  return state;
}

void LanguageModel::CopyState(const RecurrentState& from, RecurrentState* to) const {
  for (size_t l = 0; l < blocks_.size(); ++l) {
    blocks_[l]->CopyState(*from.layers[l], to->layers[l].get());
  }
}

absl::Status LanguageModel::CheckStep(const std::vector<StepInput>& inputs,
                                      const RecurrentState& state) const {
  if (state.layers.size() != blocks_.size()) {
    return absl::InvalidArgumentError("recurrent state: made for another model");
  }
  const int v = config_.vocab_size(), m = config_.n_modalities();
  std::vector<bool> seen(state.streams, false);
  for (size_t i = 0; i < inputs.size(); ++i) {
    const StepInput& in = inputs[i];
    if (in.stream < 0 || in.stream >= state.streams || seen[in.stream]) {
      return absl::InvalidArgumentError(absl::StrCat("step input ", i, ": stream ", in.stream,
                                                     " is out of range or repeated"));
    }
    seen[in.stream] = true;
    if (in.token < 0 || in.token >= v) {
      return absl::InvalidArgumentError(absl::StrCat("step input ", i, ": token ", in.token,
                                                     " is outside the vocab [0, ", v, ")"));
    }
    if (in.modality < 0 || in.modality >= m) {
      return absl::InvalidArgumentError(absl::StrCat("step input ", i, ": modality ",
                                                     in.modality, " is outside [0, ", m, ")"));
    }
    if (in.patch == nullptr) continue;
    if (config_.patch_dim() == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("step input ", i, ": a patch given but model.patch_dim is 0"));
    }
    if (in.timestep < 0 || in.timestep > config_.diffusion_steps()) {
      return absl::InvalidArgumentError(absl::StrCat("step input ", i, ": timestep ",
                                                     in.timestep, " is outside [0, ",
                                                     config_.diffusion_steps(), "]"));
    }
  }
  return absl::OkStatus();
}

namespace {

// A contiguous F32 or F64 matrix on `be` into host floats.
void CopyToHost(Backend* be, const Tensor& src, float* dst) {
  const Mat m = src.mat();
  Mat host{dst, DType::kF32, Device::kCpu, m.rows, m.cols, m.cols};
  if (src.dtype() == DType::kF32) {
    be->Copy(m, host);
    return;
  }
  Tensor staged(src.dtype(), src.shape());
  be->Copy(m, staged.mat());
  for (int64_t i = 0; i < staged.numel(); ++i) dst[i] = static_cast<float>(staged.data<double>()[i]);
}

}  // namespace

absl::Status LanguageModel::Step(const std::vector<StepInput>& inputs, RecurrentState* state,
                                 float* logits, float* eps) const {
  RETURN_IF_ERROR(CheckStep(inputs, *state));
  const int64_t rows = static_cast<int64_t>(inputs.size());
  if (rows == 0) return absl::OkStatus();
  const int d = config_.d_model(), v = config_.vocab_size(), m = config_.n_modalities();
  const int pd = config_.patch_dim();
  // Row i of the step holds inputs[order[i]]: the rows grouped by modality,
  // as a batch's are (a routed norm needs them so, and so do routed products
  // of BF16 activations on the GPU); results go back in input order.
  std::vector<int64_t> order(rows);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return inputs[a].modality < inputs[b].modality; });
  std::vector<int32_t> tokens(rows), modality(rows), streams(rows), patch_rows, timesteps;
  std::vector<uint8_t> reset(rows);
  std::vector<float> patch_inputs;
  for (int64_t i = 0; i < rows; ++i) {
    const StepInput& in = inputs[order[i]];
    tokens[i] = in.token;
    modality[i] = in.modality;
    streams[i] = in.stream;
    reset[i] = in.doc_start ? 1 : 0;
    if (in.patch != nullptr) {
      patch_rows.push_back(static_cast<int32_t>(i));
      patch_inputs.insert(patch_inputs.end(), in.patch, in.patch + pd);
      timesteps.push_back(in.timestep);
    }
  }

  // The step's ids on the backend, as the parallel forward has its batch's.
  Backend* be = backend_;
  const Tensor tokens_dev = Upload(be, DType::kI32, tokens);
  const Tensor streams_dev = Upload(be, DType::kI32, streams);
  const Tensor reset_dev = Upload(be, DType::kU8, reset);
  const std::unique_ptr<Routing> by_modality = be->MakeRouting(modality.data(), rows, m);
  const std::vector<int32_t> zeros(rows, 0);
  const std::unique_ptr<Routing> shared = be->MakeRouting(zeros.data(), rows, 1);
  const StepContext ctx{StepLayout{&streams_dev, &reset_dev}, &streams, &reset,
                        by_modality.get(), shared.get()};

  Tensor x = be->Empty(dtype_, {rows, d});
  be->EmbeddingForward(tokens_dev, embed_->value, x.mat());
  PatchLayer::Patches patches;
  if (!patch_rows.empty()) {
    patches = patches_->Upload(patch_rows, patch_inputs, timesteps);
    patches_->AddInput(patches, x.mat());
  }
  for (size_t l = 0; l < blocks_.size(); ++l) blocks_[l]->Step(ctx, x.mat(), state->layers[l].get());
  Tensor h = be->Empty(dtype_, {rows, d}), rstd = be->Empty(dtype_, {rows});
  norm_f_->Forward(x.mat(), h.mat(), &rstd);

  // Step rows [rows, cols] on the device into `dst` in input order.
  auto to_inputs = [&](const Tensor& dev, int64_t cols, float* dst) {
    std::vector<float> by_row(rows * cols);
    CopyToHost(be, dev, by_row.data());
    for (int64_t i = 0; i < rows; ++i) {
      std::copy_n(by_row.data() + i * cols, cols, dst + order[i] * cols);
    }
  };
  if (logits != nullptr) {
    Tensor dev = be->Empty(dtype_, {rows, v});
    const Mat head{lm_head_->value.raw(), dtype_, be->device(), v, d, d};
    be->Gemm(false, true, 1.0, h.mat(), head, 0.0, dev.mat());
    to_inputs(dev, v, logits);
  }
  if (eps != nullptr && pd > 0) {
    Tensor dev = be->Empty(dtype_, {rows, pd});
    be->Fill(dev.mat(), 0);
    if (patches.count > 0) {
      Tensor hidden, pred;
      patches_->Output(patches, h.mat(), &hidden, &pred);
      be->ScatterAddRows(pred.mat(), patches.rows, dev.mat());
    }
    to_inputs(dev, pd, eps);
  }
  return absl::OkStatus();
}

}  // namespace modamba
