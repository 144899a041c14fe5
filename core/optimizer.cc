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

OptimizerStepInfo ApplyAdamW(Backend* backend, const v1::OptimizerConfig& config, int64_t step,
                             int64_t total_steps, double grad_norm,
                             std::vector<AdamWTarget>* targets) {
  OptimizerStepInfo info;
  info.grad_norm = grad_norm;
  info.lr = LearningRate(config, step, total_steps);
  AdamWStep s;
  s.lr = info.lr;
  s.beta1 = config.beta1();
  s.beta2 = config.beta2();
  s.eps = config.eps();
  s.step = step;
  if (config.grad_clip() > 0 && grad_norm > config.grad_clip()) {
    s.grad_scale = config.grad_clip() / grad_norm;
  }
  for (AdamWTarget& t : *targets) {
    s.weight_decay = t.decay ? config.weight_decay() : 0.0;
    backend->AdamW(s, t.grad, &t.value, &t.m, &t.v);
  }
  return info;
}

OptimizerStepInfo AdamWOptimizer::Step(int64_t step, int64_t total_steps) {
  Backend* be = params_->backend();
  std::vector<Mat> grads;
  std::vector<AdamWTarget> targets;
  const auto& all = params_->all();
  for (size_t i = 0; i < all.size(); ++i) {
    grads.push_back(all[i]->grad.mat());
    targets.push_back({Tensor::View(all[i]->value, 0, all[i]->value.shape()),
                       Tensor::View(all[i]->grad, 0, all[i]->grad.shape()),
                       Tensor::View(m_[i], 0, m_[i].shape()), Tensor::View(v_[i], 0, v_[i].shape()),
                       all[i]->decay});
  }
  OptimizerStepInfo info = ApplyAdamW(be, config_, step, total_steps,
                                          std::sqrt(be->SumSquares(grads)), &targets);
  params_->ZeroGrads();
  return info;
}

}  // namespace modamba
