#include "core/data/builder.h"

#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>

#include "absl/strings/str_cat.h"
#include "core/data/reader.h"
#include "core/data/test_util.h"
#include "core/data/verify.h"
#include "gtest/gtest.h"

namespace modamba::data {
namespace {

namespace fs = std::filesystem;

// Every file under `dir` (relative path -> bytes).
std::map<std::string, std::string> Snapshot(const std::string& dir) {
  std::map<std::string, std::string> files;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (!e.is_regular_file()) continue;
    std::ifstream in(e.path(), std::ios::binary);
    files[fs::relative(e.path(), dir).string()] =
        std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  }
  return files;
}

// A small slice of every source: a full build of all settings takes about a
// second.
BuildOptions SliceOptions(const std::string& raw, const std::string& out) {
  BuildOptions o;
  o.raw_dir = raw;
  o.out_dir = out;
  o.seq_len = 256;
  o.image_codes = 64;
  o.speech_units = 32;
  o.kmeans_iterations = 6;
  o.shard_sequences = 40;
  o.selection.mnist = {1500, 300};
  o.selection.fsdd = {60, 30};
  o.selection.cathy = {6, 3};
  o.selection.text_bytes = {20000, 4000};
  return o;
}

// A copy of the raw directory made of links to the real files, except
// `damaged` (relative), which is a damaged copy; or `replace` -> `with` links.
std::string MirrorRaw(const std::string& raw, const std::string& name, const std::string& damaged,
                      long keep, long flip, const std::map<std::string, std::string>& replace = {}) {
  const std::string mirror = testing::ScratchDir(name);
  for (const auto& e : fs::recursive_directory_iterator(raw)) {
    const fs::path rel = fs::relative(e.path(), raw);
    if (e.is_directory()) {
      fs::create_directories(fs::path(mirror) / rel);
    } else if (rel == damaged) {
      testing::CopyDamaged(e.path().string(), (fs::path(mirror) / rel).string(), keep, flip);
    } else {
      auto it = replace.find(rel.string());
      fs::create_symlink(it == replace.end() ? e.path() : fs::path(raw) / it->second,
                         fs::path(mirror) / rel);
    }
  }
  return mirror;
}

// Builds the slice once for the suite; the tests compare against it.
class BuilderTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    raw_ = new std::string(testing::RawDataDirOrEmpty());
    if (raw_->empty()) return;
    built_ = new std::string(testing::ScratchDir("build_a"));
    absl::StatusOr<std::vector<DatasetManifest>> result =
        BuildDatasets(SliceOptions(*raw_, *built_));
    ASSERT_TRUE(result.ok()) << result.status();
    manifests_ = new std::vector<DatasetManifest>(std::move(*result));
  }
  void SetUp() override {
    if (raw_->empty()) GTEST_SKIP() << "raw data not found";
    ASSERT_NE(manifests_, nullptr);
  }
  static std::string* raw_;
  static std::string* built_;
  static std::vector<DatasetManifest>* manifests_;
};

std::string* BuilderTest::raw_ = nullptr;
std::string* BuilderTest::built_ = nullptr;
std::vector<DatasetManifest>* BuilderTest::manifests_ = nullptr;

TEST_F(BuilderTest, SameSeedSameBytes) {
  const std::string& a = *built_;
  const std::string b = testing::ScratchDir("build_b");
  const std::string c = testing::ScratchDir("build_c");
  ASSERT_EQ(manifests_->size(), 3u);
  ASSERT_TRUE(BuildDatasets(SliceOptions(*raw_, b)).ok());
  const auto files = Snapshot(a);
  EXPECT_EQ(files, Snapshot(b));
  EXPECT_GT(files.size(), 15u);

  // One setting built alone is byte for byte the same as among others.
  BuildOptions alone = SliceOptions(*raw_, c);
  alone.settings = {Setting::kTrimodal};
  ASSERT_TRUE(BuildDatasets(alone).ok());
  EXPECT_EQ(Snapshot(c + "/trimodal"), Snapshot(a + "/trimodal"));

  // Every split has sequences in several shards, and the vocabulary is the
  // shared id space.
  for (const DatasetManifest& m : *manifests_) {
    EXPECT_EQ(m.vocab.size(), 263 + 64 + 32);
    EXPECT_GT(m.splits.at("train").shards.size(), 1u);
    EXPECT_GT(m.splits.at("val").sequences, 0);
    EXPECT_TRUE(VerifyShards(absl::StrCat(a, "/", m.setting)).ok());
  }
}

TEST_F(BuilderTest, NoHeldOutItemReachesTrain) {
  // Fingerprint the training slice and every held-out item.
  RawSelection selection = SliceOptions(*raw_, *built_).selection;
  selection.mnist[kVal] = selection.fsdd[kVal] = selection.cathy[kVal] = -1;
  selection.text_bytes = {-1, -1};
  for (const char* setting : {"chameleon", "transfusion", "trimodal"}) {
    absl::StatusOr<LeakReport> report =
        CheckHeldOutLeaks(absl::StrCat(*built_, "/", setting), *raw_, selection);
    ASSERT_TRUE(report.ok()) << report.status();
    EXPECT_GT(report->train_spans, 1500) << setting;
    EXPECT_GE(report->held_out_items, 9000) << setting;
    EXPECT_EQ(report->leaks, 0) << setting << ": " << report->examples[0];
    EXPECT_EQ(report->unmatched, 0) << setting;
  }
}

TEST_F(BuilderTest, LeakCheckCatchesHeldOutImagesInTrain) {
  // A raw directory whose "training" images are the MNIST test set.
  const std::string poisoned = MirrorRaw(
      *raw_, "raw_poisoned", "", -1, -1,
      {{"mnist/train-images-idx3-ubyte.gz", "mnist/t10k-images-idx3-ubyte.gz"},
       {"mnist/train-labels-idx1-ubyte.gz", "mnist/t10k-labels-idx1-ubyte.gz"}});
  const std::string out = testing::ScratchDir("build_poisoned");
  BuildOptions options = SliceOptions(poisoned, out);
  options.settings = {Setting::kTransfusion};
  // The build compares contents across splits and refuses.
  absl::StatusOr<std::vector<DatasetManifest>> refused = BuildDatasets(options);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find(
                "mnist/train-images-idx3-ubyte.gz image 0: same pixels as held-out"),
            std::string::npos)
      << refused.status();
  // Without held-out images to compare with, it builds; the dataset check
  // still finds every leak.
  options.selection.mnist[kVal] = 0;
  ASSERT_TRUE(BuildDatasets(options).ok());
  RawSelection selection = options.selection;
  selection.mnist[kVal] = -1;
  absl::StatusOr<LeakReport> report = CheckHeldOutLeaks(out + "/transfusion", *raw_, selection);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->leaks, 1500);
  EXPECT_FALSE(report->examples.empty());
}

TEST_F(BuilderTest, DamagedInputsNameTheFileAndLeaveOutputAsItWas) {
  const std::string out = testing::ScratchDir("build_damaged");
  fs::copy(*built_, out, fs::copy_options::recursive);
  const auto before = Snapshot(out);
  struct Case {
    std::string file;
    long keep, flip;
  };
  const std::vector<Case> cases = {
      {"mnist/train-images-idx3-ubyte.gz", 5000000, -1},  // truncated
      {"mnist/t10k-labels-idx1-ubyte.gz", -1, 2000},      // corrupt
      {"fsdd/recordings/0_george_0.flac", 3000, -1},      // truncated
      {"cathy/recordings/arctic_a0001.flac", -1, 20000},  // corrupt
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    const std::string raw = MirrorRaw(*raw_, absl::StrCat("raw_damaged_", i), cases[i].file,
                                      cases[i].keep, cases[i].flip);
    absl::StatusOr<std::vector<DatasetManifest>> result = BuildDatasets(SliceOptions(raw, out));
    ASSERT_FALSE(result.ok()) << cases[i].file;
    EXPECT_NE(result.status().message().find(cases[i].file), std::string::npos)
        << result.status();
    EXPECT_EQ(Snapshot(out), before) << cases[i].file;
    EXPECT_EQ(std::distance(fs::directory_iterator(out), fs::directory_iterator()), 3);
  }
}

// Builds the tri-modal slice from `raw`, first without and then with
// --skip_bad: the first fails naming `expected`, the second lists it.
void ExpectBadThenSkipped(const std::string& raw, const std::string& out,
                          const std::string& expected) {
  BuildOptions o = SliceOptions(raw, out);
  o.settings = {Setting::kTrimodal};
  absl::StatusOr<std::vector<DatasetManifest>> failed = BuildDatasets(o);
  ASSERT_FALSE(failed.ok());
  EXPECT_NE(failed.status().message().find(expected), std::string::npos) << failed.status();
  EXPECT_NE(failed.status().message().find("--skip_bad"), std::string::npos) << failed.status();
  EXPECT_FALSE(fs::exists(out + "/trimodal"));
  o.selection.skip_bad = true;
  absl::StatusOr<std::vector<DatasetManifest>> skipped = BuildDatasets(o);
  ASSERT_TRUE(skipped.ok()) << skipped.status();
  const SplitStats& train = (*skipped)[0].splits.at("train");
  EXPECT_EQ(train.items.at("skipped_bad"), 1);
  ASSERT_EQ(train.skipped.size(), 1u);
  EXPECT_NE(train.skipped[0].find(expected), std::string::npos) << train.skipped[0];
}

TEST_F(BuilderTest, AFileBesideTheRecordingsIsNamedOrSkippedAndListed) {
  if (raw_->empty()) GTEST_SKIP() << "raw data not found";
  const std::string raw = MirrorRaw(*raw_, "raw_stray", "", -1, -1);
  fs::copy_file(*raw_ + "/fsdd/recordings/0_george_0.flac", raw + "/fsdd/recordings/0_george_0.wav");
  ExpectBadThenSkipped(raw, testing::ScratchDir("build_stray"),
                       "fsdd/recordings/0_george_0.wav: not a recording named");
}

TEST_F(BuilderTest, ATrainRecordingWithAHeldOutOnesContentIsALeak) {
  if (raw_->empty()) GTEST_SKIP() << "raw data not found";
  // Take 5 is train, take 0 held out: the same file under both names.
  const std::string raw = MirrorRaw(*raw_, "raw_shared", "", -1, -1,
                                    {{"fsdd/recordings/0_george_5.flac", "fsdd/recordings/0_george_0.flac"}});
  ExpectBadThenSkipped(raw, testing::ScratchDir("build_shared"),
                       "fsdd/0_george_5: same content as held-out fsdd/0_george_0");
}

TEST_F(BuilderTest, SpeechSplitRulesAreFlagsAndAnEmptySplitNamesFolderAndRule) {
  if (raw_->empty()) GTEST_SKIP() << "raw data not found";
  const std::string out = testing::ScratchDir("build_rules");
  BuildOptions o = SliceOptions(*raw_, out);
  o.settings = {Setting::kTrimodal};
  o.selection.fsdd_val_takes = {60, 70};  // FSDD has takes 0..49
  absl::StatusOr<std::vector<DatasetManifest>> empty = BuildDatasets(o);
  ASSERT_FALSE(empty.ok());
  EXPECT_NE(empty.status().message().find(
                "fsdd/recordings: no recordings in split val (split rule --fsdd_val_takes=60-70"),
            std::string::npos)
      << empty.status();

  o.selection.fsdd_val_takes = {0, 4};
  o.selection.cathy_val_numbers = {1, 5};
  absl::StatusOr<std::vector<DatasetManifest>> built = BuildDatasets(o);
  ASSERT_TRUE(built.ok()) << built.status();
  EXPECT_EQ((*built)[0].build_options.at("cathy_val"), "1-5");
  EXPECT_EQ((*built)[0].splits.at("val").items.at("cathy_recordings"), 3);
  o.selection.cathy_val_numbers = {2000, 3000};
  absl::StatusOr<std::vector<DatasetManifest>> no_cathy_val = BuildDatasets(o);
  ASSERT_FALSE(no_cathy_val.ok());
  EXPECT_NE(no_cathy_val.status().message().find("cathy: no recordings in split val (split rule "
                                                 "--cathy_val=2000-3000"),
            std::string::npos)
      << no_cathy_val.status();
}

TEST_F(BuilderTest, ABpeTextTokenizerTrainsOnTheTrainText) {
  if (raw_->empty()) GTEST_SKIP() << "raw data not found";
  const std::string out = testing::ScratchDir("build_bpe");
  BuildOptions o = SliceOptions(*raw_, out);
  o.settings = {Setting::kChameleon};
  o.text_tokenizer = "bpe:400";
  absl::StatusOr<std::vector<DatasetManifest>> built = BuildDatasets(o);
  ASSERT_TRUE(built.ok()) << built.status();
  const DatasetManifest& m = (*built)[0];
  EXPECT_EQ(m.vocab.text_tokens, 400);
  EXPECT_EQ(m.vocab.size(), 263 + 144 + 64 + 32);
  ASSERT_TRUE(m.tokenizers.count("text"));
  // Fewer text tokens than bytes, the merged ones after the specials.
  const DatasetManifest& bytes = (*manifests_)[0];
  EXPECT_LT(m.splits.at("train").tokens[kText], bytes.splits.at("train").tokens[kText]);
  EXPECT_EQ(m.splits.at("train").tokens[kImage], bytes.splits.at("train").tokens[kImage]);
  absl::StatusOr<std::unique_ptr<ShardReader>> reader = ShardReader::Open(out + "/chameleon", "train", 0, 1);
  ASSERT_TRUE(reader.ok()) << reader.status();
  PackedBatch batch;
  ASSERT_TRUE((*reader)->Next(4, &batch).ok());
  int merged = 0;
  for (int32_t t : batch.tokens) merged += t >= kImageBase && t < m.vocab.text_end();
  EXPECT_GT(merged, 0);
  o.text_tokenizer = "bpe:12";
  EXPECT_FALSE(BuildDatasets(o).ok());
}

}  // namespace
}  // namespace modamba::data
