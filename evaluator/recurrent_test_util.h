// Shared by the recurrent decoder's tests (recurrent_test on the CPU,
// recurrent_gpu_test on the GPU): small models of the three settings,
// random batches, and the decoder run over a batch next to the parallel
// forward's results.
#ifndef MODAMBA_EVALUATOR_RECURRENT_TEST_UTIL_H_
#define MODAMBA_EVALUATOR_RECURRENT_TEST_UTIL_H_

#include <cstdint>
#include <string>
#include <vector>

#include "core/model.h"
#include "evaluator/recurrent.h"
#include "proto/config.pb.h"

namespace modamba::eval::testing {

// The three settings' shapes at a small width: chameleon (text + image
// tokens), transfusion (text + continuous patches), trimodal (+ speech);
// Mamba blocks (routed: MoM) or Transformer blocks (routed: MoT).
v1::ModelConfig SettingConfig(const std::string& setting, bool routed = true,
                              bool transformer = false);

// Two sequences of random tokens with modality runs, documents starting
// inside them and (Transfusion) runs of noised patch rows.
Batch RandomBatch(const v1::ModelConfig& c, int seq_len, uint64_t seed);

struct RecurrentOutputs {
  std::vector<float> logits;  // [N, V]
  std::vector<float> eps;     // [patch rows, P], in patch_rows order
};

// Runs the batch through the recurrence. Both sequences step together when
// `together`, else one after the other (each a subset step).
RecurrentOutputs RunRecurrent(const RecurrentLM& lm, const Batch& b, bool together);

// The parallel forward's logits of `batch`, [N, V] on the host.
std::vector<float> ParallelLogits(LanguageModel* model, const Batch& batch);

// max |got - want| / max |want|; infinity when got holds a NaN.
double MaxRelError(const std::vector<float>& got, const std::vector<float>& want);

// ||eps - parallel eps|| / ||eps|| for eps in batch.patch_rows order: with
// eps as the target, the diffusion loss is the squared distance between the
// two predictions.
double EpsRelError(LanguageModel* model, const Batch& batch, const std::vector<float>& eps);

}  // namespace modamba::eval::testing

#endif  // MODAMBA_EVALUATOR_RECURRENT_TEST_UTIL_H_
