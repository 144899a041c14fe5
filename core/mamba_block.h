// The Mixture-of-Mamba block (docs/DESIGN.md, "The model"): a Mamba-1 block whose four
// projections (in, x, dt, out) may each be routed by token modality, while the
// causal conv and the selective scan are shared.
//
//   xz    = in_proj[m](h)               [N, 2E]   x = xz[:, :E], z = xz[:, E:]
//   u     = silu(conv1d(x) + conv_bias) [N, E]
//   dBC   = x_proj[m](u)                [N, R + 2S]  dt | B | C
//   delta_raw = dt_proj[m](dt)          [N, E]    (+ dt_bias[m] inside the scan)
//   y     = scan(u, delta, A, B, C, D) * silu(z)
//   out   = out_proj[m](y)              [N, D]
#ifndef MODAMBA_CORE_MAMBA_BLOCK_H_
#define MODAMBA_CORE_MAMBA_BLOCK_H_

#include <memory>
#include <string>

#include "core/layers.h"
#include "proto/config.pb.h"

namespace modamba {

class MambaBlock {
 public:
  // What the forward keeps for the backward (all [N, *] on the device).
  // y, read only by out_proj, is in the backend's MatmulInputDType (BF16 on
  // a GPU with bf16 products); so are the block's input h and the
  // backward's dxz and ddelta. delta_raw is not kept: the backward recomputes it from dbc (one
  // thin GEMM) rather than hold [N, E] per layer.
  struct Activations {
    Tensor xz, u, dbc, y;
    // What the scan's forward keeps for its backward (ScanInputs::saved).
    std::unique_ptr<Tensor> scan_saved = std::make_unique<Tensor>();
  };

  MambaBlock(ParamSet* params, const std::string& name, const v1::ModelConfig& config);
  void Init(uint64_t seed);
  // out = block(h). Allocates `acts` on first use.
  void Forward(const BatchContext& ctx, Mat h, Mat out, Activations* acts) const;
  // dh is overwritten with d(loss)/d(h).
  void Backward(const BatchContext& ctx, Mat h, const Activations& acts, Mat dout, Mat dh) const;

 private:
  ScanInputs MakeScanInputs(const Activations& acts, Mat delta_raw) const;

  ParamSet* params_;
  const int d_model_, d_inner_, d_state_, d_conv_, dt_rank_, n_layer_;
  const v1::ModelConfig config_;
  Linear in_proj_, x_proj_, dt_proj_, out_proj_;
  Param* conv_w_;
  Param* conv_b_;
  Param* dt_bias_;  // [G_dt, E]
  Param* a_log_;
  Param* d_;
};

}  // namespace modamba

#endif  // MODAMBA_CORE_MAMBA_BLOCK_H_
