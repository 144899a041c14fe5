// The whole language model on the GPU against the CPU backend: the loss and
// every parameter's gradient at a small config, a short training run's loss
// curve, and bitwise-identical reruns (Mamba and Transformer). Skips without a GPU.
#include <cmath>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include "core/backend.h"
#include "core/config.h"
#include "core/model.h"
#include "core/optimizer.h"
#include "core/rng.h"
#include "glog/logging.h"
#include "gtest/gtest.h"
#include "kernels/cuda_backend.h"
#include "kernels/test_util.h"

namespace modamba {
namespace {

v1::ModelConfig Config(int modalities, bool routed, int patch_dim = 0) {
  v1::ModelConfig c;
  c.set_d_model(32);
  c.set_n_layer(2);
  c.set_vocab_size(61);
  c.set_n_modalities(modalities);
  c.set_route_in(routed);
  c.set_route_x(routed);
  c.set_route_dt(routed);
  c.set_route_out(routed);
  c.set_patch_dim(patch_dim);
  // Time steps of order one, so the scan's gradients are not tiny.
  c.set_dt_min(0.05f);
  c.set_dt_max(0.5f);
  CHECK(ResolveModelConfig(&c, "test").ok());
  return c;
}

// Mixture-of-Transformers: d_model 64 in 2 heads of 32, every weight routed.
v1::ModelConfig TransformerConfig() {
  v1::ModelConfig c;
  c.set_architecture(v1::ModelConfig::TRANSFORMER);
  c.set_d_model(64);
  c.set_n_layer(2);
  c.set_n_head(2);
  c.set_vocab_size(61);
  c.set_n_modalities(3);
  c.set_route_qkv(true);
  c.set_route_attn_out(true);
  c.set_route_ffn_in(true);
  c.set_route_ffn_out(true);
  c.set_route_norms(true);
  CHECK(ResolveModelConfig(&c, "test").ok());
  return c;
}

// Two sequences of seq_len tokens (45: not a multiple of the scan's tiles)
// with modality spans drawn from `present` and documents starting
// mid-sequence.
Batch MakeBatch(const v1::ModelConfig& c, uint64_t seed, const std::vector<int>& present,
                int64_t seq_len = 45) {
  Rng rng(seed);
  Batch b;
  b.batch = 2;
  b.seq_len = seq_len;
  int m = present[0];
  for (int64_t i = 0; i < b.rows(); ++i) {
    if (i % 6 == 0) m = present[rng.Below(present.size())];
    b.tokens.push_back(static_cast<int32_t>(rng.Below(c.vocab_size())));
    b.modality.push_back(m);
    b.doc_start.push_back(i % b.seq_len == 17 || i % b.seq_len == 31);
    b.targets.push_back(static_cast<int32_t>(rng.Below(c.vocab_size())));
    b.target_modality.push_back(m);
    b.loss_mask.push_back(i % 7 == 3 ? 0.f : 1.f);
  }
  if (c.patch_dim() > 0) {
    for (int32_t r : {3, 4, 5, 6, 50, 51}) {
      b.patch_rows.push_back(r);
      b.patch_timestep.push_back(static_cast<int32_t>(rng.Below(c.diffusion_steps() + 1)));
      for (int j = 0; j < c.patch_dim(); ++j) {
        b.patch_input.push_back(static_cast<float>(rng.Normal(0, 1)));
        b.patch_target.push_back(static_cast<float>(rng.Normal(0, 1)));
      }
      b.loss_mask[r] = 0;
    }
  }
  return b;
}

std::unique_ptr<LanguageModel> MakeModel(const v1::ModelConfig& c, Backend* be) {
  auto model = LanguageModel::Create(c, be, DType::kF32, /*seed=*/7);
  CHECK(model.ok()) << model.status();
  return std::move(model).value();
}

std::unique_ptr<Backend> Gpu(MatmulPrecision precision) {
  CudaBackendOptions options;
  options.matmul = precision;
  auto be = NewCudaBackend(options);
  CHECK(be.ok()) << be.status();
  return std::move(be).value();
}

v1::OptimizerConfig Optimizer() {
  v1::OptimizerConfig o;
  o.set_lr(3e-3);
  o.set_min_lr_ratio(0.1f);
  o.set_beta1(0.9f);
  o.set_beta2(0.95f);
  o.set_eps(1e-8f);
  o.set_weight_decay(0.1f);
  o.set_grad_clip(1.0f);
  return o;
}

class ModelGpuTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device";
  }
};

// Compares loss and all gradients of one forward + backward.
void CompareStep(const v1::ModelConfig& c, const Batch& batch, MatmulPrecision precision,
                 double tol_loss, double tol_grad, const std::string& tag) {
  auto cpu = NewCpuBackend();
  auto gpu = Gpu(precision);
  auto mc = MakeModel(c, cpu.get());
  auto mg = MakeModel(c, gpu.get());
  auto rc = mc->ForwardBackward(batch);
  auto rg = mg->ForwardBackward(batch);
  ASSERT_TRUE(rc.ok()) << rc.status();
  ASSERT_TRUE(rg.ok()) << rg.status();
  const double loss_err = std::abs(rg->objective() - rc->objective()) / rc->objective();
  std::cout << tag << ": objective cpu " << rc->objective() << " gpu " << rg->objective()
            << " (relative error " << loss_err << ")\n";
  EXPECT_TRUE(std::isfinite(rg->objective()));
  EXPECT_LT(loss_err, tol_loss) << tag;
  const auto& pc = mc->params().all();
  const auto& pg = mg->params().all();
  ASSERT_EQ(pc.size(), pg.size());
  double worst = 0;
  std::string worst_name;
  for (size_t i = 0; i < pc.size(); ++i) {
    Tensor got = testing::ToHost(gpu.get(), pg[i]->grad);
    const double err = testing::RelError(got.mat(), pc[i]->grad.mat());
    EXPECT_LT(err, tol_grad) << tag << ": gradient of " << pc[i]->name;
    if (!(err <= worst)) {
      worst = err;
      worst_name = pc[i]->name;
    }
  }
  std::cout << tag << ": " << pc.size() << " gradients, worst relative error " << worst << " ("
            << worst_name << ")\n";
}

TEST_F(ModelGpuTest, LossAndGradientsMatchCpu) {
  const v1::ModelConfig mom = Config(3, true), dense = Config(1, false), tf = Config(3, true, 3);
  // Modality 1 has no tokens in the MoM batch: its projections get no gradient.
  const Batch mom_batch = MakeBatch(mom, 11, {0, 2});
  const Batch dense_batch = MakeBatch(dense, 12, {0});
  const Batch tf_batch = MakeBatch(tf, 13, {0, 1, 2});
  CompareStep(mom, mom_batch, MatmulPrecision::kFp32, 1e-5, 1e-4, "MoM fp32");
  CompareStep(dense, dense_batch, MatmulPrecision::kFp32, 1e-5, 1e-4, "dense fp32");
  CompareStep(tf, tf_batch, MatmulPrecision::kFp32, 1e-5, 1e-4, "Transfusion fp32");
  CompareStep(mom, mom_batch, MatmulPrecision::kBf16, 1e-2, 5e-2, "MoM bf16");
  CompareStep(dense, dense_batch, MatmulPrecision::kBf16, 1e-2, 5e-2, "dense bf16");
}

// Runs `steps` optimizer steps over four cycling batches; returns the losses.
std::vector<double> Train(Backend* be, const v1::ModelConfig& c, int steps) {
  auto model = MakeModel(c, be);
  AdamWOptimizer opt(Optimizer(), model->mutable_params());
  std::vector<Batch> batches;
  for (int i = 0; i < 4; ++i) batches.push_back(MakeBatch(c, 100 + i, {0, 1, 2}));
  std::vector<double> losses;
  for (int s = 1; s <= steps; ++s) {
    auto r = model->ForwardBackward(batches[s % batches.size()]);
    CHECK(r.ok()) << r.status();
    losses.push_back(r->objective());
    opt.Step(s, steps);
  }
  return losses;
}

TEST_F(ModelGpuTest, TrainingFollowsCpuLossCurve) {
  const v1::ModelConfig c = Config(3, true);
  constexpr int kSteps = 200;
  auto cpu = NewCpuBackend();
  const std::vector<double> want = Train(cpu.get(), c, kSteps);
  for (MatmulPrecision precision : {MatmulPrecision::kFp32, MatmulPrecision::kBf16}) {
    const bool fp32 = precision == MatmulPrecision::kFp32;
    auto gpu = Gpu(precision);
    const std::vector<double> got = Train(gpu.get(), c, kSteps);
    double worst = 0;
    for (int s = 0; s < kSteps; ++s) {
      ASSERT_TRUE(std::isfinite(got[s])) << "step " << s;
      worst = std::max(worst, std::abs(got[s] - want[s]) / want[s]);
    }
    std::cout << (fp32 ? "fp32" : "bf16") << ": loss " << want.front() << " -> " << want.back()
              << " on the CPU, " << got.front() << " -> " << got.back()
              << " on the GPU; worst relative gap " << worst << "\n";
    // Training amplifies rounding differences as the loss falls (here to
    // ~0.05), so even fp32 drifts by a few 1e-4 over 200 steps.
    EXPECT_LT(worst, fp32 ? 5e-3 : 3e-2);
  }
}

// Same seed, same batches: the same bits, losses and parameters alike.
void ExpectBitwiseIdenticalRuns(const v1::ModelConfig& c, int64_t seq_len,
                                const std::string& tag) {
  auto gpu = Gpu(MatmulPrecision::kBf16);
  std::vector<std::vector<double>> losses;
  std::vector<std::vector<Tensor>> params;
  for (int run = 0; run < 2; ++run) {
    auto model = MakeModel(c, gpu.get());
    AdamWOptimizer opt(Optimizer(), model->mutable_params());
    losses.emplace_back();
    for (int s = 1; s <= 5; ++s) {
      auto r = model->ForwardBackward(MakeBatch(c, 200 + s, {0, 1, 2}, seq_len));
      ASSERT_TRUE(r.ok()) << r.status();
      losses.back().push_back(r->objective());
      opt.Step(s, 5);
    }
    params.emplace_back();
    for (const auto& p : model->params().all()) {
      params.back().push_back(testing::ToHost(gpu.get(), p->value));
    }
  }
  for (size_t s = 0; s < losses[0].size(); ++s) {
    EXPECT_EQ(std::memcmp(&losses[0][s], &losses[1][s], sizeof(double)), 0)
        << tag << ": step " << s;
  }
  for (size_t i = 0; i < params[0].size(); ++i) {
    EXPECT_EQ(std::memcmp(params[0][i].raw(), params[1][i].raw(), params[0][i].nbytes()), 0)
        << tag << ": parameter " << i;
  }
}

TEST_F(ModelGpuTest, RunsAreBitwiseIdentical) {
  ExpectBitwiseIdenticalRuns(Config(3, true), 45, "MoM");
  // 150 positions: three attention tiles, so several key tiles meet in each dQ.
  ExpectBitwiseIdenticalRuns(TransformerConfig(), 150, "MoT");
}

}  // namespace
}  // namespace modamba
