// Cross-entropy reference with per-row weights (0 masks a row out).
#ifndef MODAMBA_CORE_OPS_LOSS_H_
#define MODAMBA_CORE_OPS_LOSS_H_

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace modamba::ops {

// losses[n] = -log softmax(logits[n])[target[n]] for weighted rows, else 0;
// dlogits[n] = weight[n] * (softmax - onehot). dlogits may alias logits.
template <typename T>
void CrossEntropy(int64_t n, int64_t v, const T* logits, int64_t ldl, const int32_t* target,
                  const float* weight, T* losses, T* dlogits, int64_t ldd) {
  for (int64_t i = 0; i < n; ++i) {
    const T* li = logits + i * ldl;
    T* di = dlogits + i * ldd;
    if (weight[i] == 0) {
      losses[i] = 0;
      for (int64_t j = 0; j < v; ++j) di[j] = 0;
      continue;
    }
    T mx = li[0];
    for (int64_t j = 1; j < v; ++j) mx = std::max(mx, li[j]);
    T sum = 0;
    for (int64_t j = 0; j < v; ++j) sum += std::exp(li[j] - mx);
    T lse = mx + std::log(sum);
    T loss = lse - li[target[i]];
    T w = weight[i];
    for (int64_t j = 0; j < v; ++j) di[j] = w * std::exp(li[j] - lse);
    di[target[i]] -= w;
    losses[i] = loss;
  }
}

}  // namespace modamba::ops

#endif  // MODAMBA_CORE_OPS_LOSS_H_
