// The Mixture-of-Mamba block (docs/DESIGN.md, "The model"): a Mamba-1 block whose four
// projections (in, x, dt, out) may each be routed by token modality, while the
// causal conv and the selective scan are shared. As a layer of the stack it
// maps the residual stream x to x + mixer(RMSNorm(x)):
//
//   h     = norm(x)                     [N, D]
//   xz    = in_proj[m](h)               [N, 2E]   xi = xz[:, :E], z = xz[:, E:]
//   u     = silu(conv1d(xi) + conv_bias) [N, E]
//   dBC   = x_proj[m](u)                [N, R + 2S]  dt | B | C
//   delta_raw = dt_proj[m](dt)          [N, E]    (+ dt_bias[m] inside the scan)
//   y     = scan(u, delta, A, B, C, D) * silu(z)
//   out   = x + out_proj[m](y)          [N, D]
//
// Stepped, the block carries per stream the last d_conv - 1 conv inputs of
// each channel ([d_conv - 1, E]) and the scan's h ([E, S]), and advances in
// O(1) per token with the Backend's ConvStep and ScanStep.
#ifndef MODAMBA_CORE_MAMBA_BLOCK_H_
#define MODAMBA_CORE_MAMBA_BLOCK_H_

#include <memory>
#include <string>

#include "core/block.h"
#include "core/layers.h"
#include "proto/config.pb.h"

namespace modamba {

class MambaBlock : public Block {
 public:
  // `name` is the layer's ("layers.3"): its norm is NAME.norm, the mixer's
  // parameters NAME.mixer.*.
  MambaBlock(ParamSet* params, const std::string& name, const v1::ModelConfig& config);

  void Init(uint64_t seed) override;
  std::unique_ptr<Block::Activations> NewActivations() const override;
  void Forward(const BatchContext& ctx, Mat x, Mat out, Block::Activations* acts) const override;
  void Backward(const BatchContext& ctx, Mat x, const Block::Activations& acts,
                Mat dstream) const override;
  std::unique_ptr<Block::State> NewState(int streams) const override;
  void CopyState(const Block::State& from, Block::State* to) const override;
  void Step(const StepContext& ctx, Mat x, Block::State* state) const override;

 private:
  struct Activations;
  struct State;
  ScanInputs MakeScanInputs(Mat u, Mat dbc, Mat xz, Mat delta_raw, Tensor* saved) const;

  ParamSet* params_;
  const int d_model_, d_inner_, d_state_, d_conv_, dt_rank_, n_layer_;
  const v1::ModelConfig config_;
  RmsNorm norm_;
  Linear in_proj_, x_proj_, dt_proj_, out_proj_;
  Param* conv_w_;
  Param* conv_b_;
  Param* dt_bias_;  // [G_dt, E]
  Param* a_log_;
  Param* d_;
};

}  // namespace modamba

#endif  // MODAMBA_CORE_MAMBA_BLOCK_H_
