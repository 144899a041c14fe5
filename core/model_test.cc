#include "core/model.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "core/config.h"
#include "core/model_test_util.h"
#include "gtest/gtest.h"

namespace modamba {
namespace {

using testing::AddPatches;
using testing::MakeModel;

v1::ModelConfig SmallConfig(int modalities, bool routed) {
  v1::ModelConfig c;
  c.set_d_model(8);
  c.set_n_layer(2);
  c.set_vocab_size(23);
  c.set_n_modalities(modalities);
  c.set_d_state(4);
  c.set_dt_rank(2);
  c.set_route_in(routed);
  c.set_route_x(routed);
  c.set_route_dt(routed);
  c.set_route_out(routed);
  // Time steps of order one, so the scan's gradients are not tiny.
  c.set_dt_min(0.3f);
  c.set_dt_max(1.0f);
  EXPECT_TRUE(ResolveModelConfig(&c, "test").ok());
  return c;
}

// Two sequences with modality spans and a document boundary inside each.
Batch RandomBatch(const v1::ModelConfig& c, uint64_t seed, int only_modality = -1) {
  Rng rng(seed);
  Batch b;
  b.batch = 2;
  b.seq_len = 9;
  const int64_t n = b.rows();
  for (int64_t i = 0; i < n; ++i) {
    int m = only_modality >= 0 ? only_modality : static_cast<int>((i / 4) % c.n_modalities());
    b.tokens.push_back(static_cast<int32_t>(rng.Below(c.vocab_size())));
    b.modality.push_back(m);
    b.doc_start.push_back(i % b.seq_len == 5);
    b.targets.push_back(static_cast<int32_t>(rng.Below(c.vocab_size())));
    b.target_modality.push_back(m);
    b.loss_mask.push_back(i % 7 == 3 ? 0.f : 1.f);
  }
  return b;
}

TEST(ModelGradient, MatchesFiniteDifferencesInDouble) {
  for (int variant = 0; variant < 3; ++variant) {
    const bool routed = variant > 0, transfusion = variant == 2;
    const char* name = transfusion ? "transfusion" : routed ? "routed" : "shared";
    SCOPED_TRACE(name);
    auto be = NewCpuBackend();
    v1::ModelConfig c = SmallConfig(3, routed);
    if (transfusion) c.set_patch_dim(3);
    auto model = MakeModel(c, be.get(), DType::kF64);
    Batch batch = RandomBatch(c, 3);
    if (transfusion) AddPatches(c, &batch, 4);
    testing::ExpectGradientsMatchFiniteDifferences(model.get(), batch, name);
  }
}

TEST(ModelRouting, OneModalityMoMEqualsDenseMamba) {
  auto be = NewCpuBackend();
  auto mom = MakeModel(SmallConfig(1, true), be.get(), DType::kF32);
  auto dense = MakeModel(SmallConfig(1, false), be.get(), DType::kF32);
  Batch batch = RandomBatch(mom->config(), 5);
  auto a = mom->ForwardBackward(batch);
  auto b = dense->ForwardBackward(batch);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->total_sum(), b->total_sum());
  const auto& pa = mom->params().all();
  const auto& pb = dense->params().all();
  ASSERT_EQ(pa.size(), pb.size());
  for (size_t i = 0; i < pa.size(); ++i) {
    ASSERT_EQ(pa[i]->name, pb[i]->name);
    ASSERT_EQ(pa[i]->grad.nbytes(), pb[i]->grad.nbytes());
    EXPECT_EQ(0, std::memcmp(pa[i]->grad.raw(), pb[i]->grad.raw(), pa[i]->grad.nbytes()))
        << pa[i]->name;
  }
}

// Recomputing each layer's activations in the backward changes no bit of the
// loss or of any gradient, for Mamba blocks (routed, with Transfusion
// patches) and Transformer blocks, over two steps (the second reuses the
// shared activations).
TEST(ModelRecompute, GradientsAreBitIdentical) {
  for (bool transformer : {false, true}) {
    SCOPED_TRACE(transformer ? "MoT" : "MoM");
    auto be = NewCpuBackend();
    v1::ModelConfig c = SmallConfig(3, true);
    if (transformer) {
      c = v1::ModelConfig();
      c.set_architecture(v1::ModelConfig::TRANSFORMER);
      c.set_d_model(8);
      c.set_n_layer(3);
      c.set_n_head(2);
      c.set_vocab_size(23);
      c.set_n_modalities(3);
      c.set_route_qkv(true);
      c.set_route_norms(true);
    } else {
      c.set_n_layer(3);
    }
    c.set_patch_dim(3);
    ASSERT_TRUE(ResolveModelConfig(&c, "test").ok());
    auto kept = MakeModel(c, be.get(), DType::kF32);
    auto recomputed = MakeModel(c, be.get(), DType::kF32);
    recomputed->set_recompute_activations(true);
    for (uint64_t seed : {31, 32}) {
      Batch batch = RandomBatch(c, seed);
      AddPatches(c, &batch, seed + 100);
      auto a = kept->ForwardBackward(batch);
      auto b = recomputed->ForwardBackward(batch);
      ASSERT_TRUE(a.ok() && b.ok());
      EXPECT_EQ(a->total_sum(), b->total_sum());
      EXPECT_EQ(a->diffusion_sum, b->diffusion_sum);
      const auto& pa = kept->params().all();
      const auto& pb = recomputed->params().all();
      for (size_t i = 0; i < pa.size(); ++i) {
        ASSERT_EQ(pa[i]->grad.nbytes(), pb[i]->grad.nbytes());
        EXPECT_EQ(0, std::memcmp(pa[i]->grad.raw(), pb[i]->grad.raw(), pa[i]->grad.nbytes()))
            << pa[i]->name;
      }
    }
  }
}

// Largest |a - b| over the largest |a|, for two F64 tensors on the host.
double RelativeDifference(const Tensor& a, const Tensor& b) {
  double diff = 0, scale = 0;
  for (int64_t i = 0; i < a.numel(); ++i) {
    diff = std::max(diff, std::fabs(a.data<double>()[i] - b.data<double>()[i]));
    scale = std::max(scale, std::fabs(a.data<double>()[i]));
  }
  return scale > 0 ? diff / scale : diff;
}

// Storing rows grouped by modality (the default for routed models) changes
// only the order of some sums: losses, logits and every gradient match the
// model that keeps the batch's order to fp64 rounding.
TEST(ModelRouting, GroupedRowsChangeNothing) {
  struct Setting {
    const char* name;
    int route_mask;  // in, x, dt, out
    bool transfusion;
  };
  for (const Setting& s : {Setting{"MoM", 15, false}, Setting{"MoM transfusion", 15, true},
                           Setting{"in and out routed", 9, false},
                           Setting{"dt routed, transfusion", 4, true}}) {
    SCOPED_TRACE(s.name);
    auto be = NewCpuBackend();
    v1::ModelConfig c = SmallConfig(3, false);
    c.set_route_in(s.route_mask & 1);
    c.set_route_x(s.route_mask & 2);
    c.set_route_dt(s.route_mask & 4);
    c.set_route_out(s.route_mask & 8);
    if (s.transfusion) c.set_patch_dim(3);
    auto grouped = MakeModel(c, be.get(), DType::kF64);
    auto in_order = MakeModel(c, be.get(), DType::kF64);
    in_order->set_group_rows(false);
    Batch batch = RandomBatch(c, 21);
    if (s.transfusion) AddPatches(c, &batch, 22);
    auto a = grouped->ForwardBackward(batch);
    auto b = in_order->ForwardBackward(batch);
    ASSERT_TRUE(a.ok() && b.ok());
    for (int m = 0; m < 3; ++m) {
      EXPECT_EQ(a->count[m], b->count[m]);
      EXPECT_NEAR(a->sum[m], b->sum[m], 1e-12 * std::fabs(b->sum[m])) << "modality " << m;
    }
    EXPECT_NEAR(a->diffusion_sum, b->diffusion_sum, 1e-12 * b->diffusion_sum);
    EXPECT_EQ(a->diffusion_count, b->diffusion_count);
    const auto& pa = grouped->params().all();
    const auto& pb = in_order->params().all();
    for (size_t i = 0; i < pa.size(); ++i) {
      EXPECT_LT(RelativeDifference(pb[i]->grad, pa[i]->grad), 1e-12) << pa[i]->name;
    }
    // Per-token outputs come back in the batch's order.
    ASSERT_TRUE(grouped->Evaluate(batch).ok());
    ASSERT_TRUE(in_order->Evaluate(batch).ok());
    EXPECT_LT(RelativeDifference(in_order->logits(), grouped->logits()), 1e-12);
  }
}

TEST(ModelRouting, OtherModalitiesGetExactlyZeroGradient) {
  auto be = NewCpuBackend();
  v1::ModelConfig c = SmallConfig(3, true);
  for (int m = 0; m < 3; ++m) {
    auto model = MakeModel(c, be.get(), DType::kF32);
    ASSERT_TRUE(model->ForwardBackward(RandomBatch(c, 11, m)).ok());
    for (const auto& p : model->params().all()) {
      const bool routed = p->value.shape().size() == 3 || p->name.find("dt_proj.bias") != std::string::npos;
      if (!routed) continue;
      const int64_t per_group = p->grad.numel() / 3;
      for (int g = 0; g < 3; ++g) {
        double sq = 0;
        for (int64_t i = 0; i < per_group; ++i) {
          double v = p->grad.data<float>()[g * per_group + i];
          sq += v * v;
        }
        if (g == m) EXPECT_GT(sq, 0) << p->name << " group " << g;
        else EXPECT_EQ(sq, 0) << p->name << " group " << g;
      }
    }
  }
}

TEST(ModelRouting, AllSixteenRouteCombinationsTrain) {
  auto be = NewCpuBackend();
  for (int mask = 0; mask < 16; ++mask) {
    v1::ModelConfig c = SmallConfig(3, false);
    c.set_route_in(mask & 1);
    c.set_route_x(mask & 2);
    c.set_route_dt(mask & 4);
    c.set_route_out(mask & 8);
    auto model = MakeModel(c, be.get(), DType::kF32);
    testing::ExpectLearnsBatch(model.get(), RandomBatch(c, 17), "route mask " + std::to_string(mask));
  }
}

TEST(ModelErrors, BadBatchesAreClearErrors) {
  auto be = NewCpuBackend();
  v1::ModelConfig c = SmallConfig(3, true);
  auto model = MakeModel(c, be.get(), DType::kF32);
  {
    Batch b = RandomBatch(c, 1);
    b.modality[4] = 3;
    auto r = model->ForwardBackward(b);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.status().message().find("modality[4] = 3"), std::string::npos) << r.status();
  }
  {
    Batch b = RandomBatch(c, 1);
    b.tokens[2] = 23;
    auto r = model->Evaluate(b);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.status().message().find("tokens[2]"), std::string::npos) << r.status();
  }
  {
    Batch b = RandomBatch(c, 1);
    b.tokens.pop_back();
    auto r = model->Evaluate(b);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.status().message().find("tokens has 17 entries"), std::string::npos) << r.status();
  }
  {
    Batch b = RandomBatch(c, 1);
    b.targets[0] = -1;
    b.loss_mask[0] = 1;
    EXPECT_FALSE(model->Evaluate(b).ok());
  }
}

}  // namespace
}  // namespace modamba
