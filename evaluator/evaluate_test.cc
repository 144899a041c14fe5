#include "evaluator/evaluate.h"

#include <cmath>
#include <fstream>

#include "core/checkpoint.h"
#include "core/file_util.h"
#include "evaluator/test_util.h"
#include "gtest/gtest.h"
#include "trainer/train_loop.h"

namespace modamba::eval {
namespace {

class EvaluateTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (testing::RawDir().empty()) return;
    auto built = testing::BuildTinyDatasets(::testing::TempDir() + "/evaluate_data");
    ASSERT_TRUE(built.ok()) << built.status();
    data_ = new std::string(*built);
    classifiers_ = new std::string(::testing::TempDir() + "/evaluate_classifiers");
    ASSERT_TRUE(MakeDirs(*classifiers_).ok());
    ASSERT_TRUE(testing::TrainQuickClassifiers(*classifiers_).ok());
  }
  void SetUp() override {
    if (testing::RawDir().empty()) GTEST_SKIP() << "MODAMBA_DATA_DIR is not set";
    ASSERT_NE(data_, nullptr);
  }
  // Trains a tiny model on a setting for `steps` steps; returns its newest
  // checkpoint.
  std::string TrainTiny(const std::string& setting, int steps) {
    const std::string root = ::testing::TempDir() + "/evaluate_run_" + setting;
    auto config = testing::TinyTrainConfig(*data_ + "/" + setting, root, steps);
    EXPECT_TRUE(config.ok()) << config.status();
    auto be = NewCpuBackend();
    TrainContext ctx;
    ctx.backend = be.get();
    auto trained = Train(*config, ctx);
    EXPECT_TRUE(trained.ok()) << trained.status();
    auto latest = LatestCheckpoint(root);
    EXPECT_TRUE(latest.ok() && !latest->empty());
    return *latest;
  }
  EvalOptions Options(const std::string& out) {
    EvalOptions o;
    o.classifier_dir = *classifiers_;
    o.samples_per_digit = 2;
    o.val.max_sequences = 4;
    o.generation.diffusion.steps = 4;
    o.generation.max_speech_units = 20;
    o.output_dir = out;
    return o;
  }

  static std::string* data_;
  static std::string* classifiers_;
};
std::string* EvaluateTest::data_ = nullptr;
std::string* EvaluateTest::classifiers_ = nullptr;

void ExpectFinite(const EvalReport& r) {
  for (const auto& [name, value] : r.metrics) EXPECT_TRUE(std::isfinite(value)) << name;
}

TEST_F(EvaluateTest, ChameleonCheckpoint) {
  const std::string ckpt = TrainTiny("chameleon", 2);
  auto be = NewCpuBackend();
  CheckpointEvaluator evaluator(Options(::testing::TempDir() + "/eval_chameleon"), be.get());
  auto report = evaluator.Evaluate(ckpt);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->step, 2);
  EXPECT_GT(report->flops, 0);
  ExpectFinite(*report);
  const auto& m = report->metrics;
  for (const char* key : {"val/loss", "val/text_ce", "val/text_bpb", "val/image_ce",
                          "val/image_accuracy", "image/accuracy", "image/frechet",
                          "image/ref_real_accuracy", "image/ref_augmented_accuracy",
                          "image/ref_real_frechet", "image/ref_train_test_frechet",
                          "image/ref_vq_psnr", "image/ref_vq_accuracy", "image/ref_vq_frechet"}) {
    EXPECT_EQ(m.count(key), 1u) << key;
  }
  EXPECT_EQ(m.count("speech/accuracy"), 0u);
  EXPECT_EQ(m.at("image/samples"), 20);
  EXPECT_GT(m.at("image/ref_real_accuracy"), 0.85);
  EXPECT_GT(m.at("image/ref_vq_psnr"), 15);
  EXPECT_GT(m.at("image/ref_vq_accuracy"), 0.7);
  // Real training images against the test set: far below the samples of an
  // untrained model, and below the same-size real line.
  EXPECT_LT(m.at("image/ref_train_test_frechet"), m.at("image/ref_real_frechet"));
  EXPECT_LT(m.at("image/ref_train_test_frechet"), m.at("image/frechet"));
  EXPECT_EQ(report->judges.count("image"), 1u);
  // Two steps from random: near-uniform over the 1031 ids.
  EXPECT_GT(m.at("val/loss"), 5.0);
  ASSERT_EQ(report->files.size(), 1u);
  EXPECT_TRUE(FileExists(report->files[0]));
  // The report is JSON with the step and metrics.
  EXPECT_NE(report->ToJson().find("\"image/accuracy\""), std::string::npos);

  // A second evaluation reuses the classifiers and references: same numbers.
  auto again = evaluator.Evaluate(ckpt);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->metrics, report->metrics);
}

TEST_F(EvaluateTest, TransfusionAndTrimodalModelsOfBothBlockKinds) {
  auto be = NewCpuBackend();
  for (const std::string setting : {"transfusion", "trimodal"}) {
    for (bool transformer : {false, true}) {
      SCOPED_TRACE(setting + (transformer ? " MoT" : " MoM"));
      auto config = testing::TinyTrainConfig(*data_ + "/" + setting, "", 1, transformer);
      ASSERT_TRUE(config.ok()) << config.status();
      auto model = LanguageModel::Create(config->model(), be.get(), DType::kF32, 1);
      ASSERT_TRUE(model.ok());
      CheckpointEvaluator evaluator(Options(::testing::TempDir() + "/eval_" + setting), be.get());
      auto report = evaluator.EvaluateModel(model->get(), *config);
      ASSERT_TRUE(report.ok()) << report.status();
      ExpectFinite(*report);
      const auto& m = report->metrics;
      EXPECT_EQ(m.count("image/accuracy"), 1u);
      if (setting == "transfusion") {
        for (const char* key : {"val/diffusion_mse", "val/diffusion_mse_t100", "val/diffusion_mse_t500",
                                "val/diffusion_mse_t900"}) {
          EXPECT_EQ(m.count(key), 1u) << key;
        }
        EXPECT_EQ(m.count("image/ref_vq_psnr"), 0u);
        EXPECT_EQ(m.count("val/image_ce"), 0u);
      } else {
        for (const char* key : {"val/speech_ce", "val/speech_accuracy", "speech/accuracy",
                                "speech/frechet", "speech/cer", "speech/mean_units",
                                "speech/ref_real_accuracy", "speech/ref_augmented_accuracy",
                                "speech/ref_real_cer", "speech/ref_real_frechet",
                                "speech/ref_train_test_frechet", "speech/ref_units_accuracy",
                                "speech/ref_units_cer", "speech/ref_units_frechet"}) {
          EXPECT_EQ(m.count(key), 1u) << key;
        }
        EXPECT_GT(m.at("speech/ref_real_accuracy"), 0.85);
        // Right words score a low CER, and the real takes a lower one than
        // the untrained model's samples.
        EXPECT_LT(m.at("speech/ref_real_cer"), 0.15);
        EXPECT_LT(m.at("speech/ref_real_cer"), m.at("speech/cer"));
        EXPECT_LE(m.at("speech/mean_units"), 20);
        // images.png and a WAV per digit whose first sample has any units.
        EXPECT_GE(report->files.size(), 2u);
        EXPECT_LE(report->files.size(), 11u);
        for (const std::string& f : report->files) EXPECT_TRUE(FileExists(f)) << f;
      }
    }
  }
}

TEST_F(EvaluateTest, RefusesACorruptCheckpoint) {
  const std::string ckpt = TrainTiny("chameleon", 1);
  auto manifest = ReadManifest(ckpt);
  ASSERT_TRUE(manifest.ok());
  const std::string victim = ckpt + "/" + manifest->files(0).name();
  {
    std::fstream f(victim, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(100);
    f.put('\x5a');
  }
  auto be = NewCpuBackend();
  CheckpointEvaluator evaluator(Options(""), be.get());
  auto report = evaluator.Evaluate(ckpt);
  ASSERT_FALSE(report.ok());
  EXPECT_EQ(report.status().code(), absl::StatusCode::kDataLoss) << report.status();
}

}  // namespace
}  // namespace modamba::eval
