#include "core/transformer_block.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "glog/logging.h"

namespace modamba {
namespace {
int Groups(bool routed, const v1::ModelConfig& c) { return routed ? c.n_modalities() : 1; }
}  // namespace

// All [N, *] on the device. h1, a, h2 and s feed only products and are in
// the backend's MatmulInputDType.
struct TransformerBlock::Activations : Block::Activations {
  Tensor h1, rstd1, qkv, a, lse, x1, h2, rstd2, gu, s;
};

struct TransformerBlock::State : Block::State {
  int64_t streams = 0, capacity = 0;
  Tensor k_cache, v_cache;            // [streams, capacity, D]; none while capacity is 0
  Tensor lengths;                     // I32 [streams], the tokens cached
  std::vector<int32_t> host_lengths;  // the same on the host, to size the caches
};

TransformerBlock::TransformerBlock(ParamSet* params, const std::string& name,
                                   const v1::ModelConfig& c)
    : params_(params),
      config_(c),
      d_model_(c.d_model()),
      n_head_(c.n_head()),
      head_dim_(c.d_model() / std::max(1, c.n_head())),
      d_ff_(c.d_ff()),
      norm1_(params, name + ".attn_norm", d_model_, c.norm_eps(), Groups(c.route_norms(), c)),
      norm2_(params, name + ".ffn_norm", d_model_, c.norm_eps(), Groups(c.route_norms(), c)),
      qkv_proj_(params, name + ".attn.qkv_proj", d_model_, 3 * d_model_, Groups(c.route_qkv(), c)),
      out_proj_(params, name + ".attn.out_proj", d_model_, d_model_,
                Groups(c.route_attn_out(), c)),
      ffn_in_(params, name + ".ffn.in_proj", d_model_, 2 * d_ff_, Groups(c.route_ffn_in(), c)),
      ffn_out_(params, name + ".ffn.out_proj", d_ff_, d_model_, Groups(c.route_ffn_out(), c)) {
  CHECK(n_head_ > 0 && d_model_ % n_head_ == 0 && head_dim_ % 2 == 0 && d_ff_ > 0)
      << name << ": d_model " << d_model_ << " is not n_head " << n_head_
      << " heads of an even head_dim, or d_ff is unset (an unresolved ModelConfig?)";
}

void TransformerBlock::Init(uint64_t seed) {
  // The branches' output projections start small (GPT-2's 1/sqrt(2 n_layer)),
  // so the residual stream's scale does not grow with depth.
  const double branch = 1.0 / std::sqrt(2.0 * config_.n_layer());
  norm1_.Init();
  norm2_.Init();
  qkv_proj_.Init(seed, 1.0 / std::sqrt(d_model_));
  out_proj_.Init(seed, branch / std::sqrt(d_model_));
  ffn_in_.Init(seed, 1.0 / std::sqrt(d_model_));
  ffn_out_.Init(seed, branch / std::sqrt(d_ff_));
}

std::unique_ptr<Block::Activations> TransformerBlock::NewActivations() const {
  return std::make_unique<Activations>();
}

template <typename Attend>
void TransformerBlock::Run(const BatchContext& ctx, Mat x, Mat out, Activations* acts,
                           Attend attend) const {
  Backend* be = params_->backend();
  const int64_t n = x.rows;
  const int d = d_model_, f = d_ff_;
  const DType dt = params_->dtype(), mm = be->MatmulInputDType(dt);
  if (acts->x1.empty() || acts->x1.dim(0) != n) {
    acts->h1 = be->Empty(mm, {n, d});
    acts->rstd1 = be->Empty(dt, {n});
    acts->qkv = be->Empty(dt, {n, 3 * d});
    acts->a = be->Empty(mm, {n, d});
    acts->lse = be->Empty(dt, {n, n_head_});
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

void TransformerBlock::Forward(const BatchContext& ctx, Mat x, Mat out,
                               Block::Activations* base) const {
  Backend* be = params_->backend();
  const int d = d_model_;
  Run(ctx, x, out, static_cast<Activations*>(base), [&](Mat qkv, Mat a, Tensor* lse) {
    be->Rope(ctx.seq, head_dim_, config_.rope_theta(), false, qkv.Cols(0, 2 * d),
             qkv.Cols(0, 2 * d));
    be->AttentionForward(ctx.seq, n_head_, qkv.Cols(0, d), qkv.Cols(d, d), qkv.Cols(2 * d, d), a,
                         lse);
  });
}

void TransformerBlock::Backward(const BatchContext& ctx, Mat x, const Block::Activations& base,
                                Mat dstream) const {
  const Activations& acts = static_cast<const Activations&>(base);
  Backend* be = params_->backend();
  const int64_t n = x.rows;
  const int d = d_model_, f = d_ff_;
  const DType dt = params_->dtype(), mm = be->MatmulInputDType(dt);
  // The feed-forward branch: dstream becomes d(loss)/d(x1) (its skip plus
  // the branch through norm2).
  Tensor ds = be->Empty(dt, {n, f});
  ffn_out_.Backward(ctx, acts.s.mat(), dstream, ds.mat(), false);
  const Mat gu = acts.gu.mat();
  Tensor dgu = be->Empty(mm, {n, 2 * f});  // read only by ffn_in's backward
  be->SwigluBackward(gu.Cols(0, f), gu.Cols(f, f), ds.mat(), dgu.mat().Cols(0, f),
                     dgu.mat().Cols(f, f));
  Tensor dh = be->Empty(dt, {n, d});
  ffn_in_.Backward(ctx, acts.h2.mat(), dgu.mat(), dh.mat(), false);
  norm2_.Backward(ctx, acts.x1.mat(), acts.rstd2, dh.mat(), dstream);

  // The attention branch, likewise: dstream becomes d(loss)/d(x).
  Tensor da = be->Empty(dt, {n, d});
  out_proj_.Backward(ctx, acts.a.mat(), dstream, da.mat(), false);
  const Mat qkv = acts.qkv.mat();
  Tensor dqkv = be->Empty(dt, {n, 3 * d});
  const Mat g = dqkv.mat();
  be->AttentionBackward(ctx.seq, n_head_, qkv.Cols(0, d), qkv.Cols(d, d), qkv.Cols(2 * d, d),
                        acts.a.mat(), acts.lse, da.mat(), g.Cols(0, d), g.Cols(d, d),
                        g.Cols(2 * d, d));
  be->Rope(ctx.seq, head_dim_, config_.rope_theta(), true, g.Cols(0, 2 * d), g.Cols(0, 2 * d));
  qkv_proj_.Backward(ctx, acts.h1.mat(), g, dh.mat(), false);
  norm1_.Backward(ctx, x, acts.rstd1, dh.mat(), dstream);
}

std::unique_ptr<Block::State> TransformerBlock::NewState(int streams) const {
  auto state = std::make_unique<State>();
  state->streams = streams;
  state->host_lengths.assign(streams, 0);
  state->lengths = Upload(params_->backend(), DType::kI32, state->host_lengths);
  return state;
}

void TransformerBlock::Reserve(int64_t length, State* state) const {
  if (length <= state->capacity) return;
  Backend* be = params_->backend();
  const int64_t streams = state->streams, old = state->capacity * d_model_;
  const int64_t grown = std::max<int64_t>({length, 2 * state->capacity, 64});
  for (Tensor* cache : {&state->k_cache, &state->v_cache}) {
    Tensor bigger = be->Empty(params_->dtype(), {streams, grown, d_model_});
    if (old > 0) {  // each stream's rows move to the front of its new room
      Mat room = bigger.mat();
      room.rows = streams;
      room.cols = old;
      room.ld = grown * d_model_;
      Mat held = cache->mat();
      held.rows = streams;
      held.cols = held.ld = old;
      be->Copy(held, room);
    }
    *cache = std::move(bigger);
  }
  state->capacity = grown;
}

void TransformerBlock::CopyState(const Block::State& base_from, Block::State* base_to) const {
  const State& from = static_cast<const State&>(base_from);
  State* to = static_cast<State*>(base_to);
  CHECK_EQ(from.streams, to->streams) << "copy state: streams";
  Backend* be = params_->backend();
  if (from.capacity > 0) {
    to->k_cache = be->Empty(params_->dtype(), from.k_cache.shape());
    to->v_cache = be->Empty(params_->dtype(), from.v_cache.shape());
    be->Copy(from.k_cache.mat(), to->k_cache.mat());
    be->Copy(from.v_cache.mat(), to->v_cache.mat());
  }
  to->capacity = from.capacity;
  to->host_lengths = from.host_lengths;
  be->Copy(from.lengths.mat(), to->lengths.mat());
}

void TransformerBlock::Step(const StepContext& step, Mat x, Block::State* base) const {
  State* state = static_cast<State*>(base);
  Backend* be = params_->backend();
  const int d = d_model_;
  int64_t needed = 0;  // the longest document after this step
  for (size_t i = 0; i < step.streams->size(); ++i) {
    int32_t& length = state->host_lengths[(*step.streams)[i]];
    length = (*step.reset)[i] ? 1 : length + 1;
    needed = std::max<int64_t>(needed, length);
  }
  Reserve(needed, state);
  Activations acts;
  Tensor out = be->Empty(params_->dtype(), {x.rows, d});
  Run(step.AsBatch(), x, out.mat(), &acts, [&](Mat qkv, Mat a, Tensor*) {
    be->AttentionStep(step.layout, n_head_, config_.rope_theta(), qkv.Cols(0, d), qkv.Cols(d, d),
                      qkv.Cols(2 * d, d), &state->k_cache, &state->v_cache, &state->lengths, a);
  });
  be->Copy(out.mat(), x);
}

}  // namespace modamba
