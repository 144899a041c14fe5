// RMSNorm reference: y = x * rstd * w, rstd = 1 / sqrt(mean(x^2) + eps).
#ifndef MODAMBA_CORE_OPS_NORM_H_
#define MODAMBA_CORE_OPS_NORM_H_

#include <cmath>
#include <cstdint>

namespace modamba::ops {

template <typename T>
void RmsNormForward(int64_t n, int64_t d, const T* x, int64_t ldx, const T* w, double eps,
                    T* y, int64_t ldy, T* rstd) {
  for (int64_t i = 0; i < n; ++i) {
    const T* xi = x + i * ldx;
    T ss = 0;
    for (int64_t j = 0; j < d; ++j) ss += xi[j] * xi[j];
    T r = T(1) / std::sqrt(ss / T(d) + T(eps));
    rstd[i] = r;
    for (int64_t j = 0; j < d; ++j) y[i * ldy + j] = xi[j] * r * w[j];
  }
}

// dx += dL/dx; dw += dL/dw.
template <typename T>
void RmsNormBackward(int64_t n, int64_t d, const T* x, int64_t ldx, const T* w, const T* rstd,
                     const T* dy, int64_t lddy, T* dx, int64_t lddx, T* dw) {
  for (int64_t i = 0; i < n; ++i) {
    const T* xi = x + i * ldx;
    const T* dyi = dy + i * lddy;
    const T r = rstd[i];
    T dot = 0;  // sum_j w_j dy_j x_j
    for (int64_t j = 0; j < d; ++j) {
      dot += w[j] * dyi[j] * xi[j];
      dw[j] += dyi[j] * xi[j] * r;
    }
    T k = r * r * r * dot / T(d);
    for (int64_t j = 0; j < d; ++j) dx[i * lddx + j] += r * w[j] * dyi[j] - k * xi[j];
  }
}

}  // namespace modamba::ops

#endif  // MODAMBA_CORE_OPS_NORM_H_
