// AdamW over a ParamSet with warmup + cosine learning rate and global-norm
// clipping. Moments live beside the parameters on the backend's device.
#ifndef MODAMBA_CORE_OPTIMIZER_H_
#define MODAMBA_CORE_OPTIMIZER_H_

#include <vector>

#include "core/layers.h"
#include "proto/config.pb.h"

namespace modamba {

// Linear warmup over warmup_steps, then cosine decay to lr * min_lr_ratio at
// total_steps. `step` is 1-based.
double LearningRate(const v1::OptimizerConfig& config, int64_t step, int64_t total_steps);

class AdamWOptimizer {
 public:
  AdamWOptimizer(const v1::OptimizerConfig& config, ParamSet* params);

  struct StepInfo {
    double lr = 0;
    double grad_norm = 0;  // before clipping
  };
  // One update from the accumulated grads (which it then zeroes).
  StepInfo Step(int64_t step, int64_t total_steps);

  // First and second moments, in the ParamSet's order (for checkpoints).
  std::vector<Tensor>& m() { return m_; }
  std::vector<Tensor>& v() { return v_; }

 private:
  v1::OptimizerConfig config_;
  ParamSet* params_;
  std::vector<Tensor> m_, v_;
};

}  // namespace modamba

#endif  // MODAMBA_CORE_OPTIMIZER_H_
