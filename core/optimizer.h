// AdamW over a ParamSet with warmup + cosine learning rate and global-norm
// clipping, for models whose parameters stay resident (tests, benchmarks;
// the trainer shards them: trainer/fsdp.h). Moments live beside the
// parameters on the backend's device.
#ifndef MODAMBA_CORE_OPTIMIZER_H_
#define MODAMBA_CORE_OPTIMIZER_H_

#include <vector>

#include "core/layers.h"
#include "proto/config.pb.h"

namespace modamba {

// Linear warmup over warmup_steps, then cosine decay to lr * min_lr_ratio at
// total_steps. `step` is 1-based.
double LearningRate(const v1::OptimizerConfig& config, int64_t step, int64_t total_steps);

// One slice of parameters the optimizer updates in place: views of the
// parameter, its gradient and moments (FSDP passes each parameter's part of
// a rank's shard).
struct AdamWTarget {
  Tensor value, grad, m, v;
  bool decay = true;
};

struct OptimizerStepInfo {
  double lr = 0;
  double grad_norm = 0;  // before clipping
  bool applied = true;   // false: the step was skipped (trainer/fsdp.h)
};

// The step every optimizer shares: learning rate from the schedule, clipping
// by the global gradient norm `grad_norm`, AdamW with weight decay only where
// the target asks for it.
OptimizerStepInfo ApplyAdamW(Backend* backend, const v1::OptimizerConfig& config, int64_t step,
                             int64_t total_steps, double grad_norm,
                             std::vector<AdamWTarget>* targets);

class AdamWOptimizer {
 public:
  AdamWOptimizer(const v1::OptimizerConfig& config, ParamSet* params);

  // One update from the accumulated grads (which it then zeroes).
  OptimizerStepInfo Step(int64_t step, int64_t total_steps);

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
