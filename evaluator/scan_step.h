// One token's step of the selective scan (core/ops/scan.h) for every channel
// of one stream: the recurrent decoder's hot loop (E x S exponentials per
// layer and token).
#ifndef MODAMBA_EVALUATOR_SCAN_STEP_H_
#define MODAMBA_EVALUATOR_SCAN_STEP_H_

namespace modamba::eval {

// delta = softplus(delta_raw + dt_bias); h = exp(delta A) h + delta B u;
// y = (C . h + D u) * silu(z), per channel e < e_dim, with h [e_dim, s_dim]
// updated in place and A = -exp(A_log) given as `a` [e_dim, s_dim].
void SelectiveScanStep(int e_dim, int s_dim, const float* delta_raw, const float* dt_bias,
                       const float* u, const float* b, const float* c, const float* z,
                       const float* a, const float* d, float* h, float* y);

}  // namespace modamba::eval

#endif  // MODAMBA_EVALUATOR_SCAN_STEP_H_
