// A small multi-layer perceptron classifier trained by Modamba's own ops (the
// Backend interface), used to score generated digits.
//
//   a_0 = (x - input_mean) * input_scale
//   a_l = silu(s_l * (a_{l-1} W_l^T) + b_l)        hidden layers
//   logits = a_L W_out^T + b_out
//
// Each hidden layer is a Gemm followed by the backend's causal conv op with
// one tap over one-token sequences, which is exactly a per-channel scale,
// bias and SiLU (with its backward); the output bias is a rank-one Gemm.
// Cross-entropy and AdamW are the backend's. The last hidden layer's
// activations are the features Frechet distances are computed on.
#ifndef MODAMBA_EVALUATOR_MLP_H_
#define MODAMBA_EVALUATOR_MLP_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/backend.h"
#include "core/tensor.h"

namespace modamba::eval {

struct MlpSpec {
  int input = 0;
  std::vector<int> hidden;  // at least one layer
  int classes = 0;
};

class Mlp {
 public:
  // He-uniform weights from `seed`; input normalisation identity.
  static absl::StatusOr<std::unique_ptr<Mlp>> Create(const MlpSpec& spec, Backend* backend,
                                                     uint64_t seed);
  // `metadata` (optional) receives the file's metadata.
  static absl::StatusOr<std::unique_ptr<Mlp>> Load(
      const std::string& path, Backend* backend,
      std::map<std::string, std::string>* metadata = nullptr);
  // Writes the weights, the input normalisation and `metadata` (safetensors).
  absl::Status Save(const std::string& path,
                    const std::map<std::string, std::string>& metadata) const;

  const MlpSpec& spec() const { return spec_; }
  int feature_dim() const { return spec_.hidden.back(); }
  // Per-input normalisation applied before the first layer.
  void SetInputNormalisation(std::vector<float> mean, std::vector<float> scale);

  // One AdamW step on the mean cross-entropy of n examples ([n, input] host
  // floats); returns that mean loss.
  double TrainStep(const float* x, const int32_t* labels, int n, const AdamWStep& step);
  // Logits [n, classes] and last-hidden features [n, feature_dim] (either
  // may be null) of n host examples, in chunks.
  void Forward(const float* x, int64_t n, float* logits, float* features);
  // Argmax class of each example.
  std::vector<int32_t> Predict(const float* x, int64_t n);

 private:
  struct Layer {
    Tensor w, scale, bias;           // [out, in], [out, 1], [out]
    Tensor gw, gscale, gbias;        // gradients
    Tensor mw, vw, ms, vs, mb, vb;   // AdamW moments
  };
  // Activations of one forward pass, kept for the backward.
  struct Pass {
    int64_t n = 0;
    Tensor ones, doc_start;  // [n, 1] F32 ones, [n] U8 ones
    std::vector<Tensor> pre, act;  // pre[l] = a_{l} W^T, act[0] = input
    Tensor logits;
  };

  Mlp(const MlpSpec& spec, Backend* backend);
  Layer MakeLayer(int in, int out);
  void RunForward(const float* x, int64_t n, Pass* pass);

  MlpSpec spec_;
  Backend* be_;
  std::vector<Layer> layers_;  // hidden layers, then the output layer (its scale unused)
  std::vector<float> input_mean_, input_scale_;
  Pass train_pass_;  // reused while the batch size stays the same
};

}  // namespace modamba::eval

#endif  // MODAMBA_EVALUATOR_MLP_H_
