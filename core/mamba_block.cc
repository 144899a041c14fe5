#include "core/mamba_block.h"

#include <cmath>
#include <cstring>

namespace modamba {
namespace {
int Groups(bool routed, const v1::ModelConfig& c) { return routed ? c.n_modalities() : 1; }
}  // namespace

MambaBlock::MambaBlock(ParamSet* params, const std::string& name, const v1::ModelConfig& c)
    : params_(params),
      d_model_(c.d_model()),
      d_inner_(c.expand() * c.d_model()),
      d_state_(c.d_state()),
      d_conv_(c.d_conv()),
      dt_rank_(c.dt_rank()),
      n_layer_(c.n_layer()),
      config_(c),
      in_proj_(params, name + ".in_proj", d_model_, 2 * d_inner_, Groups(c.route_in(), c)),
      x_proj_(params, name + ".x_proj", d_inner_, dt_rank_ + 2 * d_state_, Groups(c.route_x(), c)),
      dt_proj_(params, name + ".dt_proj", dt_rank_, d_inner_, Groups(c.route_dt(), c)),
      out_proj_(params, name + ".out_proj", d_inner_, d_model_, Groups(c.route_out(), c)) {
  conv_w_ = params->Add(name + ".conv.weight", {d_inner_, d_conv_}, true);
  conv_b_ = params->Add(name + ".conv.bias", {d_inner_}, false);
  dt_bias_ = params->Add(name + ".dt_proj.bias", {Groups(c.route_dt(), c), d_inner_}, false);
  a_log_ = params->Add(name + ".A_log", {d_inner_, d_state_}, false);
  d_ = params->Add(name + ".D", {d_inner_}, false);
}

void MambaBlock::Init(uint64_t seed) {
  const DType dt = params_->dtype();
  in_proj_.Init(seed, 1.0 / std::sqrt(d_model_));
  x_proj_.Init(seed, 1.0 / std::sqrt(d_inner_));
  dt_proj_.Init(seed, 1.0 / std::sqrt(dt_rank_));
  out_proj_.Init(seed, 1.0 / std::sqrt(d_inner_) / std::sqrt(n_layer_));

  Rng conv_rng = Rng::ForName(seed, conv_w_->name);
  params_->Set(conv_w_, UniformInit(dt, conv_w_->value.shape(), 1.0 / std::sqrt(d_conv_), &conv_rng));
  Rng bias_rng = Rng::ForName(seed, conv_b_->name);
  params_->Set(conv_b_, UniformInit(dt, conv_b_->value.shape(), 1.0 / std::sqrt(d_conv_), &bias_rng));

  // dt bias = softplus^-1(dt), dt log-uniform in [dt_min, dt_max], floored;
  // each modality's row drawn from its own stream.
  Tensor bias(dt, dt_bias_->value.shape());
  for (int64_t g = 0; g < bias.dim(0); ++g) {
    Rng rng = Rng::ForName(seed, dt_bias_->name + "/" + std::to_string(g));
    for (int e = 0; e < d_inner_; ++e) {
      double v = std::exp(rng.Uniform(std::log(config_.dt_min()), std::log(config_.dt_max())));
      v = std::max(v, static_cast<double>(config_.dt_init_floor()));
      double inv = v + std::log(-std::expm1(-v));
      if (dt == DType::kF64) bias.data<double>()[g * d_inner_ + e] = inv;
      else bias.data<float>()[g * d_inner_ + e] = static_cast<float>(inv);
    }
  }
  params_->Set(dt_bias_, bias);

  Tensor a(dt, a_log_->value.shape());
  for (int e = 0; e < d_inner_; ++e) {
    for (int s = 0; s < d_state_; ++s) {
      double v = std::log(s + 1.0);
      if (dt == DType::kF64) a.data<double>()[e * d_state_ + s] = v;
      else a.data<float>()[e * d_state_ + s] = static_cast<float>(v);
    }
  }
  params_->Set(a_log_, a);
  params_->Set(d_, ConstantInit(dt, d_->value.shape(), 1.0));
}

ScanInputs MambaBlock::MakeScanInputs(const Activations& acts, Mat delta_raw) const {
  ScanInputs in;
  in.u = acts.u.mat();
  in.delta_raw = delta_raw;
  in.b = acts.dbc.mat().Cols(dt_rank_, d_state_);
  in.c = acts.dbc.mat().Cols(dt_rank_ + d_state_, d_state_);
  in.z = acts.xz.mat().Cols(d_inner_, d_inner_);
  in.dt_bias = &dt_bias_->value;
  in.a_log = &a_log_->value;
  in.d = &d_->value;
  in.saved = acts.scan_saved.get();
  return in;
}

void MambaBlock::Forward(const BatchContext& ctx, Mat h, Mat out, Activations* acts) const {
  Backend* be = params_->backend();
  const int64_t n = h.rows;
  const DType dt = params_->dtype();
  if (acts->xz.empty() || acts->xz.dim(0) != n) {
    acts->xz = be->Empty(dt, {n, 2 * d_inner_});
    acts->u = be->Empty(dt, {n, d_inner_});
    acts->dbc = be->Empty(dt, {n, dt_rank_ + 2 * d_state_});
    acts->y = be->Empty(be->MatmulInputDType(dt), {n, d_inner_});  // read only by out_proj
  }
  in_proj_.Forward(ctx, h, acts->xz.mat());
  be->ConvForward(ctx.seq, acts->xz.mat().Cols(0, d_inner_), conv_w_->value, conv_b_->value,
                  acts->u.mat());
  x_proj_.Forward(ctx, acts->u.mat(), acts->dbc.mat());
  Tensor delta_raw = be->Empty(dt, {n, d_inner_});
  dt_proj_.Forward(ctx, acts->dbc.mat().Cols(0, dt_rank_), delta_raw.mat());
  be->ScanForward(ctx.seq, dt_proj_.routing(ctx), MakeScanInputs(*acts, delta_raw.mat()),
                  acts->y.mat());
  out_proj_.Forward(ctx, acts->y.mat(), out);
}

void MambaBlock::Backward(const BatchContext& ctx, Mat h, const Activations& acts, Mat dout,
                          Mat dh) const {
  Backend* be = params_->backend();
  const int64_t n = h.rows;
  const DType dt = params_->dtype();
  Tensor dy = be->Empty(dt, {n, d_inner_});
  Tensor dxz = be->Empty(be->MatmulInputDType(dt), {n, 2 * d_inner_});  // read only by in_proj
  Tensor du = be->Empty(dt, {n, d_inner_});
  Tensor ddbc = be->Empty(dt, {n, dt_rank_ + 2 * d_state_});
  Tensor ddelta = be->Empty(be->MatmulInputDType(dt), {n, d_inner_});  // read only by dt_proj

  out_proj_.Backward(ctx, acts.y.mat(), dout, dy.mat(), false);
  ScanGrads g;
  g.du = du.mat();
  g.ddelta_raw = ddelta.mat();
  g.db = ddbc.mat().Cols(dt_rank_, d_state_);
  g.dc = ddbc.mat().Cols(dt_rank_ + d_state_, d_state_);
  g.dz = dxz.mat().Cols(d_inner_, d_inner_);
  g.ddt_bias = &dt_bias_->grad;
  g.da_log = &a_log_->grad;
  g.dd = &d_->grad;
  Tensor delta_raw = be->Empty(dt, {n, d_inner_});
  dt_proj_.Forward(ctx, acts.dbc.mat().Cols(0, dt_rank_), delta_raw.mat());
  be->ScanBackward(ctx.seq, dt_proj_.routing(ctx), MakeScanInputs(acts, delta_raw.mat()),
                   dy.mat(), g);
  dt_proj_.Backward(ctx, acts.dbc.mat().Cols(0, dt_rank_), ddelta.mat(),
                    ddbc.mat().Cols(0, dt_rank_), false);
  x_proj_.Backward(ctx, acts.u.mat(), ddbc.mat(), du.mat(), /*accumulate_dx=*/true);
  be->ConvBackward(ctx.seq, acts.xz.mat().Cols(0, d_inner_), conv_w_->value, conv_b_->value,
                   du.mat(), dxz.mat().Cols(0, d_inner_), &conv_w_->grad, &conv_b_->grad);
  in_proj_.Backward(ctx, h, dxz.mat(), dh, false);
}

}  // namespace modamba
