// Recurrent generation: a trained MambaLM stepped one token at a time.
//
// The parallel forward (MambaLM::Evaluate) sees a whole sequence at once. A
// Mamba block is also a recurrence, so generation can carry, per layer and per
// stream, only
//   conv state: the last d_conv - 1 conv inputs of each channel  [d_conv - 1, E]
//   SSM state:  h of each channel                                 [E, S], fp32
// and advance in O(1) per token, whatever the length so far. RecurrentLM holds
// a host fp32 copy of the model's parameters (read by name once) and computes
// exactly what the parallel forward computes for the same tokens: routing by
// modality, document resets, and Transfusion patch rows (input embed(token) +
// image_in(x_t) + time_embed(t), output eps = image_out(final-normed hidden)).
//
// It runs on the CPU; a batch of independent streams shares each step's matrix
// products (one GEMM per weight group).
#ifndef MODAMBA_EVALUATOR_RECURRENT_H_
#define MODAMBA_EVALUATOR_RECURRENT_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/model.h"
#include "proto/config.pb.h"

namespace modamba::eval {

// The state of `streams` independent token streams; all zero before a
// stream's first token.
struct RecurrentState {
  int streams = 0;
  std::vector<std::vector<float>> conv;  // [layer][stream, d_conv - 1, E], oldest input first
  std::vector<std::vector<float>> ssm;   // [layer][stream, E, S]
};

// One stream's token for one step.
struct StepInput {
  int stream = 0;
  int32_t token = 0;
  int32_t modality = 0;
  // Begins a document: the stream's state restarts (as at a doc_start flag).
  bool doc_start = false;
  // Transfusion: the noised patch this position carries (patch_dim floats)
  // and its diffusion step; null for a discrete token.
  const float* patch = nullptr;
  int32_t timestep = 0;
};

class RecurrentLM {
 public:
  // Copies the parameters of `model` (F32 or F64, on any backend) to the host.
  static absl::StatusOr<std::unique_ptr<RecurrentLM>> FromModel(const MambaLM& model);

  const v1::ModelConfig& config() const { return config_; }
  int vocab_size() const { return config_.vocab_size(); }
  int patch_dim() const { return config_.patch_dim(); }

  RecurrentState NewState(int streams) const;

  // Advances the listed streams (distinct) by one token each; the other
  // streams keep their state. Row i of `logits` ([inputs, V], may be null)
  // gets the next-token logits of inputs[i]; row i of `eps` ([inputs,
  // patch_dim], may be null) gets the noise predicted for inputs[i]'s patch
  // (zero for rows without one).
  absl::Status Step(const std::vector<StepInput>& inputs, RecurrentState* state, float* logits,
                    float* eps) const;

 private:
  // A projection's weight [groups, out, in]: y = x W[g]^T.
  struct Projection {
    int groups = 1, out = 0, in = 0;
    std::vector<float> w;
  };
  struct Layer {
    std::vector<float> norm;     // [D]
    Projection in_proj, x_proj, dt_proj, out_proj;
    std::vector<float> conv_w;   // [E, K]
    std::vector<float> conv_b;   // [E]
    std::vector<float> dt_bias;  // [G_dt, E]
    std::vector<float> a;        // [E, S]: -exp(A_log)
    std::vector<float> d;        // [E]
  };

  explicit RecurrentLM(const v1::ModelConfig& config) : config_(config) {}
  // y[i] = x[i] W[group[i]]^T for `rows` rows (leading dimensions ldx, ldy).
  static void Project(const Projection& p, const std::vector<int32_t>& group, const float* x,
                      int ldx, float* y, int ldy);

  v1::ModelConfig config_;
  int d_model_ = 0, d_inner_ = 0, d_state_ = 0, d_conv_ = 0, dt_rank_ = 0;
  std::vector<float> embed_;    // [V, D]
  std::vector<float> lm_head_;  // [V, D]
  std::vector<float> norm_f_;   // [D]
  std::vector<Layer> layers_;
  // Transfusion only.
  Projection image_in_, time_embed_, image_out_;
};

}  // namespace modamba::eval

#endif  // MODAMBA_EVALUATOR_RECURRENT_H_
