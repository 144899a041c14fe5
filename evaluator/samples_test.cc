#include "evaluator/samples.h"

#include <cmath>

#include "core/config.h"
#include "core/data/documents.h"
#include "core/data/raw_data.h"
#include "core/file_util.h"
#include "evaluator/digit_classifiers.h"
#include "evaluator/test_util.h"
#include "gtest/gtest.h"

namespace modamba::eval {
namespace {

class SamplesTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (testing::RawDir().empty()) return;
    auto built = testing::BuildTinyDatasets(::testing::TempDir() + "/samples_data");
    ASSERT_TRUE(built.ok()) << built.status();
    dir_ = new std::string(*built);
  }
  void SetUp() override {
    if (testing::RawDir().empty()) GTEST_SKIP() << "MODAMBA_DATA_DIR is not set";
    ASSERT_NE(dir_, nullptr);
  }
  // A random model for a setting's dataset (the fixture keeps the model).
  std::unique_ptr<RecurrentLM> Model(const std::string& setting, Tokenizers* tok) {
    auto t = Tokenizers::Load(*dir_ + "/" + setting);
    EXPECT_TRUE(t.ok()) << t.status();
    *tok = std::move(*t);
    v1::ModelConfig c;
    c.set_d_model(16);
    c.set_n_layer(2);
    c.set_vocab_size(tok->vocab.size());
    c.set_n_modalities(setting == "trimodal" ? 3 : 2);
    c.set_patch_dim(tok->patch_dim);
    c.set_route_in(true);
    EXPECT_TRUE(ResolveModelConfig(&c, "test").ok());
    be_ = NewCpuBackend();
    auto model = LanguageModel::Create(c, be_.get(), DType::kF32, 8);
    EXPECT_TRUE(model.ok());
    model_ = *std::move(model);
    auto lm = RecurrentLM::FromModel(*model_);
    EXPECT_TRUE(lm.ok());
    return std::move(lm).value();
  }

  static std::string* dir_;
  std::unique_ptr<Backend> be_;
  std::unique_ptr<LanguageModel> model_;
};
std::string* SamplesTest::dir_ = nullptr;

TEST_F(SamplesTest, DiscreteImagesDecodeThroughTheCodebook) {
  Tokenizers tok;
  auto lm = Model("chameleon", &tok);
  ASSERT_TRUE(tok.vq.has_value());
  EXPECT_FALSE(tok.has_speech());
  GenerationOptions opts;
  opts.batch = 2;  // chunks of 2, 2 and 1
  auto pixels = GenerateImages(*lm, tok, {"a handwritten one", "a handwritten two", "x", "y", "z"}, opts);
  ASSERT_TRUE(pixels.ok()) << pixels.status();
  ASSERT_EQ(pixels->size(), 5u * 784);
  // The same sample whatever the chunking.
  opts.batch = 5;
  auto again = GenerateImages(*lm, tok, {"a handwritten one", "a handwritten two", "x", "y", "z"}, opts);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, *pixels);
  const std::string grid = ::testing::TempDir() + "/grid.png";
  ASSERT_TRUE(WriteImageGrid(grid, *pixels, 2).ok());
  EXPECT_TRUE(FileExists(grid));
  EXPECT_FALSE(GenerateSpeech(*lm, tok, {"one"}, opts).ok());
}

TEST_F(SamplesTest, TransfusionImagesComeFromDiffusion) {
  Tokenizers tok;
  auto lm = Model("transfusion", &tok);
  EXPECT_EQ(tok.patch_dim, 16);
  GenerationOptions opts;
  opts.diffusion.steps = 4;
  auto pixels = GenerateImages(*lm, tok, {"a handwritten three", "a handwritten four"}, opts);
  ASSERT_TRUE(pixels.ok()) << pixels.status();
  ASSERT_EQ(pixels->size(), 2u * 784);
  EXPECT_NE(std::vector<uint8_t>(pixels->begin(), pixels->begin() + 784),
            std::vector<uint8_t>(pixels->begin() + 784, pixels->end()));
}

TEST_F(SamplesTest, SpeechUnitsAndText) {
  Tokenizers tok;
  auto lm = Model("trimodal", &tok);
  ASSERT_TRUE(tok.speech.has_value());
  GenerationOptions opts;
  opts.max_speech_units = 12;
  opts.max_text_bytes = 20;
  auto speech = GenerateSpeech(*lm, tok, {"five", "six", "seven"}, opts);
  ASSERT_TRUE(speech.ok()) << speech.status();
  ASSERT_EQ(speech->size(), 3u);
  for (const SpeechSample& s : *speech) {
    EXPECT_LE(s.units.size(), 12u);
    for (int32_t u : s.units) EXPECT_TRUE(u >= 0 && u < tok.speech->k()) << u;
    EXPECT_EQ(s.log_mel.size() % 40, 0u);
    EXPECT_EQ(s.log_mel.empty(), s.units.empty());
  }
  auto text = GenerateText(*lm, tok.vocab, {"ROMEO:", ""}, opts);
  ASSERT_TRUE(text.ok()) << text.status();
  ASSERT_EQ(text->size(), 2u);
  for (const std::string& t : *text) EXPECT_LE(t.size(), 20u);
}

TEST(DigitScorer, RealTestImagesScoreTheClassifiersAccuracy) {
  if (testing::RawDir().empty()) GTEST_SKIP() << "MODAMBA_DATA_DIR is not set";
  data::RawSelection sel;
  sel.speech = sel.text = false;
  sel.mnist = {5000, 4000};
  auto corpus = data::LoadRawCorpus(testing::RawDir(), sel);
  ASSERT_TRUE(corpus.ok()) << corpus.status();
  auto be = NewCpuBackend();
  ClassifierTraining quick;
  quick.epochs = 3;
  auto trained = TrainImageClassifier(corpus->images[data::kTrain], corpus->images[data::kVal],
                                      be.get(), quick);
  ASSERT_TRUE(trained.ok());
  const data::MnistSet& test = corpus->images[data::kVal];
  // Reference: the first half of the test images; scored: the second half.
  const int64_t half = test.count() / 2;
  const std::vector<float> reference = ImageInputs(test.pixels.data(), half);
  const std::vector<float> scored = ImageInputs(test.image(half), half);
  std::vector<int> digits(test.labels.begin() + half, test.labels.end());
  auto scorer = DigitScorer::Create(trained->classifier.get(), reference);
  ASSERT_TRUE(scorer.ok());
  auto score = scorer->Evaluate(scored, digits);
  ASSERT_TRUE(score.ok());
  const double accuracy =
      Accuracy(trained->classifier.get(), scored, std::vector<int32_t>(digits.begin(), digits.end()));
  EXPECT_DOUBLE_EQ(score->accuracy, accuracy);
  EXPECT_GT(score->accuracy, 0.9);
  // Asked for the wrong digit, the same images score near zero.
  std::vector<int> wrong = digits;
  for (int& d : wrong) d = (d + 1) % 10;
  EXPECT_LT(scorer->Evaluate(scored, wrong)->accuracy, 0.05);
  // Noise is far from real digits; real digits are close.
  Rng rng(1);
  std::vector<float> noise(scored.size());
  for (float& v : noise) v = static_cast<float>(rng.Uniform());
  auto noisy = scorer->Evaluate(noise, digits);
  ASSERT_TRUE(noisy.ok());
  std::printf("real half vs real half: accuracy %.4f, Frechet %.3f; uniform noise: Frechet %.3f\n",
              score->accuracy, score->frechet, noisy->frechet);
  EXPECT_GT(noisy->frechet, 20 * score->frechet);
}

}  // namespace
}  // namespace modamba::eval
