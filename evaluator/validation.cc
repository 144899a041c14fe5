#include "evaluator/validation.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "core/batch_source.h"
#include "core/data/reader.h"
#include "core/data/vocab.h"
#include "core/diffusion.h"
#include "core/model.h"
#include "core/rng.h"
#include "core/status_macros.h"

namespace modamba::eval {
namespace {

// Host copy of the last forward's logits.
std::vector<float> HostLogits(const LanguageModel& model) {
  const Tensor& dev = model.logits();
  Tensor host(dev.dtype(), dev.shape());
  model.backend()->Copy(dev.mat(), host.mat());
  std::vector<float> out(host.numel());
  for (int64_t i = 0; i < host.numel(); ++i) {
    out[i] = host.dtype() == DType::kF64 ? static_cast<float>(host.data<double>()[i])
                                         : host.data<float>()[i];
  }
  return out;
}

// Re-noises every image of `batch` (maximal runs of consecutive patch rows;
// their clean patches are packed.patches, in the same order) at step t, with
// noise named by the image's sequence and position, not by the batching.
void NoiseAt(const data::PackedBatch& packed, int32_t t, int total_steps, uint64_t seed,
             Batch* batch) {
  const int pd = packed.patch_dim;
  const size_t np = batch->patch_rows.size();
  for (size_t begin = 0; begin < np;) {
    size_t end = begin + 1;
    while (end < np && batch->patch_rows[end] == batch->patch_rows[end - 1] + 1) ++end;
    const int64_t row = batch->patch_rows[begin] / batch->seq_len;
    const int64_t position = batch->patch_rows[begin] % batch->seq_len;
    Rng rng = Rng::ForName(
        seed, absl::StrCat("val_noise/", packed.sequence_index[row], "/", position, "/", t));
    NoisePatches(&packed.patches[begin * pd], end - begin, pd, t, total_steps, &rng,
                 &batch->patch_input[begin * pd], &batch->patch_target[begin * pd]);
    std::fill(batch->patch_timestep.begin() + begin, batch->patch_timestep.begin() + end, t);
    begin = end;
  }
}

}  // namespace

std::map<std::string, double> ValidationMetrics::Flat() const {
  std::map<std::string, double> out;
  out["val/loss"] = loss;
  for (size_t m = 0; m < targets.size(); ++m) {
    if (targets[m] == 0) continue;
    const std::string name = ModalityLabel(static_cast<int>(m));
    out[absl::StrCat("val/", name, "_ce")] = ce[m];
    out[absl::StrCat("val/", name, "_accuracy")] = accuracy[m];
  }
  if (text_bytes > 0) out["val/text_bpb"] = text_bits_per_byte;
  if (diffusion_elements > 0) {
    out["val/diffusion_mse"] = diffusion_mse;
    for (const auto& [t, mse] : diffusion_mse_at) out[absl::StrCat("val/diffusion_mse_t", t)] = mse;
  }
  return out;
}

namespace {

// Sums what the metrics need over batches.
class Accumulator {
 public:
  explicit Accumulator(int modalities)
      : ce_sum_(modalities, 0.0), correct_(modalities, 0), targets_(modalities, 0) {}

  // Adds the CE and accuracy of `batch`'s targets from the model's last
  // forward (its logits) and the batch's diffusion error from `report`.
  void Add(const LanguageModel& model, const Batch& batch, const LossReport& report) {
    const int v = model.config().vocab_size();
    const std::vector<float> logits = HostLogits(model);
    for (int64_t i = 0; i < batch.rows(); ++i) {
      if (!batch.loss_mask[i]) continue;
      const float* row = &logits[i * v];
      const float top = *std::max_element(row, row + v);
      double sum = 0;
      for (int j = 0; j < v; ++j) sum += std::exp(static_cast<double>(row[j]) - top);
      const double nats = top + std::log(sum) - row[batch.targets[i]];
      const int tm = batch.target_modality[i];
      ce_sum_[tm] += nats;
      targets_[tm]++;
      if (row[batch.targets[i]] == top) correct_[tm]++;
      if (batch.targets[i] < data::kNumByteTokens) {
        byte_nats_ += nats;
        bytes_++;
      }
    }
    diffusion_sum_ += report.diffusion_sum;
    diffusion_elements_ += report.diffusion_count;
  }
  void AddAtStep(int32_t t, const LossReport& report) {
    at_step_[t].first += report.diffusion_sum;
    at_step_[t].second += report.diffusion_count;
  }

  ValidationMetrics Finish(int64_t sequences) const {
    ValidationMetrics out;
    const int m = static_cast<int>(targets_.size());
    out.sequences = sequences;
    out.targets = targets_;
    out.ce.assign(m, 0.0);
    out.accuracy.assign(m, 0.0);
    double all = 0;
    int64_t count = 0;
    for (int i = 0; i < m; ++i) {
      all += ce_sum_[i];
      count += targets_[i];
      if (targets_[i] == 0) continue;
      out.ce[i] = ce_sum_[i] / targets_[i];
      out.accuracy[i] = static_cast<double>(correct_[i]) / targets_[i];
    }
    out.loss = count > 0 ? all / count : 0;
    out.text_bytes = bytes_;
    if (bytes_ > 0) out.text_bits_per_byte = byte_nats_ / bytes_ / std::log(2.0);
    out.diffusion_elements = diffusion_elements_;
    if (diffusion_elements_ > 0) {
      out.diffusion_mse = diffusion_sum_ / diffusion_elements_;
      for (const auto& [t, sum_count] : at_step_) {
        out.diffusion_mse_at[t] = sum_count.first / sum_count.second;
      }
    }
    return out;
  }

 private:
  std::vector<double> ce_sum_;
  std::vector<int64_t> correct_, targets_;
  double byte_nats_ = 0, diffusion_sum_ = 0;
  int64_t bytes_ = 0, diffusion_elements_ = 0;
  std::map<int32_t, std::pair<double, int64_t>> at_step_;
};

}  // namespace

absl::StatusOr<ValidationMetrics> EvaluateValidation(LanguageModel* model,
                                                     const std::string& dataset_dir,
                                                     const ValidationOptions& options) {
  ASSIGN_OR_RETURN(auto reader, data::ShardReader::Open(dataset_dir, "val", 0, 1));
  const v1::ModelConfig& config = model->config();
  const int m = config.n_modalities(), v = config.vocab_size();
  const data::DatasetManifest& manifest = reader->manifest();
  if (manifest.vocab.size() > v || manifest.num_modalities > m ||
      manifest.patch_dim != config.patch_dim()) {
    return absl::InvalidArgumentError(absl::StrCat(
        dataset_dir, ": the dataset (vocab ", manifest.vocab.size(), ", ", manifest.num_modalities,
        " modalities, patch_dim ", manifest.patch_dim, ") does not fit the model (vocab ", v, ", ",
        m, " modalities, patch_dim ", config.patch_dim(), ")"));
  }
  const int64_t total = options.max_sequences > 0
                            ? std::min(options.max_sequences, reader->num_sequences())
                            : reader->num_sequences();
  Accumulator acc(m);
  for (int64_t done = 0; done < total;) {
    const int n = static_cast<int>(std::min<int64_t>(options.batch_size, total - done));
    data::PackedBatch packed;
    RETURN_IF_ERROR(reader->Next(n, &packed));
    Batch batch = ToModelBatch(packed, config, options.seed, packed.sequence_index);
    ASSIGN_OR_RETURN(LossReport report, model->Evaluate(batch));
    acc.Add(*model, batch, report);
    if (!batch.patch_rows.empty()) {
      for (int32_t t : options.diffusion_steps) {
        NoiseAt(packed, t, config.diffusion_steps(), options.seed, &batch);
        ASSIGN_OR_RETURN(LossReport fixed, model->Evaluate(batch));
        acc.AddAtStep(t, fixed);
      }
    }
    done += n;
  }
  return acc.Finish(total);
}

absl::StatusOr<ValidationMetrics> EvaluateBatches(LanguageModel* model,
                                                  const std::vector<Batch>& batches) {
  Accumulator acc(model->config().n_modalities());
  int64_t sequences = 0;
  for (const Batch& batch : batches) {
    ASSIGN_OR_RETURN(LossReport report, model->Evaluate(batch));
    acc.Add(*model, batch, report);
    sequences += batch.batch;
  }
  return acc.Finish(sequences);
}

}  // namespace modamba::eval
