#include "core/optimizer.h"

#include <cmath>

namespace modamba {

double LearningRate(const v1::OptimizerConfig& c, int64_t step, int64_t total_steps) {
  const double peak = c.lr();
  if (c.warmup_steps() > 0 && step <= c.warmup_steps()) return peak * step / c.warmup_steps();
  const double span = std::max<int64_t>(1, total_steps - c.warmup_steps());
  const double progress = std::min(1.0, (step - c.warmup_steps()) / span);
  const double floor = peak * c.min_lr_ratio();
  return floor + (peak - floor) * 0.5 * (1 + std::cos(M_PI * progress));
}

AdamWOptimizer::AdamWOptimizer(const v1::OptimizerConfig& config, ParamSet* params)
    : config_(config), params_(params) {
  Backend* be = params->backend();
  for (const auto& p : params->all()) {
    m_.push_back(be->Empty(params->dtype(), p->value.shape()));
    v_.push_back(be->Empty(params->dtype(), p->value.shape()));
    be->Fill(m_.back().mat(), 0);
    be->Fill(v_.back().mat(), 0);
  }
}

AdamWOptimizer::StepInfo AdamWOptimizer::Step(int64_t step, int64_t total_steps) {
  Backend* be = params_->backend();
  double sq = 0;
  for (const auto& p : params_->all()) sq += be->SumSquares(p->grad.mat());
  StepInfo info;
  info.grad_norm = std::sqrt(sq);
  info.lr = LearningRate(config_, step, total_steps);
  AdamWStep s;
  s.lr = info.lr;
  s.beta1 = config_.beta1();
  s.beta2 = config_.beta2();
  s.eps = config_.eps();
  s.step = step;
  if (config_.grad_clip() > 0 && info.grad_norm > config_.grad_clip()) {
    s.grad_scale = config_.grad_clip() / info.grad_norm;
  }
  const auto& all = params_->all();
  for (size_t i = 0; i < all.size(); ++i) {
    s.weight_decay = all[i]->decay ? config_.weight_decay() : 0.0;
    be->AdamW(s, all[i]->grad, &all[i]->value, &m_[i], &v_[i]);
  }
  params_->ZeroGrads();
  return info;
}

}  // namespace modamba
