#include "evaluator/recurrent.h"

#include <cstdio>
#include <string>
#include <tuple>

#include "evaluator/recurrent_test_util.h"
#include "gtest/gtest.h"

namespace modamba::eval {
namespace {

using testing::EpsRelError;
using testing::MaxRelError;
using testing::ParallelLogits;
using testing::RandomBatch;
using testing::RecurrentOutputs;
using testing::RunRecurrent;
using testing::SettingConfig;

// (setting, Transformer blocks instead of Mamba's)
class RecurrentMatchesParallel
    : public ::testing::TestWithParam<std::tuple<std::string, bool>> {};

TEST_P(RecurrentMatchesParallel, LogitsAndEps) {
  const auto& [setting, transformer] = GetParam();
  const std::string name = setting + (transformer ? " Transformer" : " Mamba");
  for (bool routed : {true, false}) {
    SCOPED_TRACE(routed ? "routed" : "dense");
    auto be = NewCpuBackend();
    const v1::ModelConfig c = SettingConfig(setting, routed, transformer);
    auto model = LanguageModel::Create(c, be.get(), DType::kF32, 11);
    ASSERT_TRUE(model.ok()) << model.status();
    const Batch batch = RandomBatch(c, 37, 5);
    const std::vector<float> parallel = ParallelLogits(model->get(), batch);

    auto lm = RecurrentLM::FromModel(**model);
    ASSERT_TRUE(lm.ok()) << lm.status();
    for (bool together : {true, false}) {
      const RecurrentOutputs rec = RunRecurrent(**lm, batch, together);
      const double rel = MaxRelError(rec.logits, parallel);
      EXPECT_LT(rel, 3e-6) << "max |logit difference| / max |logit|";
      std::printf("%s %s %s: logits max rel error %.3g\n", name.c_str(),
                  routed ? "routed" : "dense", together ? "together" : "one by one", rel);
      if (c.patch_dim() > 0) {
        const double eps_err = EpsRelError(model->get(), batch, rec.eps);
        EXPECT_LT(eps_err, 3e-6);
        std::printf("  eps relative error %.3g\n", eps_err);
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Settings, RecurrentMatchesParallel,
                         ::testing::Combine(::testing::Values("chameleon", "transfusion",
                                                              "trimodal"),
                                            ::testing::Bool()));

TEST(Recurrent, RejectsBadInputs) {
  auto be = NewCpuBackend();
  auto model = LanguageModel::Create(SettingConfig("chameleon"), be.get(), DType::kF32, 1);
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
  StepInput f;
  f.stream = 2;
  EXPECT_FALSE((*lm)->Step({f}, &state, logits.data(), nullptr).ok());  // no such stream
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
