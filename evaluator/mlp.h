// A small classifier trained by Modamba's own ops (the Backend interface),
// used to score generated digits: a multi-layer perceptron, optionally over a
// temporal convolution front-end.
//
//   a_0 = (x - input_mean) * input_scale
//   a_l = silu(conv_l(a_{l-1} W_l^T) + b_l)        conv layers, per frame
//   a_l = silu(s_l * (a_{l-1} W_l^T) + b_l)        hidden layers
//   logits = a_L W_out^T + b_out
//
// Every layer is a Gemm followed by the backend's causal depthwise conv op
// (with its bias, SiLU and backward). A conv layer sees each example as a
// sequence of `frames` frames: the Gemm mixes one frame's channels, the conv
// of `conv_taps` taps looks at the frames before it, so the same detector
// runs at every time (a time-delay network). The last conv layer's frames,
// concatenated, feed the first hidden layer. A hidden layer sees one-token
// sequences and one tap: exactly a per-channel scale, bias and SiLU. The
// output bias is a rank-one Gemm; cross-entropy and AdamW are the backend's.
// The last hidden layer's activations are the features Frechet distances
// are computed on.
#ifndef MODAMBA_EVALUATOR_MLP_H_
#define MODAMBA_EVALUATOR_MLP_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/backend.h"
#include "core/safetensors.h"
#include "core/tensor.h"

namespace modamba::eval {

struct MlpSpec {
  int input = 0;
  std::vector<int> hidden;  // at least one layer
  int classes = 0;
  // The temporal front-end (none when `conv` is empty): the input is
  // `frames` frames of input / frames features each, frame-major.
  int frames = 0;
  int conv_taps = 0;
  std::vector<int> conv;  // channels of each conv layer
};

// "input,hidden..,classes", then " conv frames,taps,channels.." with a
// front-end: what a saved network's metadata records of its shape.
std::string Describe(const MlpSpec& spec);

class Mlp {
 public:
  // He-uniform weights from `seed`; input normalisation identity. Host
  // inputs and outputs are floats whatever `dtype` (F64: gradient checks).
  static absl::StatusOr<std::unique_ptr<Mlp>> Create(const MlpSpec& spec, Backend* backend,
                                                     uint64_t seed,
                                                     DType dtype = DType::kF32);
  // `metadata` (optional) receives the file's metadata.
  static absl::StatusOr<std::unique_ptr<Mlp>> Load(
      const std::string& path, Backend* backend,
      std::map<std::string, std::string>* metadata = nullptr);
  // Writes the weights, the input normalisation and `metadata` (safetensors).
  absl::Status Save(const std::string& path,
                    const std::map<std::string, std::string>& metadata) const;
  // What Save writes, with every tensor name and the spec's metadata keys
  // behind `prefix`, so that one file can hold several networks.
  void Export(const std::string& prefix, std::vector<std::pair<std::string, Tensor>>* tensors,
              std::map<std::string, std::string>* metadata) const;
  // The network Export wrote behind `prefix` into `file` (read from `path`).
  static absl::StatusOr<std::unique_ptr<Mlp>> Import(const SafetensorsFile& file,
                                                     const std::string& prefix,
                                                     const std::string& path, Backend* backend);

  const MlpSpec& spec() const { return spec_; }
  int feature_dim() const { return spec_.hidden.back(); }
  // Per-input normalisation applied before the first layer.
  void SetInputNormalisation(std::vector<float> mean, std::vector<float> scale);

  // One AdamW step on the mean cross-entropy of n examples ([n, input] host
  // floats); returns that mean loss.
  double TrainStep(const float* x, const int32_t* labels, int n, const AdamWStep& step);
  // The mean cross-entropy and its gradients (overwritten), no step.
  double Gradients(const float* x, const int32_t* labels, int n);
  // Every parameter with its gradient (after Gradients), for gradient checks.
  std::vector<std::pair<Tensor*, const Tensor*>> ParametersAndGradients();
  // Logits [n, classes] and last-hidden features [n, feature_dim] (either
  // may be null) of n host examples, in chunks.
  void Forward(const float* x, int64_t n, float* logits, float* features);
  // Argmax class of each example.
  std::vector<int32_t> Predict(const float* x, int64_t n);

 private:
  struct Layer {
    bool conv = false;               // over the frames (else over whole examples)
    Tensor w, scale, bias;           // [out, in], [out, taps], [out]
    Tensor gw, gscale, gbias;        // gradients
    Tensor mw, vw, ms, vs, mb, vb;   // AdamW moments
  };
  // Activations of one forward pass, kept for the backward.
  struct Pass {
    int64_t n = 0;
    Tensor ones, doc_start, frame_start;  // [n, 1] ones, [n] U8 ones, [n * frames] U8 zeros
    std::vector<Tensor> pre, act;  // pre[l] = a_{l} W^T, act[0] = input
    Tensor logits;
  };

  Mlp(const MlpSpec& spec, Backend* backend, DType dtype);
  Layer MakeLayer(int in, int out, int taps, bool conv);
  int Frames() const { return spec_.conv.empty() ? 1 : spec_.frames; }
  // Layer l's input rows of a pass of n examples, and its sequences.
  int64_t Rows(size_t l, int64_t n) const { return layers_[l].conv ? n * Frames() : n; }
  SeqLayout Sequences(size_t l, const Pass& pass) const;
  void RunForward(const float* x, int64_t n, Pass* pass);

  MlpSpec spec_;
  Backend* be_;
  DType dtype_;
  // Conv layers, hidden layers, then the output layer (its scale unused).
  std::vector<Layer> layers_;
  std::vector<float> input_mean_, input_scale_;
  Pass train_pass_;  // reused while the batch size stays the same
};

}  // namespace modamba::eval

#endif  // MODAMBA_EVALUATOR_MLP_H_
