// The Transfusion setting's way in and out of the trunk (docs/DESIGN.md, "The
// model"): a noised image patch x_t enters on top of its row's embedding as
// image_in(x_t) + time_embed(features(t)), and the final-normed hidden state
// of its row leaves through image_out as the predicted noise eps. The same
// layer serves training batches and recurrent steps.
#ifndef MODAMBA_CORE_TRANSFUSION_H_
#define MODAMBA_CORE_TRANSFUSION_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "core/layers.h"

namespace modamba {

class PatchLayer {
 public:
  // Sinusoidal features of the diffusion step.
  static constexpr int kTimeFeatures = 64;

  // The rows of one batch or step that carry a patch, on the device.
  struct Patches {
    int64_t count = 0;
    Tensor rows;           // I32 [count]: each patch's row
    Tensor x;              // [count, patch_dim] x_t
    Tensor time_features;  // [count, kTimeFeatures]
    std::unique_ptr<Routing> routing;  // one group: the image linears are shared
    BatchContext ctx;
  };

  PatchLayer(ParamSet* params, int patch_dim, int d_model);
  void Init(uint64_t seed);

  // rows[i] carries inputs[i * patch_dim ...] at diffusion step timesteps[i].
  Patches Upload(const std::vector<int32_t>& rows, const std::vector<float>& inputs,
                 const std::vector<int32_t>& timesteps) const;
  // x[rows] += image_in(x_t) + time_embed(t).
  void AddInput(const Patches& p, Mat x) const;
  // The gradients of the input linears from dx = d(loss)/d(x).
  void InputBackward(const Patches& p, Mat dx) const;
  // eps = image_out(hidden[rows]) ([count, patch_dim]); `gathered` keeps
  // hidden[rows] for OutputBackward.
  void Output(const Patches& p, Mat hidden, Tensor* gathered, Tensor* eps) const;
  // dhidden[rows] += d(loss)/d(hidden[rows]) from deps; image_out's gradient.
  void OutputBackward(const Patches& p, const Tensor& gathered, Mat deps, Mat dhidden) const;

 private:
  ParamSet* params_;
  const int patch_dim_, d_model_;
  Linear image_in_, time_embed_, image_out_;
};

}  // namespace modamba

#endif  // MODAMBA_CORE_TRANSFUSION_H_
