// The Mixture-of-Mamba language model (docs/DESIGN.md, "The model"):
//   x = embed(tokens); for each layer: x = x + MambaBlock(RMSNorm(x), modality)
//   logits = lm_head(RMSNorm(x))
// With every route switch off it is the dense Mamba baseline.
#ifndef MODAMBA_CORE_MODEL_H_
#define MODAMBA_CORE_MODEL_H_

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "core/layers.h"
#include "core/mamba_block.h"
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

// What the step's mean losses divide by. A step spread over micro-batches or
// ranks passes the totals of the whole step, so the gradient is the same as
// one big batch's; 0 means this batch's own count.
struct LossDenominators {
  double tokens = 0;          // predicted tokens
  double patch_elements = 0;  // noised patch elements (patches * patch_dim)
};

class MambaLM {
 public:
  // `config` must be resolved (core/config.h). Parameters live on `backend`
  // in `dtype` (F32 for training, F64 for gradient checks).
  static absl::StatusOr<std::unique_ptr<MambaLM>> Create(const v1::ModelConfig& config,
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
  // Logits of the last Evaluate, [N, V] on the device, row n for the batch's
  // token n (ForwardBackward's fused head does not keep them).
  const Tensor& logits() const { return logits_; }

  const ParamSet& params() const { return params_; }
  ParamSet* mutable_params() { return &params_; }
  const v1::ModelConfig& config() const { return config_; }
  Backend* backend() const { return backend_; }

 private:
  MambaLM(const v1::ModelConfig& config, Backend* backend, DType dtype);
  void Init(uint64_t seed);
  absl::StatusOr<LossReport> Run(const Batch& given, bool backward,
                                 const LossDenominators& denominators);

  v1::ModelConfig config_;
  Backend* backend_;
  DType dtype_;
  BucketHooks* hooks_ = nullptr;
  bool group_rows_ = true;
  ParamSet params_;
  Param* embed_;
  std::vector<RmsNorm> norms_;
  std::vector<MambaBlock> blocks_;
  std::unique_ptr<RmsNorm> norm_f_;
  Param* lm_head_;  // == embed_ when tied
  // Transfusion only.
  std::unique_ptr<Linear> image_in_, time_embed_, image_out_;

  // Saved by the forward for the backward.
  std::vector<Tensor> residual_;  // [n_layer + 1] x [N, D]
  std::vector<Tensor> normed_;    // [n_layer + 1] x [N, D] (last: final norm)
  std::vector<Tensor> rstd_;      // [n_layer + 1] x [N]
  std::vector<MambaBlock::Activations> acts_;
  Tensor logits_;
};

}  // namespace modamba

#endif  // MODAMBA_CORE_MODEL_H_
