#include "evaluator/recurrent.h"

#include <algorithm>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/diffusion.h"
#include "core/layers.h"
#include "core/status_macros.h"

namespace modamba::eval {
namespace {

// Parameter `name` viewed as `shape`, which must hold as many elements.
absl::StatusOr<Tensor> ParamView(const MambaLM& model, const std::string& name, Shape shape) {
  const Param* p = model.params().Find(name);
  if (p == nullptr) return absl::NotFoundError(absl::StrCat("model has no parameter ", name));
  if (p->value.numel() != NumElements(shape)) {
    return absl::InvalidArgumentError(absl::StrCat("parameter ", name, " has ", p->value.numel(),
                                                   " elements, expected ", NumElements(shape)));
  }
  return Tensor::View(p->value, 0, std::move(shape));
}

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

absl::StatusOr<std::unique_ptr<RecurrentLM>> RecurrentLM::FromModel(const MambaLM& model) {
  const v1::ModelConfig& c = model.config();
  const DType dtype = model.params().dtype();
  if (dtype != DType::kF32 && dtype != DType::kF64) {
    return absl::InvalidArgumentError(
        absl::StrCat("model parameters are ", DTypeName(dtype), ", not F32 or F64"));
  }
  std::unique_ptr<RecurrentLM> lm(new RecurrentLM(c, model.backend(), dtype));
  const int64_t d = c.d_model(), v = c.vocab_size(), m = c.n_modalities();
  lm->d_model_ = c.d_model();
  lm->d_inner_ = c.expand() * c.d_model();
  lm->d_state_ = c.d_state();
  lm->d_conv_ = c.d_conv();
  lm->dt_rank_ = c.dt_rank();
  const int64_t e = lm->d_inner_, s = lm->d_state_, k = lm->d_conv_, r = lm->dt_rank_;
  auto view = [&](const std::string& name, Shape shape) {
    return ParamView(model, name, std::move(shape));
  };
  auto groups = [&](bool routed) { return routed ? m : 1; };

  ASSIGN_OR_RETURN(lm->embed_, view("embed.weight", {v, d}));
  ASSIGN_OR_RETURN(lm->lm_head_,
                   view(c.tie_embeddings() ? "embed.weight" : "lm_head.weight", {v, d}));
  ASSIGN_OR_RETURN(lm->norm_f_, view("norm_f.weight", {d}));
  for (int l = 0; l < c.n_layer(); ++l) {
    const std::string name = absl::StrCat("layers.", l);
    const std::string mixer = name + ".mixer";
    Layer layer;
    ASSIGN_OR_RETURN(layer.norm, view(name + ".norm.weight", {d}));
    ASSIGN_OR_RETURN(layer.in_proj, view(mixer + ".in_proj.weight", {groups(c.route_in()), 2 * e, d}));
    ASSIGN_OR_RETURN(layer.x_proj,
                     view(mixer + ".x_proj.weight", {groups(c.route_x()), r + 2 * s, e}));
    ASSIGN_OR_RETURN(layer.dt_proj, view(mixer + ".dt_proj.weight", {groups(c.route_dt()), e, r}));
    ASSIGN_OR_RETURN(layer.out_proj,
                     view(mixer + ".out_proj.weight", {groups(c.route_out()), d, e}));
    ASSIGN_OR_RETURN(layer.conv_w, view(mixer + ".conv.weight", {e, k}));
    ASSIGN_OR_RETURN(layer.conv_b, view(mixer + ".conv.bias", {e}));
    ASSIGN_OR_RETURN(layer.dt_bias, view(mixer + ".dt_proj.bias", {groups(c.route_dt()), e}));
    ASSIGN_OR_RETURN(layer.a_log, view(mixer + ".A_log", {e, s}));
    ASSIGN_OR_RETURN(layer.d, view(mixer + ".D", {e}));
    lm->layers_.push_back(std::move(layer));
  }
  if (c.patch_dim() > 0) {
    const Param* t = model.params().Find("time_embed.weight");
    if (t == nullptr) return absl::NotFoundError("model has no parameter time_embed.weight");
    const int64_t features = t->value.dim(-1), pd = c.patch_dim();
    ASSIGN_OR_RETURN(lm->image_in_, view("image_in.weight", {1, d, pd}));
    ASSIGN_OR_RETURN(lm->time_embed_, view("time_embed.weight", {1, d, features}));
    ASSIGN_OR_RETURN(lm->image_out_, view("image_out.weight", {1, pd, d}));
  }
  return lm;
}

RecurrentState RecurrentLM::NewState(int streams) const {
  RecurrentState state;
  state.streams = streams;
  for (size_t l = 0; l < layers_.size(); ++l) {
    state.conv.push_back(backend_->Empty(dtype_, {streams, d_conv_ - 1, d_inner_}));
    state.ssm.push_back(backend_->Empty(dtype_, {streams, d_inner_, d_state_}));
    backend_->Fill(state.conv.back().mat(), 0);
    backend_->Fill(state.ssm.back().mat(), 0);
  }
  return state;
}

void RecurrentLM::CopyState(const RecurrentState& from, RecurrentState* to) const {
  for (size_t l = 0; l < layers_.size(); ++l) {
    backend_->Copy(from.conv[l].mat(), to->conv[l].mat());
    backend_->Copy(from.ssm[l].mat(), to->ssm[l].mat());
  }
}

absl::Status RecurrentLM::Step(const std::vector<StepInput>& inputs, RecurrentState* state,
                               float* logits, float* eps) const {
  const int64_t rows = static_cast<int64_t>(inputs.size());
  const int64_t d = d_model_, e = d_inner_, s = d_state_, r = dt_rank_;
  const int v = config_.vocab_size(), m = config_.n_modalities(), pd = config_.patch_dim();
  if (state->conv.size() != layers_.size()) {
    return absl::InvalidArgumentError("recurrent state: made for another model");
  }
  if (rows == 0) return absl::OkStatus();
  std::vector<bool> seen(state->streams, false);
  std::vector<int32_t> tokens(rows), modality(rows), streams(rows), patch_rows;
  std::vector<uint8_t> reset(rows);
  for (int64_t i = 0; i < rows; ++i) {
    const StepInput& in = inputs[i];
    if (in.stream < 0 || in.stream >= state->streams || seen[in.stream]) {
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
    if (in.patch != nullptr) {
      if (pd == 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("step input ", i, ": a patch given but model.patch_dim is 0"));
      }
      if (in.timestep < 0 || in.timestep > config_.diffusion_steps()) {
        return absl::InvalidArgumentError(
            absl::StrCat("step input ", i, ": timestep ", in.timestep, " is outside [0, ",
                         config_.diffusion_steps(), "]"));
      }
      patch_rows.push_back(static_cast<int32_t>(i));
    }
    tokens[i] = in.token;
    modality[i] = in.modality;
    streams[i] = in.stream;
    reset[i] = in.doc_start ? 1 : 0;
  }

  // The step's ids on the backend, as the parallel forward has its batch's.
  Backend* be = backend_;
  const DType dt = dtype_;
  const Tensor tokens_dev = Upload(be, DType::kI32, tokens);
  const Tensor streams_dev = Upload(be, DType::kI32, streams);
  const Tensor reset_dev = Upload(be, DType::kU8, reset);
  const StepLayout step{&streams_dev, &reset_dev};
  const std::unique_ptr<Routing> by_modality = be->MakeRouting(modality.data(), rows, m);
  const std::vector<int32_t> zeros(rows, 0);
  const std::unique_ptr<Routing> shared = be->MakeRouting(zeros.data(), rows, 1);
  // A weight of one group is shared; otherwise its groups are the modalities.
  auto routing = [&](const Tensor& w) -> const Routing& {
    return w.dim(0) == 1 ? *shared : *by_modality;
  };
  auto project = [&](const Tensor& w, Mat in, Mat out) {
    be->RoutedLinear(routing(w), in, w, out);
  };

  // x = embed(token) (+ image_in(x_t) + time_embed(t) on patch rows).
  Tensor x = be->Empty(dt, {rows, d});
  be->EmbeddingForward(tokens_dev, embed_, x.mat());
  const int64_t np = static_cast<int64_t>(patch_rows.size());
  Tensor patch_rows_dev;
  std::unique_ptr<Routing> patch_routing;
  if (np > 0) {
    const int tf = static_cast<int>(time_embed_.dim(2));
    std::vector<float> patches(np * pd), features(np * tf);
    for (int64_t j = 0; j < np; ++j) {
      const StepInput& in = inputs[patch_rows[j]];
      std::copy_n(in.patch, pd, &patches[j * pd]);
      TimestepFeatures(in.timestep, tf, &features[j * tf]);
    }
    patch_rows_dev = Upload(be, DType::kI32, patch_rows);
    const std::vector<int32_t> one_group(np, 0);
    patch_routing = be->MakeRouting(one_group.data(), np, 1);
    const Tensor patch_x = UploadMatrix(be, dt, patches, np, pd);
    const Tensor time_features = UploadMatrix(be, dt, features, np, tf);
    Tensor emb = be->Empty(dt, {np, d}), t_emb = be->Empty(dt, {np, d});
    be->RoutedLinear(*patch_routing, patch_x.mat(), image_in_, emb.mat());
    be->RoutedLinear(*patch_routing, time_features.mat(), time_embed_, t_emb.mat());
    be->Axpy(1.0, t_emb.mat(), emb.mat());
    be->ScatterAddRows(emb.mat(), patch_rows_dev, x.mat());
  }

  // The layers, as MambaBlock::Forward with the conv and scan stepped. Every
  // activation stays in the model's dtype (not MatmulInputDType): a step's
  // rows are not grouped by modality, which a BF16 input of a routed
  // projection needs on the GPU.
  Tensor h = be->Empty(dt, {rows, d}), rstd = be->Empty(dt, {rows});
  Tensor xz = be->Empty(dt, {rows, 2 * e}), u = be->Empty(dt, {rows, e});
  Tensor dbc = be->Empty(dt, {rows, r + 2 * s}), delta_raw = be->Empty(dt, {rows, e});
  Tensor y = be->Empty(dt, {rows, e}), out = be->Empty(dt, {rows, d});
  for (size_t l = 0; l < layers_.size(); ++l) {
    const Layer& layer = layers_[l];
    be->RmsNormForward(x.mat(), layer.norm, config_.norm_eps(), h.mat(), &rstd);
    project(layer.in_proj, h.mat(), xz.mat());
    be->ConvStep(step, xz.mat().Cols(0, e), layer.conv_w, layer.conv_b, &state->conv[l], u.mat());
    project(layer.x_proj, u.mat(), dbc.mat());
    project(layer.dt_proj, dbc.mat().Cols(0, r), delta_raw.mat());
    const ScanInputs in{u.mat(), delta_raw.mat(), dbc.mat().Cols(r, s), dbc.mat().Cols(r + s, s),
                        xz.mat().Cols(e, e), &layer.dt_bias, &layer.a_log, &layer.d};
    be->ScanStep(step, routing(layer.dt_proj), in, &state->ssm[l], y.mat());
    project(layer.out_proj, y.mat(), out.mat());
    be->Axpy(1.0, out.mat(), x.mat());
  }
  be->RmsNormForward(x.mat(), norm_f_, config_.norm_eps(), h.mat(), &rstd);

  if (logits != nullptr) {
    Tensor dev = be->Empty(dt, {rows, v});
    be->Gemm(false, true, 1.0, h.mat(), lm_head_.mat(), 0.0, dev.mat());
    CopyToHost(be, dev, logits);
  }
  if (eps != nullptr && pd > 0) {
    Tensor dev = be->Empty(dt, {rows, pd});
    be->Fill(dev.mat(), 0);
    if (np > 0) {
      Tensor hidden = be->Empty(dt, {np, d}), pred = be->Empty(dt, {np, pd});
      be->GatherRows(h.mat(), patch_rows_dev, hidden.mat());
      be->RoutedLinear(*patch_routing, hidden.mat(), image_out_, pred.mat());
      be->ScatterAddRows(pred.mat(), patch_rows_dev, dev.mat());
    }
    CopyToHost(be, dev, eps);
  }
  return absl::OkStatus();
}

}  // namespace modamba::eval
