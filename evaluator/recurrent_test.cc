#include "evaluator/recurrent.h"

#include <cmath>
#include <cstdio>

#include "core/config.h"
#include "core/rng.h"
#include "gtest/gtest.h"

namespace modamba::eval {
namespace {

// The three settings' shapes at a small width: chameleon (text + image
// tokens), transfusion (text + continuous patches), trimodal (+ speech).
v1::ModelConfig SettingConfig(const std::string& setting, bool routed = true) {
  v1::ModelConfig c;
  c.set_d_model(32);
  c.set_n_layer(3);
  c.set_vocab_size(1031);
  c.set_n_modalities(setting == "trimodal" ? 3 : 2);
  c.set_route_in(routed);
  c.set_route_x(routed);
  c.set_route_dt(routed);
  c.set_route_out(routed);
  if (setting == "transfusion") c.set_patch_dim(16);
  EXPECT_TRUE(ResolveModelConfig(&c, "test").ok());
  return c;
}

// Two sequences of random tokens with modality runs, documents starting
// inside them and (Transfusion) runs of noised patch rows.
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

struct Recurrent {
  std::vector<float> logits;  // [N, V]
  std::vector<float> eps;     // [patch rows, P], in patch_rows order
};

// Runs the batch through the recurrence. Both sequences step together when
// `together`, else one after the other (each a subset step).
Recurrent RunRecurrent(const RecurrentLM& lm, const Batch& b, bool together) {
  const int v = lm.vocab_size(), pd = lm.patch_dim();
  std::vector<int> patch_index(b.rows(), -1);
  for (size_t j = 0; j < b.patch_rows.size(); ++j) patch_index[b.patch_rows[j]] = j;
  Recurrent out;
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

double MaxAbs(const std::vector<float>& v) {
  double m = 0;
  for (float x : v) m = std::max(m, std::fabs(static_cast<double>(x)));
  return m;
}

class RecurrentMatchesParallel : public ::testing::TestWithParam<std::string> {};

TEST_P(RecurrentMatchesParallel, LogitsAndEps) {
  for (bool routed : {true, false}) {
    SCOPED_TRACE(routed ? "routed" : "dense");
    auto be = NewCpuBackend();
    const v1::ModelConfig c = SettingConfig(GetParam(), routed);
    auto model = MambaLM::Create(c, be.get(), DType::kF32, 11);
    ASSERT_TRUE(model.ok()) << model.status();
    Batch batch = RandomBatch(c, 37, 5);
    ASSERT_TRUE((*model)->Evaluate(batch).ok());
    const Tensor& dev = (*model)->logits();
    std::vector<float> parallel(dev.numel());
    be->Copy(dev.mat(), Mat{parallel.data(), DType::kF32, Device::kCpu, dev.dim(0), dev.dim(1),
                            dev.dim(1)});

    auto lm = RecurrentLM::FromModel(**model);
    ASSERT_TRUE(lm.ok()) << lm.status();
    for (bool together : {true, false}) {
      Recurrent rec = RunRecurrent(**lm, batch, together);
      double err = 0;
      for (size_t i = 0; i < parallel.size(); ++i) {
        err = std::max(err, std::fabs(static_cast<double>(parallel[i]) - rec.logits[i]));
      }
      const double rel = err / MaxAbs(parallel);
      EXPECT_LT(rel, 3e-6) << "max |logit difference| " << err;
      std::printf("%s %s %s: logits max rel error %.3g\n", GetParam().c_str(),
                  routed ? "routed" : "dense", together ? "together" : "one by one", rel);
      if (c.patch_dim() > 0) {
        // With the recurrent eps as the target, the diffusion loss is the
        // squared distance between the two predictions.
        ASSERT_FALSE(batch.patch_rows.empty());
        Batch with_target = batch;
        with_target.patch_target = rec.eps;
        auto report = (*model)->Evaluate(with_target);
        ASSERT_TRUE(report.ok());
        double norm = 0;
        for (float x : rec.eps) norm += static_cast<double>(x) * x;
        EXPECT_GT(norm, 0);
        EXPECT_LT(std::sqrt(report->diffusion_sum / norm), 3e-6);
        std::printf("  eps relative error %.3g\n", std::sqrt(report->diffusion_sum / norm));
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Settings, RecurrentMatchesParallel,
                         ::testing::Values("chameleon", "transfusion", "trimodal"));

TEST(Recurrent, RejectsBadInputs) {
  auto be = NewCpuBackend();
  auto model = MambaLM::Create(SettingConfig("chameleon"), be.get(), DType::kF32, 1);
  ASSERT_TRUE(model.ok());
  auto lm = RecurrentLM::FromModel(**model);
  ASSERT_TRUE(lm.ok());
  RecurrentState state = (*lm)->NewState(2);
  std::vector<float> logits(2 * 1031);
  StepInput a;
  a.modality = 2;  // chameleon has two modalities
  EXPECT_FALSE((*lm)->Step({a}, &state, logits.data(), nullptr).ok());
  StepInput b, c;
  EXPECT_FALSE((*lm)->Step({b, c}, &state, logits.data(), nullptr).ok());  // same stream twice
  StepInput d;
  d.token = 1031;
  EXPECT_FALSE((*lm)->Step({d}, &state, logits.data(), nullptr).ok());
  float patch[16] = {};
  StepInput e;
  e.patch = patch;
  EXPECT_FALSE((*lm)->Step({e}, &state, logits.data(), nullptr).ok());  // no patch_dim
}

}  // namespace
}  // namespace modamba::eval
