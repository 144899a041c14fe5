// Recurrent generation: a trained model stepped one token at a time.
//
// The parallel forward (LanguageModel::Evaluate) sees a whole sequence at once;
// every block is also a recurrence (core/block.h), so generation carries per
// layer and per stream only the block's state (a Mamba block's conv window
// and SSM state) and advances in O(1) per token, whatever the length so far.
// RecurrentLM runs the model's own definition (LanguageModel::Step) on the model's
// Backend, reading the parameters in place, and computes exactly what the
// parallel forward computes for the same tokens: routing by modality,
// document resets, and Transfusion patch rows.
//
// A batch of independent streams shares each step's ops (one GEMM per
// weight group of each projection).
#ifndef MODAMBA_EVALUATOR_RECURRENT_H_
#define MODAMBA_EVALUATOR_RECURRENT_H_

#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/model.h"
#include "proto/config.pb.h"

namespace modamba::eval {

using ::modamba::RecurrentState;
using ::modamba::StepInput;

class RecurrentLM {
 public:
  // `model` (F32 or F64) must outlive the RecurrentLM; later in-place
  // updates of its parameters show.
  static absl::StatusOr<std::unique_ptr<RecurrentLM>> FromModel(const LanguageModel& model);

  const v1::ModelConfig& config() const { return model_.config(); }
  int vocab_size() const { return config().vocab_size(); }
  int patch_dim() const { return config().patch_dim(); }

  RecurrentState NewState(int streams) const { return model_.NewState(streams); }
  // Overwrites `to` (from NewState, as many streams) with `from`.
  void CopyState(const RecurrentState& from, RecurrentState* to) const {
    model_.CopyState(from, to);
  }
  // LanguageModel::Step: advances the listed streams (distinct) by one token each.
  absl::Status Step(const std::vector<StepInput>& inputs, RecurrentState* state, float* logits,
                    float* eps) const {
    return model_.Step(inputs, state, logits, eps);
  }

 private:
  explicit RecurrentLM(const LanguageModel& model) : model_(model) {}
  const LanguageModel& model_;
};

}  // namespace modamba::eval

#endif  // MODAMBA_EVALUATOR_RECURRENT_H_
