#include "evaluator/recurrent.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "core/diffusion.h"
#include "core/ops/activations.h"
#include "core/status_macros.h"
#include "evaluator/scan_step.h"

namespace modamba::eval {
namespace {

// The host fp32 values of parameter `name`, which must hold `numel` elements.
absl::StatusOr<std::vector<float>> HostValues(const MambaLM& model, const std::string& name,
                                              int64_t numel) {
  const Param* p = model.params().Find(name);
  if (p == nullptr) return absl::NotFoundError(absl::StrCat("model has no parameter ", name));
  if (p->value.numel() != numel) {
    return absl::InvalidArgumentError(absl::StrCat("parameter ", name, " has ", p->value.numel(),
                                                   " elements, expected ", numel));
  }
  Tensor host(p->value.dtype(), p->value.shape());
  model.backend()->Copy(p->value.mat(), host.mat());
  std::vector<float> out(numel);
  if (host.dtype() == DType::kF32) {
    std::memcpy(out.data(), host.raw(), numel * sizeof(float));
  } else if (host.dtype() == DType::kF64) {
    for (int64_t i = 0; i < numel; ++i) out[i] = static_cast<float>(host.data<double>()[i]);
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("parameter ", name, " is ", DTypeName(host.dtype()), ", not F32 or F64"));
  }
  return out;
}

// y = x * rstd * w with rstd = 1 / sqrt(mean(x^2) + eps), as the CPU reference.
void RmsNorm(const float* x, const float* w, int d, float eps, float* y) {
  float ss = 0;
  for (int j = 0; j < d; ++j) ss += x[j] * x[j];
  const float r = 1.f / std::sqrt(ss / static_cast<float>(d) + eps);
  for (int j = 0; j < d; ++j) y[j] = x[j] * r * w[j];
}

}  // namespace

absl::StatusOr<std::unique_ptr<RecurrentLM>> RecurrentLM::FromModel(const MambaLM& model) {
  const v1::ModelConfig& c = model.config();
  std::unique_ptr<RecurrentLM> lm(new RecurrentLM(c));
  const int d = c.d_model(), v = c.vocab_size(), m = c.n_modalities();
  lm->d_model_ = d;
  lm->d_inner_ = c.expand() * d;
  lm->d_state_ = c.d_state();
  lm->d_conv_ = c.d_conv();
  lm->dt_rank_ = c.dt_rank();
  const int e = lm->d_inner_, s = lm->d_state_, k = lm->d_conv_, r = lm->dt_rank_;

  auto projection = [&](const std::string& name, int in, int out,
                        int groups) -> absl::StatusOr<Projection> {
    Projection p;
    p.groups = groups;
    p.in = in;
    p.out = out;
    ASSIGN_OR_RETURN(p.w, HostValues(model, name + ".weight", int64_t{groups} * out * in));
    return p;
  };
  ASSIGN_OR_RETURN(lm->embed_, HostValues(model, "embed.weight", int64_t{v} * d));
  if (c.tie_embeddings()) {
    lm->lm_head_ = lm->embed_;
  } else {
    ASSIGN_OR_RETURN(lm->lm_head_, HostValues(model, "lm_head.weight", int64_t{v} * d));
  }
  ASSIGN_OR_RETURN(lm->norm_f_, HostValues(model, "norm_f.weight", d));
  for (int l = 0; l < c.n_layer(); ++l) {
    const std::string name = absl::StrCat("layers.", l);
    const std::string mixer = name + ".mixer";
    Layer layer;
    ASSIGN_OR_RETURN(layer.norm, HostValues(model, name + ".norm.weight", d));
    ASSIGN_OR_RETURN(layer.in_proj, projection(mixer + ".in_proj", d, 2 * e, c.route_in() ? m : 1));
    ASSIGN_OR_RETURN(layer.x_proj,
                     projection(mixer + ".x_proj", e, r + 2 * s, c.route_x() ? m : 1));
    ASSIGN_OR_RETURN(layer.dt_proj, projection(mixer + ".dt_proj", r, e, c.route_dt() ? m : 1));
    ASSIGN_OR_RETURN(layer.out_proj,
                     projection(mixer + ".out_proj", e, d, c.route_out() ? m : 1));
    ASSIGN_OR_RETURN(layer.conv_w, HostValues(model, mixer + ".conv.weight", int64_t{e} * k));
    ASSIGN_OR_RETURN(layer.conv_b, HostValues(model, mixer + ".conv.bias", e));
    ASSIGN_OR_RETURN(layer.dt_bias, HostValues(model, mixer + ".dt_proj.bias",
                                               int64_t{layer.dt_proj.groups} * e));
    ASSIGN_OR_RETURN(layer.a, HostValues(model, mixer + ".A_log", int64_t{e} * s));
    for (float& a : layer.a) a = -std::exp(a);
    ASSIGN_OR_RETURN(layer.d, HostValues(model, mixer + ".D", e));
    lm->layers_.push_back(std::move(layer));
  }
  if (c.patch_dim() > 0) {
    const Param* t = model.params().Find("time_embed.weight");
    if (t == nullptr) return absl::NotFoundError("model has no parameter time_embed.weight");
    const int features = static_cast<int>(t->value.dim(-1));
    ASSIGN_OR_RETURN(lm->image_in_, projection("image_in", c.patch_dim(), d, 1));
    ASSIGN_OR_RETURN(lm->time_embed_, projection("time_embed", features, d, 1));
    ASSIGN_OR_RETURN(lm->image_out_, projection("image_out", d, c.patch_dim(), 1));
  }
  return lm;
}

RecurrentState RecurrentLM::NewState(int streams) const {
  RecurrentState state;
  state.streams = streams;
  for (size_t l = 0; l < layers_.size(); ++l) {
    state.conv.emplace_back(static_cast<size_t>(streams) * (d_conv_ - 1) * d_inner_, 0.f);
    state.ssm.emplace_back(static_cast<size_t>(streams) * d_inner_ * d_state_, 0.f);
  }
  return state;
}

void RecurrentLM::Project(const Projection& p, const std::vector<int32_t>& group, const float* x,
                          int ldx, float* y, int ldy) {
  const int rows = static_cast<int>(group.size());
  if (rows == 0) return;
  const size_t per_group = static_cast<size_t>(p.out) * p.in;
  auto gemm = [&](int g, int n, const float* a, int lda, float* c, int ldc) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, p.out, p.in, 1.f, a, lda,
                p.w.data() + g * per_group, p.in, 0.f, c, ldc);
  };
  const bool one_group =
      p.groups == 1 || std::all_of(group.begin(), group.end(), [&](int g) { return g == group[0]; });
  if (one_group) {
    gemm(p.groups == 1 ? 0 : group[0], rows, x, ldx, y, ldy);
    return;
  }
  std::vector<float> xg, yg;
  for (int g = 0; g < p.groups; ++g) {
    std::vector<int> picked;
    for (int i = 0; i < rows; ++i) {
      if (group[i] == g) picked.push_back(i);
    }
    if (picked.empty()) continue;
    const int n = static_cast<int>(picked.size());
    xg.resize(static_cast<size_t>(n) * p.in);
    yg.resize(static_cast<size_t>(n) * p.out);
    for (int j = 0; j < n; ++j) {
      std::memcpy(&xg[static_cast<size_t>(j) * p.in], x + static_cast<size_t>(picked[j]) * ldx,
                  p.in * sizeof(float));
    }
    gemm(g, n, xg.data(), p.in, yg.data(), p.out);
    for (int j = 0; j < n; ++j) {
      std::memcpy(y + static_cast<size_t>(picked[j]) * ldy, &yg[static_cast<size_t>(j) * p.out],
                  p.out * sizeof(float));
    }
  }
}

absl::Status RecurrentLM::Step(const std::vector<StepInput>& inputs, RecurrentState* state,
                               float* logits, float* eps) const {
  const int rows = static_cast<int>(inputs.size());
  const int d = d_model_, e = d_inner_, s = d_state_, k = d_conv_, r = dt_rank_;
  const int v = config_.vocab_size(), m = config_.n_modalities(), pd = config_.patch_dim();
  if (state->conv.size() != layers_.size()) {
    return absl::InvalidArgumentError("recurrent state: made for another model");
  }
  std::vector<bool> seen(state->streams, false);
  std::vector<int32_t> modality(rows), shared(rows, 0);
  std::vector<int> patch_rows;
  for (int i = 0; i < rows; ++i) {
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
      patch_rows.push_back(i);
    }
    modality[i] = in.modality;
  }
  // A document start forgets everything before it.
  for (const StepInput& in : inputs) {
    if (!in.doc_start) continue;
    for (size_t l = 0; l < layers_.size(); ++l) {
      std::fill_n(state->conv[l].begin() + static_cast<size_t>(in.stream) * (k - 1) * e,
                  (k - 1) * e, 0.f);
      std::fill_n(state->ssm[l].begin() + static_cast<size_t>(in.stream) * e * s, e * s, 0.f);
    }
  }

  // x = embed(token) (+ image_in(x_t) + time_embed(t) on patch rows).
  std::vector<float> x(static_cast<size_t>(rows) * d);
  for (int i = 0; i < rows; ++i) {
    std::memcpy(&x[static_cast<size_t>(i) * d], &embed_[static_cast<size_t>(inputs[i].token) * d],
                d * sizeof(float));
  }
  if (!patch_rows.empty()) {
    const int np = static_cast<int>(patch_rows.size()), tf = time_embed_.in;
    std::vector<float> patch(static_cast<size_t>(np) * pd), features(static_cast<size_t>(np) * tf);
    for (int j = 0; j < np; ++j) {
      const StepInput& in = inputs[patch_rows[j]];
      std::memcpy(&patch[static_cast<size_t>(j) * pd], in.patch, pd * sizeof(float));
      TimestepFeatures(in.timestep, tf, &features[static_cast<size_t>(j) * tf]);
    }
    std::vector<float> emb(static_cast<size_t>(np) * d), t_emb(static_cast<size_t>(np) * d);
    std::vector<int32_t> one(np, 0);
    Project(image_in_, one, patch.data(), pd, emb.data(), d);
    Project(time_embed_, one, features.data(), tf, t_emb.data(), d);
    for (int j = 0; j < np; ++j) {
      float* row = &x[static_cast<size_t>(patch_rows[j]) * d];
      for (int c = 0; c < d; ++c) {
        row[c] += emb[static_cast<size_t>(j) * d + c] + t_emb[static_cast<size_t>(j) * d + c];
      }
    }
  }

  std::vector<float> h(static_cast<size_t>(rows) * d), xz(static_cast<size_t>(rows) * 2 * e),
      u(static_cast<size_t>(rows) * e), dbc(static_cast<size_t>(rows) * (r + 2 * s)),
      delta_raw(static_cast<size_t>(rows) * e), y(static_cast<size_t>(rows) * e),
      out(static_cast<size_t>(rows) * d);
  const float norm_eps = static_cast<float>(config_.norm_eps());
  for (size_t l = 0; l < layers_.size(); ++l) {
    const Layer& layer = layers_[l];
    auto groups = [&](const Projection& p) -> const std::vector<int32_t>& {
      return p.groups == 1 ? shared : modality;
    };
    for (int i = 0; i < rows; ++i) {
      RmsNorm(&x[static_cast<size_t>(i) * d], layer.norm.data(), d, norm_eps,
              &h[static_cast<size_t>(i) * d]);
    }
    Project(layer.in_proj, groups(layer.in_proj), h.data(), d, xz.data(), 2 * e);
    // Causal conv over the stream's last k - 1 inputs and this one, then SiLU.
    for (int i = 0; i < rows; ++i) {
      float* window = &state->conv[l][static_cast<size_t>(inputs[i].stream) * (k - 1) * e];
      const float* xi = &xz[static_cast<size_t>(i) * 2 * e];
      float* ui = &u[static_cast<size_t>(i) * e];
      for (int c = 0; c < e; ++c) {
        const float* w = &layer.conv_w[static_cast<size_t>(c) * k];
        float a = layer.conv_b[c];
        for (int j = 0; j < k - 1; ++j) a += w[j] * window[static_cast<size_t>(j) * e + c];
        a += w[k - 1] * xi[c];
        ui[c] = ops::Silu(a);
      }
      for (int j = 0; j + 1 < k - 1; ++j) {
        std::memcpy(window + static_cast<size_t>(j) * e, window + static_cast<size_t>(j + 1) * e,
                    e * sizeof(float));
      }
      if (k > 1) std::memcpy(window + static_cast<size_t>(k - 2) * e, xi, e * sizeof(float));
    }
    Project(layer.x_proj, groups(layer.x_proj), u.data(), e, dbc.data(), r + 2 * s);
    Project(layer.dt_proj, groups(layer.dt_proj), dbc.data(), r + 2 * s, delta_raw.data(), e);
    // One step of the selective scan.
    const std::vector<int32_t>& dt_group = groups(layer.dt_proj);
    for (int i = 0; i < rows; ++i) {
      const float* bi = &dbc[static_cast<size_t>(i) * (r + 2 * s) + r];
      SelectiveScanStep(e, s, &delta_raw[static_cast<size_t>(i) * e],
                        &layer.dt_bias[static_cast<size_t>(dt_group[i]) * e],
                        &u[static_cast<size_t>(i) * e], bi, bi + s,
                        &xz[static_cast<size_t>(i) * 2 * e + e], layer.a.data(), layer.d.data(),
                        &state->ssm[l][static_cast<size_t>(inputs[i].stream) * e * s],
                        &y[static_cast<size_t>(i) * e]);
    }
    Project(layer.out_proj, groups(layer.out_proj), y.data(), e, out.data(), d);
    for (size_t j = 0; j < x.size(); ++j) x[j] += out[j];
  }

  for (int i = 0; i < rows; ++i) {
    RmsNorm(&x[static_cast<size_t>(i) * d], norm_f_.data(), d, norm_eps,
            &h[static_cast<size_t>(i) * d]);
  }
  if (logits != nullptr) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, v, d, 1.f, h.data(), d,
                lm_head_.data(), d, 0.f, logits, v);
  }
  if (eps != nullptr && pd > 0) {
    std::fill_n(eps, static_cast<size_t>(rows) * pd, 0.f);
    std::vector<float> hp(static_cast<size_t>(patch_rows.size()) * d);
    for (size_t j = 0; j < patch_rows.size(); ++j) {
      std::memcpy(&hp[j * d], &h[static_cast<size_t>(patch_rows[j]) * d], d * sizeof(float));
    }
    std::vector<float> pred(patch_rows.size() * pd);
    Project(image_out_, std::vector<int32_t>(patch_rows.size(), 0), hp.data(), d, pred.data(), pd);
    for (size_t j = 0; j < patch_rows.size(); ++j) {
      std::memcpy(eps + static_cast<size_t>(patch_rows[j]) * pd, &pred[j * pd], pd * sizeof(float));
    }
  }
  return absl::OkStatus();
}

}  // namespace modamba::eval
