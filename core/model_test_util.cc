#include "core/model_test_util.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "core/optimizer.h"
#include "core/rng.h"
#include "gtest/gtest.h"

namespace modamba::testing {

std::unique_ptr<LanguageModel> MakeModel(const v1::ModelConfig& c, Backend* be, DType dtype,
                                         uint64_t seed) {
  auto model = LanguageModel::Create(c, be, dtype, seed);
  EXPECT_TRUE(model.ok()) << model.status();
  return std::move(model).value();
}

void AddPatches(const v1::ModelConfig& c, Batch* b, uint64_t seed) {
  Rng rng(seed);
  for (int32_t r : {2, 3, 4, 5, 11, 12, 13}) {
    b->patch_rows.push_back(r);
    b->patch_timestep.push_back(static_cast<int32_t>(rng.Below(c.diffusion_steps() + 1)));
    for (int j = 0; j < c.patch_dim(); ++j) {
      b->patch_input.push_back(static_cast<float>(rng.Normal(0, 1)));
      b->patch_target.push_back(static_cast<float>(rng.Normal(0, 1)));
    }
    b->loss_mask[r] = 0;
  }
}

void ExpectGradientsMatchFiniteDifferences(LanguageModel* model, const Batch& batch,
                                           const std::string& name) {
  Rng noise(99);
  for (const auto& p : model->params().all()) {
    for (int64_t i = 0; i < p->value.numel(); ++i) p->value.data<double>()[i] += noise.Normal(0, 0.2);
  }
  ASSERT_TRUE(model->ForwardBackward(batch).ok());
  auto loss = [&] { return model->Evaluate(batch)->objective(); };
  double worst = 0;
  for (const auto& p : model->params().all()) {
    double err2 = 0, ref2 = 0;
    // A spread of elements of every parameter keeps the test fast.
    const int64_t stride = std::max<int64_t>(1, p->value.numel() / 24);
    for (int64_t i = 0; i < p->value.numel(); i += stride) {
      double& x = p->value.data<double>()[i];
      const double saved = x, h = 1e-4;
      auto at = [&](double offset) {
        x = saved + offset;
        return loss();
      };
      // Fourth-order central difference: truncation O(h^4), rounding O(eps / h).
      const double numeric = (-at(2 * h) + 8 * at(h) - 8 * at(-h) + at(-2 * h)) / (12 * h);
      x = saved;
      const double diff = p->grad.data<double>()[i] - numeric;
      err2 += diff * diff;
      ref2 += numeric * numeric;
    }
    ASSERT_GT(ref2, 0) << p->name;
    const double rel = std::sqrt(err2 / ref2);
    EXPECT_LT(rel, 1e-6) << p->name;
    worst = std::max(worst, rel);
  }
  std::printf("worst relative gradient error (%s): %.3g\n", name.c_str(), worst);
}

void ExpectLearnsBatch(LanguageModel* model, const Batch& batch, const std::string& what) {
  v1::OptimizerConfig opt;
  opt.set_lr(1e-2);
  opt.set_min_lr_ratio(1);
  opt.set_beta1(0.9);
  opt.set_beta2(0.95);
  opt.set_eps(1e-8);
  opt.set_weight_decay(0);
  opt.set_grad_clip(1);
  AdamWOptimizer optimizer(opt, model->mutable_params());
  double first = 0, last = 0;
  for (int step = 1; step <= 15; ++step) {
    auto loss = model->ForwardBackward(batch);
    ASSERT_TRUE(loss.ok());
    if (step == 1) first = loss->mean();
    last = loss->mean();
    optimizer.Step(step, 15);
  }
  EXPECT_LT(last, first * 0.9) << what;
  EXPECT_TRUE(std::isfinite(last));
}

}  // namespace modamba::testing
