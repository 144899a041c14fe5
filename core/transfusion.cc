#include "core/transfusion.h"

#include <algorithm>
#include <cmath>

#include "core/diffusion.h"

namespace modamba {

PatchLayer::PatchLayer(ParamSet* params, int patch_dim, int d_model)
    : params_(params),
      patch_dim_(patch_dim),
      d_model_(d_model),
      image_in_(params, "image_in", patch_dim, d_model, 1),
      time_embed_(params, "time_embed", kTimeFeatures, d_model, 1),
      image_out_(params, "image_out", d_model, patch_dim, 1) {}

void PatchLayer::Init(uint64_t seed) {
  image_in_.Init(seed, 1.0 / std::sqrt(patch_dim_));
  time_embed_.Init(seed, 1.0 / std::sqrt(kTimeFeatures));
  image_out_.Init(seed, 1.0 / std::sqrt(d_model_));
}

PatchLayer::Patches PatchLayer::Upload(const std::vector<int32_t>& rows,
                                       const std::vector<float>& inputs,
                                       const std::vector<int32_t>& timesteps) const {
  Backend* be = params_->backend();
  const DType dt = params_->dtype();
  Patches p;
  p.count = static_cast<int64_t>(rows.size());
  p.rows = modamba::Upload(be, DType::kI32, rows);
  p.x = UploadMatrix(be, dt, inputs, p.count, patch_dim_);
  std::vector<float> features(p.count * kTimeFeatures);
  for (int64_t i = 0; i < p.count; ++i) {
    TimestepFeatures(timesteps[i], kTimeFeatures, &features[i * kTimeFeatures]);
  }
  p.time_features = UploadMatrix(be, dt, features, p.count, kTimeFeatures);
  const std::vector<int32_t> one_group(p.count, 0);
  p.routing = be->MakeRouting(one_group.data(), p.count, 1);
  p.ctx.shared = p.routing.get();
  return p;
}

void PatchLayer::AddInput(const Patches& p, Mat x) const {
  Backend* be = params_->backend();
  const DType dt = params_->dtype();
  Tensor emb = be->Empty(dt, {p.count, d_model_}), t_emb = be->Empty(dt, {p.count, d_model_});
  image_in_.Forward(p.ctx, p.x.mat(), emb.mat());
  time_embed_.Forward(p.ctx, p.time_features.mat(), t_emb.mat());
  be->Axpy(1.0, t_emb.mat(), emb.mat());
  be->ScatterAddRows(emb.mat(), p.rows, x);
}

void PatchLayer::InputBackward(const Patches& p, Mat dx) const {
  Backend* be = params_->backend();
  const DType dt = params_->dtype();
  Tensor demb = be->Empty(dt, {p.count, d_model_});
  be->GatherRows(dx, p.rows, demb.mat());
  Tensor unused_dx = be->Empty(dt, {p.count, std::max(patch_dim_, kTimeFeatures)});
  image_in_.Backward(p.ctx, p.x.mat(), demb.mat(), unused_dx.mat().Cols(0, patch_dim_), false);
  time_embed_.Backward(p.ctx, p.time_features.mat(), demb.mat(),
                       unused_dx.mat().Cols(0, kTimeFeatures), false);
}

void PatchLayer::Output(const Patches& p, Mat hidden, Tensor* gathered, Tensor* eps) const {
  Backend* be = params_->backend();
  const DType dt = params_->dtype();
  *gathered = be->Empty(dt, {p.count, d_model_});
  be->GatherRows(hidden, p.rows, gathered->mat());
  *eps = be->Empty(dt, {p.count, patch_dim_});
  image_out_.Forward(p.ctx, gathered->mat(), eps->mat());
}

void PatchLayer::OutputBackward(const Patches& p, const Tensor& gathered, Mat deps,
                                Mat dhidden) const {
  Backend* be = params_->backend();
  Tensor dgathered = be->Empty(params_->dtype(), {p.count, d_model_});
  image_out_.Backward(p.ctx, gathered.mat(), deps, dgathered.mat(), false);
  be->ScatterAddRows(dgathered.mat(), p.rows, dhidden);
}

}  // namespace modamba
