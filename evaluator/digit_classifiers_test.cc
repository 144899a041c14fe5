#include "evaluator/digit_classifiers.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "core/file_util.h"
#include "gtest/gtest.h"

namespace modamba::eval {
namespace {

std::string RawDir() {
  const char* dir = std::getenv("MODAMBA_DATA_DIR");
  return dir != nullptr ? dir : "";
}

TEST(SpeechInput, KeepsTheVoicedPartAtAFixedLength) {
  const int n_mels = 4;
  // 5 quiet frames, 20 voiced frames rising by 0.25 each, 7 quiet.
  std::vector<float> mel;
  for (int t = 0; t < 32; ++t) {
    const bool voiced = t >= 5 && t < 25;
    for (int j = 0; j < n_mels; ++j) mel.push_back(voiced ? 10.f + 0.25f * (t - 5) : -13.f);
  }
  std::vector<float> in = SpeechInput(mel, n_mels);
  ASSERT_EQ(in.size(), static_cast<size_t>(SpeechInputDim(n_mels)));
  EXPECT_NEAR(in.back(), std::log(20.f), 1e-6);
  // Output frame k samples voiced frame (k + 0.5) * 20 / 32 - 0.5.
  for (int k = 0; k < kSpeechFrames; ++k) {
    const double pos = std::clamp((k + 0.5) * 20 / kSpeechFrames - 0.5, 0.0, 19.0);
    EXPECT_NEAR(in[k * n_mels], 10.0 + 0.25 * pos, 1e-4) << k;
  }
  // Loud throughout: nothing is cut.
  std::vector<float> flat(10 * n_mels, 1.f);
  EXPECT_NEAR(SpeechInput(flat, n_mels).back(), std::log(10.f), 1e-6);
  // No frames at all: zeros, not a crash.
  EXPECT_EQ(SpeechInput({}, n_mels), std::vector<float>(SpeechInputDim(n_mels), 0.f));
}

TEST(ImageInputs, ScalesPixels) {
  const uint8_t px[3] = {0, 51, 255};
  EXPECT_EQ(ImageInputs(px, 1).size(), 784u);
  std::vector<uint8_t> image(784, 0);
  image[1] = 51;
  image[2] = 255;
  std::vector<float> in = ImageInputs(image.data(), 1);
  EXPECT_FLOAT_EQ(in[1], 0.2f);
  EXPECT_FLOAT_EQ(in[2], 1.f);
}

TEST(DigitClassifiers, MnistClassifierReaches98Percent) {
  if (RawDir().empty()) GTEST_SKIP() << "MODAMBA_DATA_DIR is not set";
  data::RawSelection sel;
  sel.speech = sel.text = false;
  auto corpus = data::LoadRawCorpus(RawDir(), sel);
  ASSERT_TRUE(corpus.ok()) << corpus.status();
  auto be = NewCpuBackend();
  auto trained = TrainImageClassifier(corpus->images[data::kTrain], corpus->images[data::kVal],
                                      be.get(), {});
  ASSERT_TRUE(trained.ok()) << trained.status();
  std::printf("MNIST classifier: test accuracy %.4f in %.1f s\n", trained->test_accuracy,
              trained->seconds);
  EXPECT_GE(trained->test_accuracy, 0.98);
}

TEST(DigitClassifiers, SpokenDigitClassifierReaches95PercentAndIsCached) {
  if (RawDir().empty()) GTEST_SKIP() << "MODAMBA_DATA_DIR is not set";
  const std::string dir = ::testing::TempDir() + "/classifiers";
  const std::string path = dir + "/" + kSpeechClassifierFile;
  std::remove(path.c_str());
  auto be = NewCpuBackend();
  auto first = LoadOrTrainSpeechClassifier(dir, RawDir(), be.get());
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_TRUE(FileExists(path));

  data::RawSelection sel;
  sel.images = sel.text = false;
  sel.cathy = {0, 0};
  auto corpus = data::LoadRawCorpus(RawDir(), sel);
  ASSERT_TRUE(corpus.ok()) << corpus.status();
  const auto& test = corpus->fsdd[data::kVal];
  ASSERT_EQ(test.size(), 300u);
  const data::MelAnalyzer mel{data::MelConfig{}};
  std::vector<float> x;
  std::vector<int32_t> y;
  for (const auto& r : test) {
    std::vector<float> in = SpeechInput(mel.LogMel(r.audio.samples), mel.config().n_mels);
    x.insert(x.end(), in.begin(), in.end());
    y.push_back(r.digit);
  }
  const double accuracy = Accuracy(first->get(), x, y);
  std::printf("FSDD classifier: test accuracy %.4f\n", accuracy);
  EXPECT_GE(accuracy, 0.95);

  // The second call loads the cached file: the same predictions.
  auto second = LoadOrTrainSpeechClassifier(dir, RawDir(), be.get());
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ((*first)->Predict(x.data(), y.size()), (*second)->Predict(x.data(), y.size()));
}

}  // namespace
}  // namespace modamba::eval
