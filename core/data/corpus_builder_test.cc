#include "core/data/corpus_builder.h"

#include <sndfile.h>
#include <sys/stat.h>
#include <zlib.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/data/audio.h"
#include "core/data/decode.h"
#include "core/data/png_io.h"
#include "core/data/reader.h"
#include "core/data/tokenizer_key.h"
#include "core/data/test_util.h"
#include "core/data/verify.h"
#include "core/file_util.h"
#include "core/rng.h"
#include "core/safetensors.h"
#include "gtest/gtest.h"

namespace modamba::data {
namespace {

namespace fs = std::filesystem;

// Every file under `dir` (relative path -> bytes), hidden staging included.
std::map<std::string, std::string> Snapshot(const std::string& dir) {
  std::map<std::string, std::string> files;
  if (!fs::exists(dir)) return files;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (!e.is_regular_file()) continue;
    std::ifstream in(e.path(), std::ios::binary);
    files[fs::relative(e.path(), dir).string()] =
        std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  }
  return files;
}

// A small corpus: `n` documents per split mixing text, images (28x28 PNG) and
// speech (8 kHz WAV), written to dir/{train,val}.jsonl.
void WriteCorpus(const std::string& dir, int n) {
  fs::create_directories(dir + "/media");
  Rng rng(7);
  for (const char* split : {"train", "val"}) {
    std::string lines;
    for (int i = 0; i < n; ++i) {
      const std::string id = absl::StrFormat("%s-%03d", split, i);
      uint8_t pixels[28 * 28];
      for (uint8_t& p : pixels) p = static_cast<uint8_t>(rng.Below(256));
      ASSERT_TRUE(WritePng(dir + "/media/" + id + ".png", 28, 28, 1, pixels).ok());
      Audio audio;
      audio.sample_rate = 8000;
      const double hz = 200 + rng.Below(600);
      for (int t = 0; t < 2400; ++t) audio.samples.push_back(0.5f * std::sin(2 * M_PI * hz * t / 8000));
      ASSERT_TRUE(WriteWavFile(dir + "/media/" + id + ".wav", audio).ok());
      const std::string text = absl::StrCat("document ", id, " says ", rng.Below(1000));
      switch (i % 4) {
        case 0: lines += absl::StrCat(R"([{"text": ")", text, R"("}])", "\n"); break;
        case 1: lines += absl::StrCat(R"([{"text": ")", text, R"("}, {"image": "media/)", id, R"(.png"}])", "\n"); break;
        case 2: lines += absl::StrCat(R"([{"audio": "media/)", id, R"(.wav"}, {"text": ")", text, R"("}])", "\n"); break;
        case 3:
          lines += absl::StrCat(R"([{"image": "media/)", id, R"(.png"}, {"tokens": [1, 2, 3], "modality": "speech"}, {"text": "x"}])", "\n");
          break;
      }
    }
    ASSERT_TRUE(WriteFileAtomic(absl::StrCat(dir, "/", split, ".jsonl"), lines).ok());
  }
}

CorpusBuildOptions Options(const std::string& corpus, const std::string& out) {
  CorpusBuildOptions o;
  o.out_dir = out;
  o.train_inputs = corpus + "/train.jsonl";
  o.val_inputs = corpus + "/val.jsonl";
  o.seq_len = 128;
  o.image_codes = 16;
  o.speech_units = 8;
  o.kmeans_iterations = 3;
  o.unit_documents = 7;
  o.threads = 2;
  return o;
}

class CorpusBuilderTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    corpus_ = new std::string(testing::ScratchDir("corpus"));
    WriteCorpus(*corpus_, 24);
    built_ = new std::string(testing::ScratchDir("corpus_built"));
    absl::StatusOr<std::vector<DatasetManifest>> m = BuildCorpusDatasets(Options(*corpus_, *built_));
    ASSERT_TRUE(m.ok()) << m.status();
    manifests_ = new std::vector<DatasetManifest>(*std::move(m));
  }
  static std::string* corpus_;
  static std::string* built_;
  static std::vector<DatasetManifest>* manifests_;
};
std::string* CorpusBuilderTest::corpus_ = nullptr;
std::string* CorpusBuilderTest::built_ = nullptr;
std::vector<DatasetManifest>* CorpusBuilderTest::manifests_ = nullptr;

TEST_F(CorpusBuilderTest, BuildsEverySettingIntoReadableShards) {
  ASSERT_EQ(manifests_->size(), 3u);
  for (const DatasetManifest& m : *manifests_) {
    const std::string dir = *built_ + "/" + m.setting;
    ASSERT_TRUE(VerifyShards(dir).ok()) << m.setting;
    const SplitStats& train = m.splits.at("train");
    EXPECT_GT(train.shards.size(), 1u);  // 24 documents in units of 7
    EXPECT_GT(train.tokens[kImage], 0);
    // Documents with speech are trimodal's only.
    EXPECT_EQ(train.items.at("documents"), m.setting == "trimodal" ? 24 : 12) << m.setting;
    EXPECT_EQ(train.tokens[kSpeech] > 0, m.setting == "trimodal");
    absl::StatusOr<std::unique_ptr<ShardReader>> reader = ShardReader::Open(dir, "val", 0, 1);
    ASSERT_TRUE(reader.ok()) << reader.status();
    PackedBatch batch;
    ASSERT_TRUE((*reader)->Next(2, &batch).ok());
    EXPECT_EQ(batch.tokens[0], kBos);
  }
  EXPECT_EQ((*manifests_)[1].patch_dim, 16);  // transfusion: continuous 4x4 grey patches
}

TEST_F(CorpusBuilderTest, ImagesAreBroughtToTheConfiguredShape) {
  const std::string out = testing::ScratchDir("corpus_shape");
  CorpusBuildOptions o = Options(*corpus_, out);
  o.settings = {Setting::kTransfusion, Setting::kChameleon};
  o.image_height = 8;
  o.image_width = 12;
  o.image_channels = 3;
  absl::StatusOr<std::vector<DatasetManifest>> m = BuildCorpusDatasets(o);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ((*m)[0].patch_dim, 48);  // 4x4 patches of RGB pixels
  // 6 train images (those of documents without speech) of 2x3 patches.
  EXPECT_EQ((*m)[0].splits.at("train").patches, 6 * 6);
  EXPECT_EQ((*m)[1].splits.at("train").tokens[kImage], 6 * 6);
  o.image_width = 10;
  absl::StatusOr<std::vector<DatasetManifest>> bad = BuildCorpusDatasets(o);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("width"), std::string::npos) << bad.status();
}

// A 1-D little-endian int32 .npy file.
void WriteNpy(const std::string& path, const std::vector<int32_t>& values) {
  std::string header = "{'descr': '<i4', 'fortran_order': False, 'shape': (" +
                       std::to_string(values.size()) + ",), }";
  while ((10 + header.size() + 1) % 64 != 0) header += ' ';
  header += '\n';
  std::string bytes = "\x93NUMPY\x01";
  bytes.push_back('\0');
  bytes.push_back(static_cast<char>(header.size()));
  bytes.push_back('\0');
  bytes += header;
  bytes.append(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(int32_t));
  ASSERT_TRUE(WriteFileAtomic(path, bytes).ok());
}

TEST_F(CorpusBuilderTest, BuildsPreTokenizedArrays) {
  const std::string dir = testing::ScratchDir("corpus_npy");
  for (const char* split : {"train", "val"}) {
    // Documents of 5 text ids (bytes) then 4 image codes.
    std::vector<int32_t> tokens, modality, offsets = {0};
    for (int d = 0; d < 20; ++d) {
      for (int i = 0; i < 5; ++i) tokens.push_back('a' + (d + i) % 26), modality.push_back(0);
      for (int i = 0; i < 4; ++i) tokens.push_back((d * 4 + i) % 16), modality.push_back(1);
      offsets.push_back(static_cast<int32_t>(tokens.size()));
    }
    const std::string stem = absl::StrCat(dir, "/", split);
    WriteNpy(stem + ".npy", tokens);
    WriteNpy(stem + ".modality.npy", modality);
    WriteNpy(stem + ".offsets.npy", offsets);
  }
  CorpusBuildOptions o = Options(dir, testing::ScratchDir("corpus_npy_out"));
  o.train_inputs = dir + "/train.npy";
  o.val_inputs = dir + "/val.npy";
  o.settings = {Setting::kChameleon};
  // Codes of the user's own image tokenizer: no codebook is trained.
  absl::StatusOr<std::vector<DatasetManifest>> m = BuildCorpusDatasets(o);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_FALSE((*m)[0].tokenizers.count("image_vq"));
  EXPECT_EQ((*m)[0].vocab.image_codes, 16);
  const SplitStats& train = (*m)[0].splits.at("train");
  EXPECT_EQ(train.items.at("documents"), 20);
  EXPECT_EQ(train.tokens[kImage], 20 * 4);
  EXPECT_EQ(train.tokens[kText], 20 * (1 + 5 + 2 + 1));  // BOS, text, BOI + EOI, EOS
}

TEST_F(CorpusBuilderTest, BpeTextTokenizerTrainedOrLoaded) {
  const std::string out = testing::ScratchDir("corpus_bpe");
  CorpusBuildOptions o = Options(*corpus_, out);
  o.settings = {Setting::kChameleon};
  o.text_tokenizer = "bpe:300";
  absl::StatusOr<std::vector<DatasetManifest>> m = BuildCorpusDatasets(o);
  ASSERT_TRUE(m.ok()) << m.status();
  const DatasetManifest& trained = (*m)[0];
  EXPECT_EQ(trained.vocab.text_tokens, 300);
  EXPECT_EQ(trained.vocab.image_begin(), 263 + 300 - 256);
  ASSERT_TRUE(trained.tokenizers.count("text"));
  // Merged text tokens sit after the specials.
  absl::StatusOr<std::unique_ptr<ShardReader>> reader = ShardReader::Open(out + "/chameleon", "train", 0, 1);
  ASSERT_TRUE(reader.ok());
  PackedBatch batch;
  ASSERT_TRUE((*reader)->ReadSequence(0, &batch).ok());
  int merged = 0;
  for (int32_t t : batch.tokens) merged += t >= kImageBase && t < trained.vocab.text_end();
  EXPECT_GT(merged, 0);
  // `inspect` renders the merged tokens as their text.
  absl::StatusOr<SequenceDecoder> decoder = SequenceDecoder::Open(out + "/chameleon");
  ASSERT_TRUE(decoder.ok()) << decoder.status();
  absl::StatusOr<std::string> text = decoder->Decode(batch, 0, "", "x");
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_NE(text->find("<BOS>document train-0"), std::string::npos) << *text;

  // The saved tokenizer.json, loaded, gives the same shards.
  const std::string saved = testing::ScratchDir("corpus_bpe_saved") + "/tokenizer.json";
  fs::copy_file(out + "/chameleon/" + trained.tokenizers.at("text").file, saved);
  const std::string again = testing::ScratchDir("corpus_bpe_loaded");
  o.out_dir = again;
  o.text_tokenizer = saved;
  ASSERT_TRUE(BuildCorpusDatasets(o).ok());
  for (const ShardEntry& e : trained.splits.at("train").shards) {
    EXPECT_TRUE(*ReadFile(out + "/chameleon/" + e.file) == *ReadFile(again + "/chameleon/" + e.file)) << e.file;
  }
}

TEST_F(CorpusBuilderTest, SameBytesForAnyThreadCount) {
  const std::string out = testing::ScratchDir("corpus_threads");
  CorpusBuildOptions o = Options(*corpus_, out);
  o.threads = 1;
  ASSERT_TRUE(BuildCorpusDatasets(o).ok());
  EXPECT_TRUE(Snapshot(out) == Snapshot(*built_));
  o.threads = 5;
  ASSERT_TRUE(BuildCorpusDatasets(o).ok());
  EXPECT_TRUE(Snapshot(out) == Snapshot(*built_));
}

TEST_F(CorpusBuilderTest, GzipInputGivesTheSameShards) {
  const std::string dir = testing::ScratchDir("corpus_gz");
  fs::create_symlink(*corpus_ + "/media", dir + "/media");
  for (const char* split : {"train", "val"}) {
    absl::StatusOr<std::string> text = ReadFile(absl::StrCat(*corpus_, "/", split, ".jsonl"));
    ASSERT_TRUE(text.ok());
    gzFile gz = gzopen(absl::StrCat(dir, "/", split, ".jsonl.gz").c_str(), "wb");
    gzwrite(gz, text->data(), text->size());
    gzclose(gz);
  }
  const std::string out = testing::ScratchDir("corpus_gz_out");
  CorpusBuildOptions o = Options(dir, out);
  o.train_inputs = dir + "/train.jsonl.gz";
  o.val_inputs = dir + "/val.jsonl.gz";
  ASSERT_TRUE(BuildCorpusDatasets(o).ok());
  const auto a = Snapshot(out), b = Snapshot(*built_);
  int shards = 0;
  for (const auto& [name, bytes] : b) {
    if (fs::path(name).extension() != ".bin") continue;
    ++shards;
    EXPECT_TRUE(a.at(name) == bytes) << name;
  }
  EXPECT_GT(shards, 6);
}

TEST_F(CorpusBuilderTest, AnInterruptedBuildResumesFromItsFinishedUnits) {
  // What a build killed before its commit leaves: finished units in the
  // staging directory of each setting, one of them (train unit 1) not written.
  const std::string out = testing::ScratchDir("corpus_resume");
  for (const char* setting : {"chameleon", "transfusion", "trimodal"}) {
    const std::string staging = absl::StrCat(out, "/.staging-", setting);
    fs::copy(absl::StrCat(*built_, "/", setting), staging, fs::copy_options::recursive);
    fs::remove(staging + "/train/shard-00001.bin");
    fs::remove(staging + "/train/shard-00001.json");
    fs::remove(staging + "/manifest.json");
  }
  struct stat before;
  ASSERT_EQ(stat((out + "/.staging-trimodal/train/shard-00002.bin").c_str(), &before), 0);
  ASSERT_TRUE(BuildCorpusDatasets(Options(*corpus_, out)).ok());
  EXPECT_TRUE(Snapshot(out) == Snapshot(*built_));
  struct stat after;
  ASSERT_EQ(stat((out + "/trimodal/train/shard-00002.bin").c_str(), &after), 0);
  EXPECT_EQ(before.st_ino, after.st_ino);  // kept, not rewritten
  EXPECT_EQ(before.st_mtim.tv_nsec, after.st_mtim.tv_nsec);
}

TEST_F(CorpusBuilderTest, AppendKeepsTheTokenizersAndReusesUnchangedUnits) {
  const std::string out = testing::ScratchDir("corpus_append");
  CorpusBuildOptions o = Options(*corpus_, out);
  o.settings = {Setting::kChameleon};
  ASSERT_TRUE(BuildCorpusDatasets(o).ok());
  absl::StatusOr<DatasetManifest> first = ReadDatasetManifest(out + "/chameleon");
  ASSERT_TRUE(first.ok());
  struct stat before;
  ASSERT_EQ(stat((out + "/chameleon/train/shard-00000.bin").c_str(), &before), 0);

  // One more document, in a second train file.
  const std::string more = *corpus_ + "/more.jsonl";
  ASSERT_TRUE(WriteFileAtomic(more, "[{\"text\": \"one more\"}, {\"image\": \"media/train-001.png\"}]\n").ok());
  o.train_inputs = *corpus_ + "/train.jsonl," + more;
  o.append = true;
  absl::StatusOr<std::vector<DatasetManifest>> second = BuildCorpusDatasets(o);
  ASSERT_TRUE(second.ok()) << second.status();
  fs::remove(more);
  const DatasetManifest& m = (*second)[0];
  EXPECT_EQ(m.tokenizers.at("image_vq").sha256, first->tokenizers.at("image_vq").sha256);
  EXPECT_EQ(m.splits.at("train").items.at("documents"),
            first->splits.at("train").items.at("documents") + 1);
  struct stat after;
  ASSERT_EQ(stat((out + "/chameleon/train/shard-00000.bin").c_str(), &after), 0);
  EXPECT_EQ(before.st_ino, after.st_ino);  // the old shard, linked over
}

// --append encodes new documents with the kept tokenizers, so it refuses a
// codebook that another code version trained, and says what to do instead.
TEST_F(CorpusBuilderTest, AppendRefusesATokenizerOfAnotherCodeVersion) {
  const std::string out = testing::ScratchDir("corpus_append_version");
  CorpusBuildOptions o = Options(*corpus_, out);
  o.settings = {Setting::kChameleon};
  ASSERT_TRUE(BuildCorpusDatasets(o).ok());
  const std::string codebook = out + "/chameleon/" + kImageVqFile;
  absl::StatusOr<SafetensorsFile> file = LoadSafetensors(codebook);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(file->metadata.at("code_version"), kImageVqVersion);
  file->metadata["code_version"] = "image-vq/0";
  ASSERT_TRUE(
      SaveSafetensors(codebook, {{"centroids", &file->tensors.at("centroids")}}, file->metadata)
          .ok());
  o.append = true;
  absl::StatusOr<std::vector<DatasetManifest>> again = BuildCorpusDatasets(o);
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(again.status().message().find(codebook), std::string::npos) << again.status();
  EXPECT_NE(again.status().message().find("code version image-vq/0, this build is image-vq/1"),
            std::string::npos)
      << again.status();
  EXPECT_NE(again.status().message().find("without --append"), std::string::npos)
      << again.status();
}

// One bad line appended to the train file.
struct BadCase {
  std::string name;
  std::string line;       // the bad document
  std::string expected;   // in the error, after "FILE:LINE: "
};

TEST_F(CorpusBuilderTest, BadInputNamesFileAndLineOrIsSkippedAndListed) {
  const std::string dir = testing::ScratchDir("corpus_bad");
  fs::create_symlink(*corpus_ + "/media", dir + "/media");
  testing::CopyDamaged(*corpus_ + "/media/train-001.png", dir + "/broken.png", 30);
  {
    // A FLAC copy of a recording, cut short.
    absl::StatusOr<Audio> audio = ReadAudioFile(*corpus_ + "/media/train-002.wav");
    ASSERT_TRUE(audio.ok());
    SF_INFO info{};
    info.samplerate = audio->sample_rate;
    info.channels = 1;
    info.format = SF_FORMAT_FLAC | SF_FORMAT_PCM_16;
    SNDFILE* f = sf_open((dir + "/full.flac").c_str(), SFM_WRITE, &info);
    ASSERT_NE(f, nullptr);
    sf_write_float(f, audio->samples.data(), static_cast<sf_count_t>(audio->samples.size()));
    sf_close(f);
    testing::CopyDamaged(dir + "/full.flac", dir + "/truncated.flac",
                         static_cast<long>(fs::file_size(dir + "/full.flac") / 2));
  }
  ASSERT_TRUE(WriteFileAtomic(dir + "/val.jsonl", *ReadFile(*corpus_ + "/val.jsonl")).ok());
  const std::vector<BadCase> cases = {
      {"malformed JSON", R"([{"text": "a"})", "malformed JSON at column"},
      {"invalid UTF-8", "[{\"text\": \"caf\xe9\"}]", "invalid UTF-8 at byte offset 14"},
      {"missing path", R"([{"image": "media/nowhere.png"}])", "media/nowhere.png: no such file"},
      {"unreadable image", R"([{"text": "a"}, {"image": "broken.png"}])", "broken.png: corrupt or truncated PNG"},
      {"truncated audio", R"([{"audio": "truncated.flac"}])", "truncated.flac"},
      {"token out of range", R"([{"tokens": [3, 99], "modality": "image"}])",
       "image token 99 is outside 0..15 (--image_codes)"},
      {"held-out content", R"([{"image": "media/val-001.png"}])", "repeats the image of val"},
  };
  const std::string out = testing::ScratchDir("corpus_bad_out");
  CorpusBuildOptions o = Options(dir, out);
  // A dataset already in place, which no failed build may touch.
  ASSERT_TRUE(BuildCorpusDatasets(Options(*corpus_, out)).ok());
  const auto before = Snapshot(out);
  const std::string train = *ReadFile(*corpus_ + "/train.jsonl");
  for (const BadCase& c : cases) {
    SCOPED_TRACE(c.name);
    ASSERT_TRUE(WriteFileAtomic(dir + "/train.jsonl", train + c.line + "\n").ok());
    const std::string where = dir + "/train.jsonl:25: ";
    o.skip_bad = false;
    absl::StatusOr<std::vector<DatasetManifest>> failed = BuildCorpusDatasets(o);
    ASSERT_FALSE(failed.ok());
    EXPECT_NE(failed.status().message().find(where), std::string::npos) << failed.status();
    EXPECT_NE(failed.status().message().find(c.expected), std::string::npos) << failed.status();
    EXPECT_NE(failed.status().message().find("--skip_bad"), std::string::npos);
    EXPECT_TRUE(Snapshot(out) == before);

    o.skip_bad = true;
    absl::StatusOr<std::vector<DatasetManifest>> skipped = BuildCorpusDatasets(o);
    ASSERT_TRUE(skipped.ok()) << skipped.status();
    for (const DatasetManifest& m : *skipped) {
      const SplitStats& s = m.splits.at("train");
      EXPECT_EQ(s.items.at("skipped_bad"), 1) << m.setting;
      ASSERT_EQ(s.skipped.size(), 1u) << m.setting;
      EXPECT_NE(s.skipped[0].find(where), std::string::npos) << s.skipped[0];
      EXPECT_NE(s.skipped[0].find(c.expected), std::string::npos) << s.skipped[0];
    }
    ASSERT_TRUE(BuildCorpusDatasets(Options(*corpus_, out)).ok());  // back to `before`
  }
}

TEST_F(CorpusBuilderTest, AnEmptySplitOrModalityIsAnErrorNamingTheRule) {
  const std::string out = testing::ScratchDir("corpus_empty");
  CorpusBuildOptions o = Options(*corpus_, out);
  o.val_inputs.clear();
  o.val_fraction = 1e-9;
  absl::StatusOr<std::vector<DatasetManifest>> no_val = BuildCorpusDatasets(o);
  ASSERT_FALSE(no_val.ok());
  EXPECT_NE(no_val.status().message().find("split val has no documents (split rule: "
                                           "--val_fraction=1e-09 of --train="),
            std::string::npos)
      << no_val.status();

  const std::string text_only = testing::ScratchDir("corpus_text_only");
  for (const char* split : {"train", "val"}) {
    ASSERT_TRUE(WriteFileAtomic(absl::StrCat(text_only, "/", split, ".jsonl"),
                                "[{\"text\": \"words\"}]\n[{\"tokens\": [1], \"modality\": \"image\"}]\n")
                    .ok());
  }
  o = Options(text_only, out);
  o.settings = {Setting::kTransfusion};  // pre-tokenized images cannot be continuous patches
  absl::StatusOr<std::vector<DatasetManifest>> no_images = BuildCorpusDatasets(o);
  ASSERT_FALSE(no_images.ok());
  EXPECT_NE(no_images.status().message().find("transfusion split train ("), std::string::npos)
      << no_images.status();
  EXPECT_NE(no_images.status().message().find("has no image tokens"), std::string::npos);
  EXPECT_TRUE(Snapshot(out).empty());
}

}  // namespace
}  // namespace modamba::data
