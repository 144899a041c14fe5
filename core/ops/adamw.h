// AdamW reference (decoupled weight decay, bias-corrected moments).
#ifndef MODAMBA_CORE_OPS_ADAMW_H_
#define MODAMBA_CORE_OPS_ADAMW_H_

#include <cmath>
#include <cstdint>

namespace modamba::ops {

template <typename T>
void AdamW(int64_t n, const T* grad, T* param, T* m, T* v, double lr, double beta1,
           double beta2, double eps, double weight_decay, int64_t step, double grad_scale) {
  const double c1 = 1 - std::pow(beta1, step);
  const double c2 = 1 - std::pow(beta2, step);
  for (int64_t i = 0; i < n; ++i) {
    T g = grad[i] * T(grad_scale);
    m[i] = T(beta1) * m[i] + T(1 - beta1) * g;
    v[i] = T(beta2) * v[i] + T(1 - beta2) * g * g;
    T mhat = m[i] / T(c1);
    T vhat = v[i] / T(c2);
    param[i] -= T(lr) * (mhat / (std::sqrt(vhat) + T(eps)) + T(weight_decay) * param[i]);
  }
}

}  // namespace modamba::ops

#endif  // MODAMBA_CORE_OPS_ADAMW_H_
