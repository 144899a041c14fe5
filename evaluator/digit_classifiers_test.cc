#include "evaluator/digit_classifiers.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "core/file_util.h"
#include "gtest/gtest.h"

namespace modamba::eval {
namespace {

// Below what the recipes reach here (12,000 images x 3 epochs; the default
// speech recipe), with a margin for other machines' floating point.
constexpr double kImageCleanMin = 0.94, kImageAugmentedMin = 0.85;
constexpr double kSpeechCleanMin = 0.98, kSpeechAugmentedMin = 0.96;

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
  const VoicedFrames v = ResampleVoiced(mel, n_mels);
  ASSERT_EQ(v.grid.size(), static_cast<size_t>(kSpeechFrames * n_mels));
  EXPECT_NEAR(v.log_frames, std::log(20.f), 1e-6);
  // Output frame k samples voiced frame (k + 0.5) * 20 / 32 - 0.5.
  for (int k = 0; k < kSpeechFrames; ++k) {
    const double pos = std::clamp((k + 0.5) * 20 / kSpeechFrames - 0.5, 0.0, 19.0);
    EXPECT_NEAR(v.grid[k * n_mels], 10.0 + 0.25 * pos, 1e-4) << k;
  }
  // Loud throughout: nothing is cut.
  std::vector<float> flat(10 * n_mels, 1.f);
  EXPECT_NEAR(ResampleVoiced(flat, n_mels).log_frames, std::log(10.f), 1e-6);
  // No frames at all: zeros, not a crash.
  EXPECT_EQ(SpeechInput({}, n_mels), std::vector<float>(SpeechInputDim(), 0.f));
}

TEST(SpeechFeatures, DropEachBandsMeanAndKeepTheEnvelopeOverTime) {
  const int n_mels = 40;
  // A fixed spectral tilt (band j: 0.1 j) plus a loudness contour g(k)
  // common to every band.
  VoicedFrames v;
  v.log_frames = 3;
  double g_mean = 0;
  for (int k = 0; k < kSpeechFrames; ++k) g_mean += std::sin(0.3 * k) / kSpeechFrames;
  for (int k = 0; k < kSpeechFrames; ++k) {
    for (int j = 0; j < n_mels; ++j) v.grid.push_back(0.1f * j + std::sin(0.3 * k));
  }
  const std::vector<float> in = SpeechFeatures(v, n_mels);
  ASSERT_EQ(in.size(), static_cast<size_t>(SpeechInputDim()));
  // Frame-major: each frame's cepstra, then the log duration.
  for (int k = 0; k < kSpeechFrames; ++k) {
    const float* frame = &in[k * kSpeechFrameDim];
    EXPECT_EQ(frame[kSpeechCepstra], 3.f);
    // The tilt is gone; the contour is all in c0 (orthonormal: sqrt(40) x).
    EXPECT_NEAR(frame[0], std::sqrt(40.0) * (std::sin(0.3 * k) - g_mean), 1e-4);
    for (int c = 1; c < kSpeechCepstra; ++c) EXPECT_NEAR(frame[c], 0, 1e-4);
  }
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

TEST(DigitWordCer, CountsCharacterEditsOverTheAskedWords) {
  EXPECT_EQ(DigitWordCer({3, 7}, {3, 7}), 0);
  // "nine" for "one": 2 edits (insert n, o -> i) over "one" + "seven".
  EXPECT_NEAR(DigitWordCer({9, 7}, {1, 7}), 2.0 / 8, 1e-12);
  // "three" for "two": t kept, w -> h, o -> r, two insertions: 4 of 3.
  EXPECT_NEAR(DigitWordCer({3}, {2}), 4.0 / 3, 1e-12);
  EXPECT_EQ(DigitWordCer({}, {}), 0);
}

TEST(SpeakerOf, ReadsTheFsddName) {
  data::Recording r;
  r.id = "fsdd/7_yweweler_12";
  EXPECT_EQ(SpeakerOf(r), "yweweler");
}

TEST(AugmentedTestSets, AreTheSameForASeed) {
  data::MnistSet images;
  images.pixels.assign(3 * 784, 0);
  images.labels = {1, 2, 3};
  for (int i = 0; i < 3 * 784; ++i) images.pixels[i] = (i * 37) % 256;
  EXPECT_EQ(AugmentedImageInputs(images, 5), AugmentedImageInputs(images, 5));
  EXPECT_NE(AugmentedImageInputs(images, 5), AugmentedImageInputs(images, 6));
  EXPECT_NE(AugmentedImageInputs(images, 5), ImageInputs(images.pixels.data(), 3));

  data::Recording tone;
  tone.id = "fsdd/3_tone_0";
  tone.digit = 3;
  tone.audio.sample_rate = 8000;
  for (int i = 0; i < 4000; ++i) {
    tone.audio.samples.push_back(0.3f * std::sin(2 * M_PI * 300 * i / 8000.0) *
                                 std::sin(M_PI * i / 4000.0));
  }
  const std::vector<data::Recording> takes = {tone};
  EXPECT_EQ(AugmentedSpeechInputs(takes, 5), AugmentedSpeechInputs(takes, 5));
  EXPECT_NE(AugmentedSpeechInputs(takes, 5), AugmentedSpeechInputs(takes, 6));
  EXPECT_NE(AugmentedSpeechInputs(takes, 5), RecordingInputs(takes));
}

TEST(JudgeDataSha256, ChangesWithOnePixelOrOneLabel) {
  data::RawCorpus corpus;
  corpus.images[data::kTrain].pixels.assign(2 * 784, 7);
  corpus.images[data::kTrain].labels = {4, 5};
  const std::string base = JudgeDataSha256(JudgeKind::kImage, corpus);
  EXPECT_EQ(base.size(), 64u);
  corpus.images[data::kTrain].pixels[100] = 8;
  const std::string pixel = JudgeDataSha256(JudgeKind::kImage, corpus);
  corpus.images[data::kTrain].labels[1] = 6;
  const std::string label = JudgeDataSha256(JudgeKind::kImage, corpus);
  EXPECT_NE(base, pixel);
  EXPECT_NE(pixel, label);
  // The held-out split is not training data.
  corpus.images[data::kVal].labels = {1};
  EXPECT_EQ(JudgeDataSha256(JudgeKind::kImage, corpus), label);
}

// A raw data directory whose FSDD take `altered` holds the sound of another
// take; everything else links to the real data.
std::string AlteredRawDir(const std::string& altered, const std::string& source) {
  namespace fs = std::filesystem;
  const fs::path out = fs::path(::testing::TempDir()) / "altered_raw";
  fs::remove_all(out);
  fs::create_directories(out / "fsdd" / "recordings");
  for (const auto& e : fs::directory_iterator(RawDir())) {
    if (e.path().filename() != "fsdd") fs::create_symlink(e.path(), out / e.path().filename());
  }
  for (const auto& e : fs::directory_iterator(fs::path(RawDir()) / "fsdd" / "recordings")) {
    const fs::path to = out / "fsdd" / "recordings" / e.path().filename();
    if (e.path().filename() == altered) {
      fs::copy_file(fs::path(RawDir()) / "fsdd" / "recordings" / source, to);
    } else {
      fs::create_symlink(e.path(), to);
    }
  }
  return out.string();
}

TEST(Judges, AJudgeTrainedOnAlteredDataIsNotReused) {
  if (RawDir().empty()) GTEST_SKIP() << "MODAMBA_DATA_DIR is not set";
  JudgeOptions quick;
  quick.train_items = 40;
  quick.training.epochs = 2;
  quick.training.speech_copies = 1;
  // The first 40 training takes are take 5 of every speaker; replace one.
  const std::string raw = AlteredRawDir("3_jackson_5.flac", "3_jackson_6.flac");
  const std::string dir = ::testing::TempDir() + "/altered_judges";
  auto be = NewCpuBackend();
  auto altered = TrainJudge(JudgeKind::kSpeech, dir, raw, be.get(), quick);
  ASSERT_TRUE(altered.ok()) << altered.status();
  const std::string altered_sha = altered->metadata["data_sha256"];

  // Reused on the same data.
  auto again = LoadOrTrainJudge(JudgeKind::kSpeech, dir, raw, be.get(), quick);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_FALSE(again->trained);

  // Against the real data: refused, naming the file and both hashes...
  JudgeOptions refuse = quick;
  refuse.retrain_on_mismatch = false;
  auto refused = LoadOrTrainJudge(JudgeKind::kSpeech, dir, RawDir(), be.get(), refuse);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  const std::string message(refused.status().message());
  EXPECT_NE(message.find(altered->path), std::string::npos) << message;
  EXPECT_NE(message.find(altered_sha), std::string::npos) << message;
  // ... or retrained, and the new file carries the real data's hash.
  auto retrained = LoadOrTrainJudge(JudgeKind::kSpeech, dir, RawDir(), be.get(), quick);
  ASSERT_TRUE(retrained.ok()) << retrained.status();
  EXPECT_TRUE(retrained->trained);
  EXPECT_NE(retrained->metadata["data_sha256"], altered_sha);
  EXPECT_EQ(retrained->metadata["data_sha256"],
            JudgeDataSha256(JudgeKind::kSpeech, retrained->corpus));
  auto reused = LoadOrTrainJudge(JudgeKind::kSpeech, dir, RawDir(), be.get(), refuse);
  ASSERT_TRUE(reused.ok()) << reused.status();
  EXPECT_FALSE(reused->trained);

  // A judge of another code version (or an old file without a key) is not
  // reused either.
  std::map<std::string, std::string> meta = reused->metadata;
  meta["code_version"] = "fsdd-mlp/1";
  ASSERT_TRUE(reused->classifier->Save(reused->path, meta).ok());
  auto old = LoadOrTrainJudge(JudgeKind::kSpeech, dir, RawDir(), be.get(), refuse);
  ASSERT_FALSE(old.ok());
  EXPECT_NE(std::string(old.status().message()).find("code version fsdd-mlp/1"),
            std::string::npos)
      << old.status();

  // The key covers every member: a file of the right version and data that
  // holds the first network alone is not reused.
  ASSERT_GE(reused->classifier->members(), 2);
  std::map<std::string, std::string> key;
  for (const char* k : {"code_version", "data_sha256", "train_items"}) key[k] = reused->metadata[k];
  ASSERT_TRUE(reused->classifier->member(0).Save(reused->path, key).ok());
  auto partial = LoadOrTrainJudge(JudgeKind::kSpeech, dir, RawDir(), be.get(), refuse);
  ASSERT_FALSE(partial.ok());
  EXPECT_NE(std::string(partial.status().message()).find("it holds the networks"),
            std::string::npos)
      << partial.status();
}

TEST(Judges, ImageJudgeLearnsAugmentedDigits) {
  if (RawDir().empty()) GTEST_SKIP() << "MODAMBA_DATA_DIR is not set";
  auto be = NewCpuBackend();
  // A slice and few epochs (the full recipe takes minutes; README numbers).
  JudgeOptions quick;
  quick.train_items = 12000;
  quick.training.epochs = 3;
  auto judge = TrainJudge(JudgeKind::kImage, ::testing::TempDir() + "/image_judge", RawDir(),
                          be.get(), quick);
  ASSERT_TRUE(judge.ok()) << judge.status();
  std::printf("MNIST judge, 12000 images x 3 epochs: %s clean, %s augmented\n",
              judge->metadata["test_accuracy"].c_str(),
              judge->metadata["augmented_test_accuracy"].c_str());
  EXPECT_GE(std::stod(judge->metadata["test_accuracy"]), kImageCleanMin);
  EXPECT_GE(std::stod(judge->metadata["augmented_test_accuracy"]), kImageAugmentedMin);
  EXPECT_EQ(judge->metadata["train_items"], "12000");
  EXPECT_EQ(judge->metadata["code_version"], kImageJudgeVersion);
}

TEST(Judges, SpeechJudgeReachesItsThresholdsAndIsCached) {
  if (RawDir().empty()) GTEST_SKIP() << "MODAMBA_DATA_DIR is not set";
  const std::string dir = ::testing::TempDir() + "/speech_judge";
  std::filesystem::remove_all(dir);
  auto be = NewCpuBackend();
  auto first = LoadOrTrainJudge(JudgeKind::kSpeech, dir, RawDir(), be.get(), {});
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_TRUE(first->trained);
  const auto& test = first->corpus.fsdd[data::kVal];
  ASSERT_EQ(test.size(), 300u);
  const std::vector<float> x = RecordingInputs(test);
  std::vector<int32_t> y;
  for (const auto& r : test) y.push_back(r.digit);
  const double accuracy = Accuracy(first->classifier.get(), x, y);
  const double augmented =
      Accuracy(first->classifier.get(), AugmentedSpeechInputs(test, kAugmentedTestSeed), y);
  std::printf("FSDD judge: %.4f clean, %.4f augmented\n", accuracy, augmented);
  EXPECT_GE(accuracy, kSpeechCleanMin);
  EXPECT_GE(augmented, kSpeechAugmentedMin);

  // The second call loads the cached file: the same predictions.
  auto second = LoadOrTrainJudge(JudgeKind::kSpeech, dir, RawDir(), be.get(), {});
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_FALSE(second->trained);
  EXPECT_EQ(first->classifier->Predict(x.data(), y.size()), second->classifier->Predict(x.data(), y.size()));
}

}  // namespace
}  // namespace modamba::eval
