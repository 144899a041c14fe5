#include "evaluator/recurrent_test_util.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/config.h"
#include "core/rng.h"
#include "gtest/gtest.h"

namespace modamba::eval::testing {

v1::ModelConfig SettingConfig(const std::string& setting, bool routed, bool transformer) {
  v1::ModelConfig c;
  c.set_d_model(32);
  c.set_n_layer(3);
  c.set_vocab_size(1031);
  c.set_n_modalities(setting == "trimodal" ? 3 : 2);
  if (transformer) {
    c.set_architecture(v1::ModelConfig::TRANSFORMER);
    c.set_n_head(2);
    c.set_route_qkv(routed);
    c.set_route_attn_out(routed);
    c.set_route_ffn_in(routed);
    c.set_route_ffn_out(routed);
    c.set_route_norms(routed);
  } else {
    c.set_route_in(routed);
    c.set_route_x(routed);
    c.set_route_dt(routed);
    c.set_route_out(routed);
  }
  if (setting == "transfusion") c.set_patch_dim(16);
  EXPECT_TRUE(ResolveModelConfig(&c, "test").ok());
  return c;
}

Batch RandomBatch(const v1::ModelConfig& c, int seq_len, uint64_t seed) {
  Rng rng(seed);
  Batch b;
  b.batch = 2;
  b.seq_len = seq_len;
  int modality = 0;
  for (int64_t i = 0; i < b.rows(); ++i) {
    if (rng.Below(5) == 0) modality = static_cast<int>(rng.Below(c.n_modalities()));
    b.tokens.push_back(static_cast<int32_t>(rng.Below(c.vocab_size())));
    b.modality.push_back(modality);
    b.doc_start.push_back(rng.Below(11) == 0);
    b.targets.push_back(static_cast<int32_t>(rng.Below(c.vocab_size())));
    b.target_modality.push_back(0);
    b.loss_mask.push_back(1.f);
  }
  if (c.patch_dim() > 0) {
    for (int64_t i = 0; i < b.rows(); ++i) {
      if (b.modality[i] != 1) continue;
      b.patch_rows.push_back(static_cast<int32_t>(i));
      b.patch_timestep.push_back(static_cast<int32_t>(rng.Below(c.diffusion_steps() + 1)));
      for (int j = 0; j < c.patch_dim(); ++j) {
        b.patch_input.push_back(static_cast<float>(rng.Normal(0, 1)));
        b.patch_target.push_back(0.f);
      }
    }
  }
  return b;
}

RecurrentOutputs RunRecurrent(const RecurrentLM& lm, const Batch& b, bool together) {
  const int v = lm.vocab_size(), pd = lm.patch_dim();
  std::vector<int> patch_index(b.rows(), -1);
  for (size_t j = 0; j < b.patch_rows.size(); ++j) patch_index[b.patch_rows[j]] = j;
  RecurrentOutputs out;
  out.logits.resize(b.rows() * v);
  out.eps.resize(b.patch_rows.size() * pd);
  RecurrentState state = lm.NewState(b.batch);
  auto input = [&](int64_t row) {
    StepInput in;
    in.stream = static_cast<int>(row / b.seq_len);
    in.token = b.tokens[row];
    in.modality = b.modality[row];
    in.doc_start = b.doc_start[row] != 0;
    if (patch_index[row] >= 0) {
      in.patch = &b.patch_input[patch_index[row] * pd];
      in.timestep = b.patch_timestep[patch_index[row]];
    }
    return in;
  };
  auto collect = [&](const std::vector<int64_t>& rows, const std::vector<float>& logits,
                     const std::vector<float>& eps) {
    for (size_t i = 0; i < rows.size(); ++i) {
      std::copy_n(&logits[i * v], v, &out.logits[rows[i] * v]);
      if (patch_index[rows[i]] >= 0) {
        std::copy_n(&eps[i * pd], pd, &out.eps[patch_index[rows[i]] * pd]);
      }
    }
  };
  std::vector<std::vector<int64_t>> steps;
  if (together) {
    for (int64_t t = 0; t < b.seq_len; ++t) {
      steps.push_back({});
      for (int64_t s = 0; s < b.batch; ++s) steps.back().push_back(s * b.seq_len + t);
    }
  } else {
    for (int64_t row = 0; row < b.rows(); ++row) steps.push_back({row});
  }
  for (const auto& rows : steps) {
    std::vector<StepInput> inputs;
    for (int64_t row : rows) inputs.push_back(input(row));
    std::vector<float> logits(rows.size() * v), eps(rows.size() * std::max(pd, 1));
    absl::Status st = lm.Step(inputs, &state, logits.data(), pd > 0 ? eps.data() : nullptr);
    EXPECT_TRUE(st.ok()) << st;
    collect(rows, logits, eps);
  }
  return out;
}

std::vector<float> ParallelLogits(LanguageModel* model, const Batch& batch) {
  absl::StatusOr<LossReport> report = model->Evaluate(batch);
  EXPECT_TRUE(report.ok()) << report.status();
  const Tensor& dev = model->logits();
  std::vector<float> host(dev.numel());
  model->backend()->Copy(
      dev.mat(), Mat{host.data(), DType::kF32, Device::kCpu, dev.dim(0), dev.dim(1), dev.dim(1)});
  return host;
}

double MaxRelError(const std::vector<float>& got, const std::vector<float>& want) {
  EXPECT_EQ(got.size(), want.size());
  double err = 0, scale = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    if (!std::isfinite(got[i])) return std::numeric_limits<double>::infinity();
    err = std::max(err, std::fabs(static_cast<double>(got[i]) - want[i]));
    scale = std::max(scale, std::fabs(static_cast<double>(want[i])));
  }
  return err / scale;
}

double EpsRelError(LanguageModel* model, const Batch& batch, const std::vector<float>& eps) {
  EXPECT_FALSE(batch.patch_rows.empty());
  Batch with_target = batch;
  with_target.patch_target = eps;
  absl::StatusOr<LossReport> report = model->Evaluate(with_target);
  EXPECT_TRUE(report.ok()) << report.status();
  if (!report.ok()) return std::numeric_limits<double>::infinity();
  double norm = 0;
  for (float x : eps) norm += static_cast<double>(x) * x;
  EXPECT_GT(norm, 0);
  const double err = std::sqrt(report->diffusion_sum / norm);
  return std::isnan(err) ? std::numeric_limits<double>::infinity() : err;
}

}  // namespace modamba::eval::testing
