// Scalar activations shared by the CPU references (templated so gradient
// checks run in double).
#ifndef MODAMBA_CORE_OPS_ACTIVATIONS_H_
#define MODAMBA_CORE_OPS_ACTIVATIONS_H_

#include <cmath>

namespace modamba::ops {

template <typename T>
inline T Sigmoid(T x) { return T(1) / (T(1) + std::exp(-x)); }

template <typename T>
inline T Silu(T x) { return x * Sigmoid(x); }

// d silu(x) / dx
template <typename T>
inline T SiluGrad(T x) {
  T s = Sigmoid(x);
  return s * (T(1) + x * (T(1) - s));
}

// log(1 + e^x), without overflow; its derivative is Sigmoid(x).
template <typename T>
inline T Softplus(T x) { return x > T(20) ? x : std::log1p(std::exp(x)); }

}  // namespace modamba::ops

#endif  // MODAMBA_CORE_OPS_ACTIVATIONS_H_
