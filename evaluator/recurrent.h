// Recurrent generation: a trained MambaLM stepped one token at a time.
//
// The parallel forward (MambaLM::Evaluate) sees a whole sequence at once. A
// Mamba block is also a recurrence, so generation can carry, per layer and per
// stream, only
//   conv state: the last d_conv - 1 conv inputs of each channel  [d_conv - 1, E]
//   SSM state:  h of each channel                                 [E, S]
// and advance in O(1) per token, whatever the length so far. RecurrentLM runs
// on the model's own Backend (on the GPU for a GPU model), reading the
// parameters in place, and computes exactly what the parallel forward
// computes for the same tokens: routing by modality, document resets, and
// Transfusion patch rows (input embed(token) + image_in(x_t) + time_embed(t),
// output eps = image_out(final-normed hidden)). Its conv and scan are the
// Backend's ConvStep and ScanStep, which compute what ConvForward and
// ScanForward compute at the same position.
//
// A batch of independent streams shares each step's ops (one GEMM per
// weight group of each projection).
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

// The state of `streams` independent token streams on the model's backend,
// in the model's dtype; all zero before a stream's first token.
struct RecurrentState {
  int streams = 0;
  std::vector<Tensor> conv;  // [layer] [streams, d_conv - 1, E], oldest input first
  std::vector<Tensor> ssm;   // [layer] [streams, E, S]
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
  // Views of the parameters of `model` (F32 or F64): they share its storage,
  // so later in-place updates show and the views outlive the model, but not
  // its backend.
  static absl::StatusOr<std::unique_ptr<RecurrentLM>> FromModel(const MambaLM& model);

  const v1::ModelConfig& config() const { return config_; }
  int vocab_size() const { return config_.vocab_size(); }
  int patch_dim() const { return config_.patch_dim(); }

  RecurrentState NewState(int streams) const;
  // Overwrites `to` (from NewState, as many streams) with `from`.
  void CopyState(const RecurrentState& from, RecurrentState* to) const;

  // Advances the listed streams (distinct) by one token each; the other
  // streams keep their state. Row i of `logits` ([inputs, V] on the host,
  // may be null) gets the next-token logits of inputs[i]; row i of `eps`
  // ([inputs, patch_dim] on the host, may be null) gets the noise predicted
  // for inputs[i]'s patch (zero for rows without one).
  absl::Status Step(const std::vector<StepInput>& inputs, RecurrentState* state, float* logits,
                    float* eps) const;

 private:
  struct Layer {
    Tensor norm;                                  // [D]
    Tensor in_proj, x_proj, dt_proj, out_proj;    // [G, out, in]
    Tensor conv_w, conv_b, dt_bias, a_log, d;     // [E, K], [E], [G_dt, E], [E, S], [E]
  };

  RecurrentLM(const v1::ModelConfig& config, Backend* backend, DType dtype)
      : config_(config), backend_(backend), dtype_(dtype) {}

  v1::ModelConfig config_;
  Backend* backend_;
  DType dtype_;
  int d_model_ = 0, d_inner_ = 0, d_state_ = 0, d_conv_ = 0, dt_rank_ = 0;
  Tensor embed_;    // [V, D]
  Tensor lm_head_;  // [V, D]
  Tensor norm_f_;   // [D]
  std::vector<Layer> layers_;
  // Transfusion only: [1, out, in].
  Tensor image_in_, time_embed_, image_out_;
};

}  // namespace modamba::eval

#endif  // MODAMBA_EVALUATOR_RECURRENT_H_
