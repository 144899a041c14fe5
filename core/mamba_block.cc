#include "core/mamba_block.h"

#include <cmath>
#include <cstring>
#include <memory>

namespace modamba {
namespace {
int Groups(bool routed, const v1::ModelConfig& c) { return routed ? c.n_modalities() : 1; }
}  // namespace

// All [N, *] on the device. normed (the block's norm output) and y, read
// only by products, are in the backend's MatmulInputDType (BF16 on a GPU with
// bf16 products); so are the backward's dxz and ddelta. delta_raw is not kept:
// the backward recomputes it from dbc (one thin GEMM) rather than hold [N, E]
// per layer.
struct MambaBlock::Activations : Block::Activations {
  Tensor normed, rstd, xz, u, dbc, y;
  // What the scan's forward keeps for its backward (ScanInputs::saved),
  // written by the backward too.
  std::unique_ptr<Tensor> scan_saved = std::make_unique<Tensor>();
};

struct MambaBlock::State : Block::State {
  Tensor conv;  // [streams, d_conv - 1, E], oldest input first
  Tensor ssm;   // [streams, E, S]
};

MambaBlock::MambaBlock(ParamSet* params, const std::string& layer, const v1::ModelConfig& c)
    : params_(params),
      d_model_(c.d_model()),
      d_inner_(c.expand() * c.d_model()),
      d_state_(c.d_state()),
      d_conv_(c.d_conv()),
      dt_rank_(c.dt_rank()),
      n_layer_(c.n_layer()),
      config_(c),
      norm_(params, layer + ".norm", d_model_, c.norm_eps()),
      in_proj_(params, layer + ".mixer.in_proj", d_model_, 2 * d_inner_, Groups(c.route_in(), c)),
      x_proj_(params, layer + ".mixer.x_proj", d_inner_, dt_rank_ + 2 * d_state_,
              Groups(c.route_x(), c)),
      dt_proj_(params, layer + ".mixer.dt_proj", dt_rank_, d_inner_, Groups(c.route_dt(), c)),
      out_proj_(params, layer + ".mixer.out_proj", d_inner_, d_model_, Groups(c.route_out(), c)) {
  conv_w_ = params->Add(layer + ".mixer.conv.weight", {d_inner_, d_conv_}, true);
  conv_b_ = params->Add(layer + ".mixer.conv.bias", {d_inner_}, false);
  dt_bias_ =
      params->Add(layer + ".mixer.dt_proj.bias", {Groups(c.route_dt(), c), d_inner_}, false);
  a_log_ = params->Add(layer + ".mixer.A_log", {d_inner_, d_state_}, false);
  d_ = params->Add(layer + ".mixer.D", {d_inner_}, false);
}

void MambaBlock::Init(uint64_t seed) {
  const DType dt = params_->dtype();
  norm_.Init();
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

ScanInputs MambaBlock::MakeScanInputs(Mat u, Mat dbc, Mat xz, Mat delta_raw,
                                      Tensor* saved) const {
  ScanInputs in;
  in.u = u;
  in.delta_raw = delta_raw;
  in.b = dbc.Cols(dt_rank_, d_state_);
  in.c = dbc.Cols(dt_rank_ + d_state_, d_state_);
  in.z = xz.Cols(d_inner_, d_inner_);
  in.dt_bias = &dt_bias_->value;
  in.a_log = &a_log_->value;
  in.d = &d_->value;
  in.saved = saved;
  return in;
}

std::unique_ptr<Block::Activations> MambaBlock::NewActivations() const {
  return std::make_unique<Activations>();
}

void MambaBlock::Forward(const BatchContext& ctx, Mat x, Mat out, Block::Activations* base) const {
  Activations* acts = static_cast<Activations*>(base);
  Backend* be = params_->backend();
  const int64_t n = x.rows;
  const DType dt = params_->dtype();
  if (acts->xz.empty() || acts->xz.dim(0) != n) {
    acts->normed = be->Empty(be->MatmulInputDType(dt), {n, d_model_});  // read only by in_proj
    acts->rstd = be->Empty(dt, {n});
    acts->xz = be->Empty(dt, {n, 2 * d_inner_});
    acts->u = be->Empty(dt, {n, d_inner_});
    acts->dbc = be->Empty(dt, {n, dt_rank_ + 2 * d_state_});
    acts->y = be->Empty(be->MatmulInputDType(dt), {n, d_inner_});  // read only by out_proj
  }
  norm_.Forward(x, acts->normed.mat(), &acts->rstd);
  in_proj_.Forward(ctx, acts->normed.mat(), acts->xz.mat());
  be->ConvForward(ctx.seq, acts->xz.mat().Cols(0, d_inner_), conv_w_->value, conv_b_->value,
                  acts->u.mat());
  x_proj_.Forward(ctx, acts->u.mat(), acts->dbc.mat());
  Tensor delta_raw = be->Empty(dt, {n, d_inner_});
  dt_proj_.Forward(ctx, acts->dbc.mat().Cols(0, dt_rank_), delta_raw.mat());
  be->ScanForward(ctx.seq, dt_proj_.routing(ctx),
                  MakeScanInputs(acts->u.mat(), acts->dbc.mat(), acts->xz.mat(), delta_raw.mat(),
                                 acts->scan_saved.get()),
                  acts->y.mat());
  out_proj_.Forward(ctx, acts->y.mat(), out);
  be->Axpy(1.0, x, out);
}

void MambaBlock::Backward(const BatchContext& ctx, Mat x, const Block::Activations& base,
                          Mat dstream) const {
  const Activations& acts = static_cast<const Activations&>(base);
  Backend* be = params_->backend();
  const int64_t n = x.rows;
  const DType dt = params_->dtype();
  Tensor dy = be->Empty(dt, {n, d_inner_});
  Tensor dxz = be->Empty(be->MatmulInputDType(dt), {n, 2 * d_inner_});  // read only by in_proj
  Tensor du = be->Empty(dt, {n, d_inner_});
  Tensor ddbc = be->Empty(dt, {n, dt_rank_ + 2 * d_state_});
  Tensor ddelta = be->Empty(be->MatmulInputDType(dt), {n, d_inner_});  // read only by dt_proj
  Tensor dnormed = be->Empty(dt, {n, d_model_});

  // The residual passes dstream through unchanged; the mixer's branch adds.
  out_proj_.Backward(ctx, acts.y.mat(), dstream, dy.mat(), false);
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
  be->ScanBackward(ctx.seq, dt_proj_.routing(ctx),
                   MakeScanInputs(acts.u.mat(), acts.dbc.mat(), acts.xz.mat(), delta_raw.mat(),
                                  acts.scan_saved.get()),
                   dy.mat(), g);
  dt_proj_.Backward(ctx, acts.dbc.mat().Cols(0, dt_rank_), ddelta.mat(),
                    ddbc.mat().Cols(0, dt_rank_), false);
  x_proj_.Backward(ctx, acts.u.mat(), ddbc.mat(), du.mat(), /*accumulate_dx=*/true);
  be->ConvBackward(ctx.seq, acts.xz.mat().Cols(0, d_inner_), conv_w_->value, conv_b_->value,
                   du.mat(), dxz.mat().Cols(0, d_inner_), &conv_w_->grad, &conv_b_->grad);
  in_proj_.Backward(ctx, acts.normed.mat(), dxz.mat(), dnormed.mat(), false);
  norm_.Backward(x, acts.rstd, dnormed.mat(), dstream);
}

std::unique_ptr<Block::State> MambaBlock::NewState(int streams) const {
  Backend* be = params_->backend();
  auto state = std::make_unique<State>();
  state->conv = be->Empty(params_->dtype(), {streams, d_conv_ - 1, d_inner_});
  state->ssm = be->Empty(params_->dtype(), {streams, d_inner_, d_state_});
  be->Fill(state->conv.mat(), 0);
  be->Fill(state->ssm.mat(), 0);
  return state;
}

void MambaBlock::CopyState(const Block::State& from, Block::State* to) const {
  Backend* be = params_->backend();
  be->Copy(static_cast<const State&>(from).conv.mat(), static_cast<State*>(to)->conv.mat());
  be->Copy(static_cast<const State&>(from).ssm.mat(), static_cast<State*>(to)->ssm.mat());
}

// Forward with the conv and scan stepped. Every activation stays in the
// model's dtype (not MatmulInputDType): a step has few rows, and fp32 keeps
// generation closest to the parallel forward.
void MambaBlock::Step(const StepContext& step, Mat x, Block::State* base) const {
  State* state = static_cast<State*>(base);
  Backend* be = params_->backend();
  const BatchContext ctx = step.AsBatch();
  const int64_t rows = x.rows;
  const DType dt = params_->dtype();
  Tensor h = be->Empty(dt, {rows, d_model_}), rstd = be->Empty(dt, {rows});
  Tensor xz = be->Empty(dt, {rows, 2 * d_inner_}), u = be->Empty(dt, {rows, d_inner_});
  Tensor dbc = be->Empty(dt, {rows, dt_rank_ + 2 * d_state_});
  Tensor delta_raw = be->Empty(dt, {rows, d_inner_});
  Tensor y = be->Empty(dt, {rows, d_inner_}), out = be->Empty(dt, {rows, d_model_});
  norm_.Forward(x, h.mat(), &rstd);
  in_proj_.Forward(ctx, h.mat(), xz.mat());
  be->ConvStep(step.layout, xz.mat().Cols(0, d_inner_), conv_w_->value, conv_b_->value,
               &state->conv, u.mat());
  x_proj_.Forward(ctx, u.mat(), dbc.mat());
  dt_proj_.Forward(ctx, dbc.mat().Cols(0, dt_rank_), delta_raw.mat());
  be->ScanStep(step.layout, dt_proj_.routing(ctx),
               MakeScanInputs(u.mat(), dbc.mat(), xz.mat(), delta_raw.mat(), nullptr),
               &state->ssm, y.mat());
  out_proj_.Forward(ctx, y.mat(), out.mat());
  be->Axpy(1.0, out.mat(), x);
}

}  // namespace modamba
