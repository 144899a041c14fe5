#include "evaluator/validation.h"

#include <cmath>
#include <cstdlib>

#include "core/config.h"
#include "core/data/reader.h"
#include "core/data/vocab.h"
#include "gtest/gtest.h"
#include "trainer/synthetic_dataset.h"

namespace modamba::eval {
namespace {

class ValidationTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir() + "/validation_" + GetParam();
    ASSERT_TRUE(WriteSyntheticDataset(dir_, GetParam(), 64, 4, 7).ok());
    v1::ModelConfig c;
    c.set_d_model(16);
    c.set_n_layer(2);
    c.set_vocab_size(data::Vocab{}.size());
    c.set_n_modalities(GetParam() == "trimodal" ? 3 : 2);
    c.set_route_in(true);
    c.set_route_x(true);
    c.set_route_dt(true);
    c.set_route_out(true);
    if (GetParam() == "transfusion") c.set_patch_dim(16);
    ASSERT_TRUE(ResolveModelConfig(&c, "test").ok());
    backend_ = NewCpuBackend();
    auto model = LanguageModel::Create(c, backend_.get(), DType::kF32, 3);
    ASSERT_TRUE(model.ok());
    model_ = std::move(model).value();
  }
  void Zero(const std::string& name) {
    Param* p = model_->mutable_params()->Find(name);
    ASSERT_NE(p, nullptr) << name;
    model_->params().Set(p, Tensor::Zeros(DType::kF32, p->value.shape()));
  }

  std::string dir_;
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<LanguageModel> model_;
};

TEST_P(ValidationTest, UniformModelGivesLogVocab) {
  Zero("lm_head.weight");
  const bool transfusion = GetParam() == "transfusion";
  if (transfusion) Zero("image_out.weight");
  ValidationOptions opts;
  opts.max_sequences = 0;
  auto m = EvaluateValidation(model_.get(), dir_, opts);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->sequences, 7);
  const double log_v = std::log(static_cast<double>(data::Vocab{}.size()));
  for (size_t i = 0; i < m->targets.size(); ++i) {
    if (m->targets[i] > 0) {
      EXPECT_NEAR(m->ce[i], log_v, 1e-5) << i;
    }
  }
  EXPECT_GT(m->targets[data::kText], 0);
  EXPECT_EQ(m->targets[data::kImage] > 0, !transfusion);
  if (GetParam() == "trimodal") {
    EXPECT_GT(m->targets[data::kSpeech], 0);
  }
  EXPECT_NEAR(m->loss, log_v, 1e-5);
  EXPECT_GT(m->text_bytes, 0);
  EXPECT_NEAR(m->text_bits_per_byte, std::log2(data::Vocab{}.size()), 1e-5);
  if (transfusion) {
    // Predicting zero noise: the MSE is the noise's variance.
    EXPECT_GT(m->diffusion_elements, 1000);
    EXPECT_NEAR(m->diffusion_mse, 1.0, 0.1);
    ASSERT_EQ(m->diffusion_mse_at.size(), 3u);
    for (const auto& [t, mse] : m->diffusion_mse_at) EXPECT_NEAR(mse, 1.0, 0.1) << t;
    EXPECT_TRUE(m->Flat().count("val/diffusion_mse_t500"));
  } else {
    EXPECT_EQ(m->diffusion_elements, 0);
    EXPECT_EQ(m->Flat().count("val/diffusion_mse"), 0u);
  }
}

TEST_P(ValidationTest, SameNumbersWhateverTheBatching) {
  ValidationOptions a, b;
  a.batch_size = 1;
  b.batch_size = 3;
  auto ma = EvaluateValidation(model_.get(), dir_, a);
  auto mb = EvaluateValidation(model_.get(), dir_, b);
  ASSERT_TRUE(ma.ok() && mb.ok());
  EXPECT_EQ(ma->targets, mb->targets);
  for (const auto& [name, value] : ma->Flat()) {
    EXPECT_TRUE(std::isfinite(value)) << name;
    EXPECT_NEAR(value, mb->Flat().at(name), 1e-5 * std::max(1.0, std::fabs(value))) << name;
  }
  a.max_sequences = 2;
  auto two = EvaluateValidation(model_.get(), dir_, a);
  ASSERT_TRUE(two.ok());
  EXPECT_EQ(two->sequences, 2);
  EXPECT_LT(two->targets[0], ma->targets[0]);
}

INSTANTIATE_TEST_SUITE_P(Settings, ValidationTest,
                         ::testing::Values("chameleon", "transfusion", "trimodal"));

TEST(Validation, RefusesADatasetThatDoesNotFit) {
  const std::string dir = ::testing::TempDir() + "/validation_misfit";
  ASSERT_TRUE(WriteSyntheticDataset(dir, "trimodal", 64, 2, 2).ok());
  v1::ModelConfig c;
  c.set_d_model(8);
  c.set_n_layer(1);
  c.set_vocab_size(data::Vocab{}.size());
  c.set_n_modalities(2);
  ASSERT_TRUE(ResolveModelConfig(&c, "test").ok());
  auto be = NewCpuBackend();
  auto model = LanguageModel::Create(c, be.get(), DType::kF32, 1);
  ASSERT_TRUE(model.ok());
  auto m = EvaluateValidation(model->get(), dir, {});
  EXPECT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("does not fit"), std::string::npos) << m.status();
}

}  // namespace
}  // namespace modamba::eval
