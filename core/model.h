// The language model (docs/DESIGN.md, "The model"): a stack of Blocks
// (core/block.h) between the embedding and the head,
//   x = embed(tokens) (+ the Transfusion patch input); x = block_l(x) for each
//   layer; logits = lm_head(RMSNorm(x)) (+ the Transfusion patch output),
// with Mixture-of-Mamba blocks (core/mamba_block.h) or, with architecture
// TRANSFORMER, Mixture-of-Transformers blocks (core/transformer_block.h); with
// every route switch off they are the dense baselines. The same definition serves training
// (ForwardBackward), evaluation (Evaluate) and recurrent generation (Step).
#ifndef MODAMBA_CORE_MODEL_H_
#define MODAMBA_CORE_MODEL_H_

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "core/block.h"
#include "core/layers.h"
#include "core/transfusion.h"
#include "proto/config.pb.h"

namespace modamba {

// One training batch on the host. Row n = b * seq_len + t.
struct Batch {
  int64_t batch = 0;
  int64_t seq_len = 0;
  std::vector<int32_t> tokens;           // input token ids, [N]
  std::vector<int32_t> modality;         // modality of each input token: routes it
  std::vector<uint8_t> doc_start;        // 1 on a document's first token
  std::vector<int32_t> targets;          // the token to predict at each row
  std::vector<int32_t> target_modality;  // modality of the target (for per-modality loss)
  std::vector<float> loss_mask;          // 1 where the target is predicted
  // Transfusion (config.patch_dim > 0): rows carrying a noised image patch.
  // The row's input is embed(token) + image_in(x_t) + time_embed(t), and its
  // output predicts eps through image_out.
  std::vector<int32_t> patch_rows;       // [P_n] distinct rows
  std::vector<float> patch_input;        // [P_n, patch_dim] x_t
  std::vector<float> patch_target;       // [P_n, patch_dim] eps
  std::vector<int32_t> patch_timestep;   // [P_n] t in [0, diffusion_steps]
  int64_t rows() const { return batch * seq_len; }
};

// Summed losses of one forward, per modality of the target token.
struct LossReport {
  std::vector<double> sum;     // [M] sum of token losses (nats)
  std::vector<int64_t> count;  // [M] predicted tokens
  double diffusion_sum = 0;    // sum of squared eps errors (Transfusion)
  int64_t diffusion_count = 0; // patch elements
  double diffusion_weight = 0; // lambda
  double diffusion_mse() const { return diffusion_count ? diffusion_sum / diffusion_count : 0; }
  // What the optimizer minimises: mean CE + lambda * MSE.
  double objective() const { return mean() + diffusion_weight * diffusion_mse(); }
  double total_sum() const;
  int64_t total_count() const;
  double mean() const { return total_count() ? total_sum() / total_count() : 0; }
  double mean(int m) const { return count[m] ? sum[m] / count[m] : 0; }
  void Add(const LossReport& other);
};

// Names of modality m in logs and metrics: text, image, speech, then m3...
std::string ModalityLabel(int m);

// What the step's mean losses divide by. A step spread over micro-batches or
// ranks passes the totals of the whole step, so the gradient is the same as
// one big batch's; 0 means this batch's own count.
struct LossDenominators {
  double tokens = 0;          // predicted tokens
  double patch_elements = 0;  // noised patch elements (patches * patch_dim)
};

// The recurrent state of a number of independent token streams, on the
// model's backend; all zero before a stream's first token.
struct RecurrentState {
  int streams = 0;
  std::vector<std::unique_ptr<Block::State>> layers;  // one per block
};

// One stream's token for one recurrent step.
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

class LanguageModel {
 public:
  // `config` must be resolved (core/config.h). Parameters live on `backend`
  // in `dtype` (F32 for training, F64 for gradient checks).
  static absl::StatusOr<std::unique_ptr<LanguageModel>> Create(const v1::ModelConfig& config,
                                                               Backend* backend, DType dtype,
                                                               uint64_t seed);

  // Checks ids, sizes and modalities; errors name the offending field and row.
  absl::Status Validate(const Batch& batch) const;
  // Forward only.
  absl::StatusOr<LossReport> Evaluate(const Batch& batch);
  // Forward + backward of the objective (mean CE over predicted tokens, plus
  // lambda * MSE over patch elements); grads accumulate.
  absl::StatusOr<LossReport> ForwardBackward(const Batch& batch,
                                             const LossDenominators& denominators = {});
  // FSDP gathers and releases buckets through these (null: all resident).
  void set_bucket_hooks(BucketHooks* hooks) { hooks_ = hooks; }
  // Whether a model with routed projections stores a batch's rows grouped by
  // modality (core/backend.h), so that each routed projection runs one GEMM
  // per modality on a row range. On by default; off keeps the batch's order
  // (tests compare the two).
  void set_group_rows(bool on) { group_rows_ = on; }
  // Whether the backward recomputes each layer's activations (one layer's
  // kept at a time) instead of keeping every layer's from the forward
  // (TrainConfig.recompute_activations). Off by default.
  void set_recompute_activations(bool on) { recompute_ = on; }
  // Logits of the last Evaluate, [N, V] on the device, row n for the batch's
  // token n (ForwardBackward's fused head does not keep them).
  const Tensor& logits() const { return logits_; }

  // Recurrent generation: the blocks' Step, which computes what the parallel
  // forward computes for the same tokens (routing, document resets and
  // Transfusion patch rows). A batch of streams shares each step's ops.
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

  const ParamSet& params() const { return params_; }
  ParamSet* mutable_params() { return &params_; }
  const v1::ModelConfig& config() const { return config_; }
  Backend* backend() const { return backend_; }

 private:
  // A batch on the device, as the stages below pass it on.
  struct DeviceBatch;

  LanguageModel(const v1::ModelConfig& config, Backend* backend, DType dtype);
  void Init(uint64_t seed);
  absl::StatusOr<LossReport> Run(const Batch& batch, bool backward,
                                 const LossDenominators& denominators);
  // The stages of Run.
  DeviceBatch PrepareBatch(const Batch& given, const LossDenominators& denominators) const;
  absl::Status TrunkForward(const DeviceBatch& b);
  // Layer `layer`'s activations: its own, or the shared set when recomputing.
  Block::Activations* LayerActs(int layer) const;
  LossReport HeadAndLoss(const DeviceBatch& b, bool backward, Tensor* dnormed);
  absl::Status Backward(const DeviceBatch& b, const LossDenominators& denominators,
                        Tensor* dnormed);
  absl::Status CheckStep(const std::vector<StepInput>& inputs, const RecurrentState& state) const;
  absl::Status Hook(absl::Status (BucketHooks::*fn)(int), int bucket) const;

  v1::ModelConfig config_;
  Backend* backend_;
  DType dtype_;
  BucketHooks* hooks_ = nullptr;
  bool group_rows_ = true;
  bool recompute_ = false;
  ParamSet params_;
  Param* embed_;
  std::vector<std::unique_ptr<Block>> blocks_;
  std::unique_ptr<RmsNorm> norm_f_;
  Param* lm_head_;  // == embed_ when tied
  std::unique_ptr<PatchLayer> patches_;  // Transfusion only

  // Saved by the forward for the backward.
  std::vector<Tensor> residual_;  // [n_layer + 1] x [N, D]: the stream into each block, and out
  Tensor normed_f_, rstd_f_;      // the final norm's output [N, D] and rstd [N]
  std::vector<std::unique_ptr<Block::Activations>> acts_;
  Tensor logits_;
  // Transfusion: the patches' hidden rows and eps - target of the last forward.
  Tensor patch_hidden_, patch_diff_;
};

}  // namespace modamba

#endif  // MODAMBA_CORE_MODEL_H_
