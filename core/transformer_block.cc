#include "core/transformer_block.h"

#include <cmath>
#include <vector>

#include "glog/logging.h"

namespace modamba {
namespace {
int Groups(bool routed, const TransformerConfig& c) { return routed ? c.n_modalities : 1; }
}  // namespace

TransformerBlock::TransformerBlock(ParamSet* params, const std::string& name,
                                   const TransformerConfig& c)
    : params_(params),
      config_(c),
      norm1_(params, name + ".attn_norm", c.d_model, c.norm_eps, Groups(c.route_norms, c)),
      norm2_(params, name + ".ffn_norm", c.d_model, c.norm_eps, Groups(c.route_norms, c)),
      qkv_proj_(params, name + ".qkv_proj", c.d_model, 3 * c.d_model, Groups(c.route_qkv, c)),
      out_proj_(params, name + ".out_proj", c.d_model, c.d_model, Groups(c.route_attn_out, c)),
      ffn_in_(params, name + ".ffn_in", c.d_model, 2 * c.d_ff, Groups(c.route_ffn_in, c)),
      ffn_out_(params, name + ".ffn_out", c.d_ff, c.d_model, Groups(c.route_ffn_out, c)) {
  CHECK(c.n_head > 0 && c.d_model % c.n_head == 0 && c.head_dim() % 2 == 0)
      << name << ": d_model " << c.d_model << " is not n_head " << c.n_head
      << " heads of an even head_dim";
}

void TransformerBlock::Init(uint64_t seed) {
  // The branches' output projections start small (GPT-2's 1/sqrt(2 n_layer)),
  // so the residual stream's scale does not grow with depth.
  const double branch = 1.0 / std::sqrt(2.0 * config_.n_layer);
  norm1_.Init();
  norm2_.Init();
  qkv_proj_.Init(seed, 1.0 / std::sqrt(config_.d_model));
  out_proj_.Init(seed, branch / std::sqrt(config_.d_model));
  ffn_in_.Init(seed, 1.0 / std::sqrt(config_.d_model));
  ffn_out_.Init(seed, branch / std::sqrt(config_.d_ff));
}

template <typename Attend>
void TransformerBlock::Run(const BatchContext& ctx, Mat x, Mat out, Activations* acts,
                           Attend attend) const {
  Backend* be = params_->backend();
  const int64_t n = x.rows;
  const int d = config_.d_model, f = config_.d_ff;
  const DType dt = params_->dtype(), mm = be->MatmulInputDType(dt);
  if (acts->x1.empty() || acts->x1.dim(0) != n) {
    acts->h1 = be->Empty(mm, {n, d});
    acts->rstd1 = be->Empty(dt, {n});
    acts->qkv = be->Empty(dt, {n, 3 * d});
    acts->a = be->Empty(mm, {n, d});
    acts->lse = be->Empty(dt, {n, config_.n_head});
    acts->x1 = be->Empty(dt, {n, d});
    acts->h2 = be->Empty(mm, {n, d});
    acts->rstd2 = be->Empty(dt, {n});
    acts->gu = be->Empty(dt, {n, 2 * f});
    acts->s = be->Empty(mm, {n, f});
  }
  norm1_.Forward(ctx, x, acts->h1.mat(), &acts->rstd1);
  qkv_proj_.Forward(ctx, acts->h1.mat(), acts->qkv.mat());
  attend(acts->qkv.mat(), acts->a.mat(), &acts->lse);
  Tensor branch = be->Empty(dt, {n, d});
  out_proj_.Forward(ctx, acts->a.mat(), branch.mat());
  be->Copy(x, acts->x1.mat());
  norm2_.AddForward(ctx, acts->x1.mat(), branch.mat(), acts->h2.mat(), &acts->rstd2);
  const Mat gu = acts->gu.mat();
  ffn_in_.Forward(ctx, acts->h2.mat(), gu);
  be->SwigluForward(gu.Cols(0, f), gu.Cols(f, f), acts->s.mat());
  ffn_out_.Forward(ctx, acts->s.mat(), out);
  be->Axpy(1, acts->x1.mat(), out);
}

void TransformerBlock::Forward(const BatchContext& ctx, Mat x, Mat out, Activations* acts) const {
  Backend* be = params_->backend();
  const int d = config_.d_model;
  Run(ctx, x, out, acts, [&](Mat qkv, Mat a, Tensor* lse) {
    be->Rope(ctx.seq, config_.head_dim(), config_.rope_theta, false, qkv.Cols(0, 2 * d),
             qkv.Cols(0, 2 * d));
    be->AttentionForward(ctx.seq, config_.n_head, qkv.Cols(0, d), qkv.Cols(d, d),
                         qkv.Cols(2 * d, d), a, lse);
  });
}

TransformerBlock::State TransformerBlock::NewState(int64_t num_streams, int64_t max_len) const {
  Backend* be = params_->backend();
  State s;
  s.k_cache = be->Empty(params_->dtype(), {num_streams, max_len, config_.d_model});
  s.v_cache = be->Empty(params_->dtype(), {num_streams, max_len, config_.d_model});
  s.lengths = Upload(be, DType::kI32, std::vector<int32_t>(num_streams, 0));
  return s;
}

void TransformerBlock::Step(const BatchContext& ctx, const StepLayout& step, Mat x, Mat out,
                            State* state) const {
  Backend* be = params_->backend();
  const int d = config_.d_model;
  Activations acts;
  Run(ctx, x, out, &acts, [&](Mat qkv, Mat a, Tensor*) {
    be->AttentionStep(step, config_.n_head, config_.rope_theta, qkv.Cols(0, d), qkv.Cols(d, d),
                      qkv.Cols(2 * d, d), &state->k_cache, &state->v_cache, &state->lengths, a);
  });
}

void TransformerBlock::Backward(const BatchContext& ctx, Mat x, const Activations& acts,
                                Mat dout, Mat dx) const {
  Backend* be = params_->backend();
  const int64_t n = x.rows;
  const int d = config_.d_model, f = config_.d_ff, heads = config_.n_head;
  const DType dt = params_->dtype(), mm = be->MatmulInputDType(dt);
  // The feed-forward branch; dx holds d(loss)/d(x1) after it.
  be->Copy(dout, dx);
  Tensor ds = be->Empty(dt, {n, f});
  ffn_out_.Backward(ctx, acts.s.mat(), dout, ds.mat(), false);
  const Mat gu = acts.gu.mat();
  Tensor dgu = be->Empty(mm, {n, 2 * f});  // read only by ffn_in's backward
  be->SwigluBackward(gu.Cols(0, f), gu.Cols(f, f), ds.mat(), dgu.mat().Cols(0, f),
                     dgu.mat().Cols(f, f));
  Tensor dh = be->Empty(dt, {n, d});
  ffn_in_.Backward(ctx, acts.h2.mat(), dgu.mat(), dh.mat(), false);
  norm2_.Backward(ctx, acts.x1.mat(), acts.rstd2, dh.mat(), dx);

  // The attention branch, then the skip: dx becomes d(loss)/d(x).
  Tensor da = be->Empty(dt, {n, d});
  out_proj_.Backward(ctx, acts.a.mat(), dx, da.mat(), false);
  const Mat qkv = acts.qkv.mat();
  Tensor dqkv = be->Empty(dt, {n, 3 * d});
  const Mat g = dqkv.mat();
  be->AttentionBackward(ctx.seq, heads, qkv.Cols(0, d), qkv.Cols(d, d), qkv.Cols(2 * d, d),
                        acts.a.mat(), acts.lse, da.mat(), g.Cols(0, d), g.Cols(d, d),
                        g.Cols(2 * d, d));
  be->Rope(ctx.seq, config_.head_dim(), config_.rope_theta, true, g.Cols(0, 2 * d),
           g.Cols(0, 2 * d));
  qkv_proj_.Backward(ctx, acts.h1.mat(), g, dh.mat(), false);
  norm1_.Backward(ctx, x, acts.rstd1, dh.mat(), dx);
}

}  // namespace modamba
