#include "evaluator/scan_step.h"

#include <cmath>

#include "core/ops/activations.h"

namespace modamba::eval {

void SelectiveScanStep(int e_dim, int s_dim, const float* delta_raw, const float* dt_bias,
                       const float* u, const float* b, const float* c, const float* z,
                       const float* a, const float* d, float* h, float* y) {
  for (int e = 0; e < e_dim; ++e) {
    const float delta = ops::Softplus(delta_raw[e] + dt_bias[e]);
    const float un = u[e];
    float* he = h + static_cast<long>(e) * s_dim;
    const float* ae = a + static_cast<long>(e) * s_dim;
    float acc = 0;
    for (int s = 0; s < s_dim; ++s) {
      he[s] = std::exp(delta * ae[s]) * he[s] + delta * b[s] * un;
      acc += c[s] * he[s];
    }
    y[e] = (acc + d[e] * un) * ops::Silu(z[e]);
  }
}

}  // namespace modamba::eval
