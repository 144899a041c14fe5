#include "core/data/speech_tokenizer.h"

#include <algorithm>

#include "core/data/raw_data.h"
#include "core/data/test_util.h"
#include "core/rng.h"
#include "glog/logging.h"
#include "gtest/gtest.h"

namespace modamba::data {
namespace {

TEST(SpeechTokenizerTest, CollapseMergesRuns) {
  EXPECT_EQ(SpeechUnits::Collapse({3, 3, 3, 1, 1, 3, 2, 2}), (std::vector<int32_t>{3, 1, 3, 2}));
  EXPECT_TRUE(SpeechUnits::Collapse({}).empty());
}

// Units are keyed by their training frames and the code version, and the
// key survives Save and Load.
TEST(SpeechTokenizerTest, UnitsCarryTheKeyOfWhatTrainedThem) {
  const MelConfig mel;
  std::vector<std::vector<float>> train(3, std::vector<float>(20 * mel.n_mels));
  Rng rng(4);
  for (auto& u : train) {
    for (float& v : u) v = static_cast<float>(rng.Normal(0, 1));
  }
  SpeechUnitsOptions options;
  options.k = 4;
  options.iterations = 3;
  absl::StatusOr<SpeechUnits> units = SpeechUnits::Train(train, mel, options);
  ASSERT_TRUE(units.ok()) << units.status();
  EXPECT_EQ(units->key().code_version, kSpeechUnitsVersion);
  EXPECT_EQ(units->key().data_sha256.size(), 64u);
  train[1][7] += 1;
  absl::StatusOr<SpeechUnits> altered = SpeechUnits::Train(train, mel, options);
  ASSERT_TRUE(altered.ok());
  EXPECT_NE(altered->key().data_sha256, units->key().data_sha256);

  const std::string path = testing::ScratchDir("speech_units_key") + "/units.safetensors";
  ASSERT_TRUE(units->Save(path, {}).ok());
  absl::StatusOr<SpeechUnits> loaded = SpeechUnits::Load(path);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->key().data_sha256, units->key().data_sha256);
  EXPECT_EQ(loaded->key().code_version, kSpeechUnitsVersion);
  EXPECT_FALSE(
      CheckTokenizerKey("speech units", path, loaded->key(), altered->key(), "").ok());
}

// Units trained on a slice of FSDD and cathy; this measures 46 units/s and 98%
// of units used on held-out speech. The full build's numbers are in its
// manifest (47 units/s, every unit used).
TEST(SpeechTokenizerTest, UnitRateUsageAndDecoding) {
  const std::string raw = testing::RawDataDirOrEmpty();
  if (raw.empty()) GTEST_SKIP() << "raw data not found";
  RawSelection selection;
  selection.images = selection.text = false;
  selection.fsdd = {300, 60};
  selection.cathy = {30, 5};
  absl::StatusOr<RawCorpus> corpus = LoadRawCorpus(raw, selection);
  ASSERT_TRUE(corpus.ok()) << corpus.status();
  const MelAnalyzer analyzer{MelConfig()};
  std::vector<std::vector<float>> train;
  for (const auto* set : {&corpus->fsdd[kTrain], &corpus->cathy[kTrain]}) {
    for (const Recording& r : *set) train.push_back(analyzer.LogMel(r.audio.samples));
  }
  SpeechUnitsOptions options;
  options.k = 256;
  options.iterations = 10;
  options.seed = 5;
  absl::StatusOr<SpeechUnits> units = SpeechUnits::Train(train, analyzer.config(), options);
  ASSERT_TRUE(units.ok()) << units.status();

  std::vector<bool> used(256, false);
  double seconds = 0, unit_count = 0, frames = 0, decoded_frames = 0;
  for (const auto* set : {&corpus->fsdd[kVal], &corpus->cathy[kVal]}) {
    for (const Recording& r : *set) {
      const std::vector<float> mel = analyzer.LogMel(r.audio.samples);
      const std::vector<int32_t> frame_units = units->FrameUnits(mel);
      for (int32_t u : frame_units) used[u] = true;
      const std::vector<int32_t> tokens = SpeechUnits::Collapse(frame_units);
      EXPECT_EQ(tokens, units->Encode(mel));
      absl::StatusOr<std::vector<float>> decoded = units->Decode(tokens);
      ASSERT_TRUE(decoded.ok());
      seconds += r.audio.seconds();
      unit_count += tokens.size();
      frames += frame_units.size();
      decoded_frames += decoded->size() / 40.0;
    }
  }
  const double rate = unit_count / seconds;
  const double usage = std::count(used.begin(), used.end(), true) / 256.0;
  LOG(INFO) << "speech units k=256 on held-out speech: " << rate << " units/s, "
            << usage * 100 << "% of units used, decoded/original duration "
            << decoded_frames / frames;
  RecordProperty("units_per_second", std::to_string(rate));
  RecordProperty("codebook_usage_percent", std::to_string(usage * 100));
  // 100 frames/s collapse to fewer units; a codebook that barely moves would
  // give ~100, one that collapses everything a handful.
  EXPECT_GT(rate, 20);
  EXPECT_LT(rate, 80);
  EXPECT_GT(usage, 0.5);
  // Mean run lengths restore the duration of what was collapsed, roughly: the
  // slice measures 1.11 on held-out speech, the full build 1.006.
  EXPECT_NEAR(decoded_frames / frames, 1.0, 0.15);

  const std::string dir = testing::ScratchDir("speech_units");
  ASSERT_TRUE(units->Save(dir + "/units.safetensors", {}).ok());
  absl::StatusOr<SpeechUnits> loaded = SpeechUnits::Load(dir + "/units.safetensors");
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->Encode(train[0]), units->Encode(train[0]));
  EXPECT_EQ(*loaded->Decode({1, 2, 3}), *units->Decode({1, 2, 3}));
  EXPECT_FALSE(loaded->Decode({256}).ok());
}

}  // namespace
}  // namespace modamba::data
