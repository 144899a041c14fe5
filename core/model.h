// The Mixture-of-Mamba language model (DESIGN.md section 1):
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
  int64_t rows() const { return batch * seq_len; }
};

// Summed losses of one forward, per modality of the target token.
struct LossReport {
  std::vector<double> sum;     // [M] sum of token losses (nats)
  std::vector<int64_t> count;  // [M] predicted tokens
  double total_sum() const;
  int64_t total_count() const;
  double mean() const { return total_count() ? total_sum() / total_count() : 0; }
  double mean(int m) const { return count[m] ? sum[m] / count[m] : 0; }
  void Add(const LossReport& other);
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
  // Forward + backward. The loss is the mean over predicted tokens times
  // `loss_scale`; gradients accumulate into the params' grads.
  absl::StatusOr<LossReport> ForwardBackward(const Batch& batch, double loss_scale = 1.0);
  // Logits of the last forward pass, [N, V] on the device.
  const Tensor& logits() const { return logits_; }

  const ParamSet& params() const { return params_; }
  ParamSet* mutable_params() { return &params_; }
  const v1::ModelConfig& config() const { return config_; }
  Backend* backend() const { return backend_; }

 private:
  MambaLM(const v1::ModelConfig& config, Backend* backend, DType dtype);
  void Init(uint64_t seed);
  absl::StatusOr<LossReport> Run(const Batch& batch, bool backward, double loss_scale);

  v1::ModelConfig config_;
  Backend* backend_;
  DType dtype_;
  ParamSet params_;
  Param* embed_;
  std::vector<RmsNorm> norms_;
  std::vector<MambaBlock> blocks_;
  std::unique_ptr<RmsNorm> norm_f_;
  Param* lm_head_;  // == embed_ when tied

  // Saved by the forward for the backward.
  std::vector<Tensor> residual_;  // [n_layer + 1] x [N, D]
  std::vector<Tensor> normed_;    // [n_layer + 1] x [N, D] (last: final norm)
  std::vector<Tensor> rstd_;      // [n_layer + 1] x [N]
  std::vector<MambaBlock::Activations> acts_;
  Tensor logits_;
};

}  // namespace modamba

#endif  // MODAMBA_CORE_MODEL_H_
