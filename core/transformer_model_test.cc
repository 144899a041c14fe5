// The language model with Transformer blocks (architecture TRANSFORMER), on
// the CPU in double: gradients against finite differences, dense,
// Mixture-of-Transformers and MoT with Transfusion's patch rows; one-modality MoT equal to the
// dense Transformer bit for bit; and KV-cache generation (LanguageModel::Step) equal to the
// parallel logits, across packed documents and interleaved modalities.
#include <memory>
#include <string>
#include <vector>

#include "core/config.h"
#include "core/flops.h"
#include "core/model.h"
#include "core/model_test_util.h"
#include "core/rng.h"
#include "gtest/gtest.h"

namespace modamba {
namespace {

v1::ModelConfig TransformerConfig(int modalities, bool routed) {
  v1::ModelConfig c;
  c.set_architecture(v1::ModelConfig::TRANSFORMER);
  c.set_d_model(8);
  c.set_n_layer(2);
  c.set_vocab_size(23);
  c.set_n_modalities(modalities);
  c.set_n_head(2);
  c.set_d_ff(12);
  c.set_route_qkv(routed);
  c.set_route_attn_out(routed);
  c.set_route_ffn_in(routed);
  c.set_route_ffn_out(routed);
  c.set_route_norms(routed);
  EXPECT_TRUE(ResolveModelConfig(&c, "test").ok());
  return c;
}

// Two sequences of 9, a document starting inside each, modality spans.
Batch RandomBatch(const v1::ModelConfig& c, uint64_t seed) {
  Rng rng(seed);
  Batch b;
  b.batch = 2;
  b.seq_len = 9;
  for (int64_t i = 0; i < b.rows(); ++i) {
    const int m = static_cast<int>((i / 3 + i % 2) % c.n_modalities());
    b.tokens.push_back(static_cast<int32_t>(rng.Below(c.vocab_size())));
    b.modality.push_back(m);
    b.doc_start.push_back(i % b.seq_len == 0 || i % b.seq_len == 5);
    b.targets.push_back(static_cast<int32_t>(rng.Below(c.vocab_size())));
    b.target_modality.push_back(m);
    b.loss_mask.push_back(i % 7 == 3 ? 0.f : 1.f);
  }
  return b;
}

std::unique_ptr<LanguageModel> MakeModel(const v1::ModelConfig& c, Backend* be) {
  return testing::MakeModel(c, be, DType::kF64);
}

TEST(TransformerModel, GradientsMatchFiniteDifferencesInDouble) {
  for (int variant = 0; variant < 3; ++variant) {
    const bool routed = variant > 0, transfusion = variant == 2;
    const char* name = transfusion ? "MoT transfusion" : routed ? "MoT" : "dense";
    SCOPED_TRACE(name);
    auto be = NewCpuBackend();
    v1::ModelConfig c = TransformerConfig(3, routed);
    if (transfusion) c.set_patch_dim(3);
    auto model = MakeModel(c, be.get());
    Batch batch = RandomBatch(c, 3);
    if (transfusion) testing::AddPatches(c, &batch, 4);
    testing::ExpectGradientsMatchFiniteDifferences(model.get(), batch, name);
  }
}

TEST(TransformerModel, OneModalityMixtureEqualsDenseBitForBit) {
  auto be = NewCpuBackend();
  auto dense = MakeModel(TransformerConfig(1, false), be.get());
  auto mot = MakeModel(TransformerConfig(1, true), be.get());
  const Batch batch = RandomBatch(TransformerConfig(1, false), 5);
  auto a = dense->ForwardBackward(batch);
  auto b = mot->ForwardBackward(batch);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->total_sum(), b->total_sum());
  ASSERT_EQ(dense->params().all().size(), mot->params().all().size());
  for (size_t k = 0; k < dense->params().all().size(); ++k) {
    const Param& pa = *dense->params().all()[k];
    const Param& pb = *mot->params().all()[k];
    ASSERT_EQ(pa.name, pb.name);
    ASSERT_EQ(pa.grad.numel(), pb.grad.numel()) << pa.name;
    for (int64_t i = 0; i < pa.grad.numel(); ++i) {
      ASSERT_EQ(pa.value.data<double>()[i], pb.value.data<double>()[i]) << pa.name;
      ASSERT_EQ(pa.grad.data<double>()[i], pb.grad.data<double>()[i]) << pa.name;
    }
  }
}

// Every one of the 32 routing combinations (dense to MoT) learns a batch in
// float, with rows grouped by modality as in training.
TEST(TransformerModel, AllRouteCombinationsTrain) {
  auto be = NewCpuBackend();
  for (int mask = 0; mask < 32; ++mask) {
    v1::ModelConfig c = TransformerConfig(3, false);
    c.set_route_qkv(mask & 1);
    c.set_route_attn_out(mask & 2);
    c.set_route_ffn_in(mask & 4);
    c.set_route_ffn_out(mask & 8);
    c.set_route_norms(mask & 16);
    auto model = LanguageModel::Create(c, be.get(), DType::kF32, 7);
    ASSERT_TRUE(model.ok()) << model.status();
    testing::ExpectLearnsBatch(model->get(), RandomBatch(c, 17), "route mask " + std::to_string(mask));
  }
}

// FSDP holds no gradient storage outside the backward (trainer/fsdp.h): the
// forward of routed norms and projections must not touch it.
TEST(TransformerModel, ForwardNeedsNoGradientStorage) {
  auto be = NewCpuBackend();
  const v1::ModelConfig c = TransformerConfig(3, true);
  auto model = MakeModel(c, be.get());
  for (const auto& p : model->mutable_params()->all()) p->grad = Tensor();
  EXPECT_TRUE(model->Evaluate(RandomBatch(c, 2)).ok());
}

// The analytic counts (core/flops.h) against the model's own parameters.
TEST(TransformerModel, ParameterCountsMatchTheModel) {
  auto be = NewCpuBackend();
  for (bool routed : {false, true}) {
    const v1::ModelConfig c = TransformerConfig(3, routed);
    auto model = MakeModel(c, be.get());
    int64_t stored = 0;
    for (const auto& p : model->params().all()) stored += p->value.numel();
    EXPECT_EQ(TotalParams(c), stored) << (routed ? "MoT" : "dense");
    // One modality's weights of every projection, and the head.
    const int64_t d = c.d_model(), f = c.d_ff();
    EXPECT_EQ(ActiveMatmulParams(c), c.n_layer() * (3 * d * d + d * d + 2 * f * d + f * d) +
                                         int64_t{c.vocab_size()} * d);
  }
}

// Each sequence of the batch is one stream, fed a token per step; the
// step's logits are the parallel forward's at the same position.
TEST(TransformerModel, KvCacheStepsMatchParallelLogits) {
  for (bool routed : {false, true}) {
    SCOPED_TRACE(routed ? "MoT" : "dense");
    auto be = NewCpuBackend();
    const v1::ModelConfig c = TransformerConfig(3, routed);
    auto model = MakeModel(c, be.get());
    const Batch batch = RandomBatch(c, 11);
    ASSERT_TRUE(model->Evaluate(batch).ok());
    const int v = c.vocab_size();
    Tensor parallel(DType::kF64, model->logits().shape());
    be->Copy(model->logits().mat(), parallel.mat());
    RecurrentState state = model->NewState(static_cast<int>(batch.batch));
    std::vector<float> logits(batch.batch * v);
    for (int64_t t = 0; t < batch.seq_len; ++t) {
      std::vector<StepInput> inputs;
      for (int s = static_cast<int>(batch.batch) - 1; s >= 0; --s) {  // not in stream order
        const int64_t n = s * batch.seq_len + t;
        StepInput in;
        in.stream = s;
        in.token = batch.tokens[n];
        in.modality = batch.modality[n];
        in.doc_start = batch.doc_start[n] != 0;
        inputs.push_back(in);
      }
      ASSERT_TRUE(model->Step(inputs, &state, logits.data(), nullptr).ok());
      for (size_t i = 0; i < inputs.size(); ++i) {
        const int64_t n = inputs[i].stream * batch.seq_len + t;
        for (int j = 0; j < v; ++j) {
          // The step's logits come back as floats.
          EXPECT_NEAR(logits[i * v + j], parallel.data<double>()[n * v + j], 1e-6)
              << "stream " << inputs[i].stream << " t " << t << " logit " << j;
        }
      }
    }
  }
}

}  // namespace
}  // namespace modamba
