#include "tools/data/data_command.h"

#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "core/data/test_util.h"
#include "gtest/gtest.h"

namespace modamba {
namespace {

namespace fs = std::filesystem;

int RunData(std::vector<std::string> args) {
  args.insert(args.begin(), "data");
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  return RunDataCommand(static_cast<int>(argv.size()), argv.data());
}

TEST(DataCommandTest, UsageErrorsNameTheProblem) {
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(RunData({"build", "--out=/tmp/x", "--seq_length=5"}), 2);
  EXPECT_NE(::testing::internal::GetCapturedStderr().find(
                "unknown flag '--seq_length'; did you mean '--seq_len'?"),
            std::string::npos);
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(RunData({"build", "--seq_len=5"}), 2);
  EXPECT_NE(::testing::internal::GetCapturedStderr().find("--out=DIR is required"),
            std::string::npos);
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(RunData({"build", "--out=/tmp/x", "--seq_len=many"}), 2);
  EXPECT_NE(::testing::internal::GetCapturedStderr().find("--seq_len=many: expected N"),
            std::string::npos);
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(RunData({"build", "--out=/tmp/x", "--setting=dalle"}), 2);
  EXPECT_NE(::testing::internal::GetCapturedStderr().find("unknown setting 'dalle'"),
            std::string::npos);
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(RunData({"frobnicate"}), 2);
  EXPECT_NE(::testing::internal::GetCapturedStderr().find("unknown subcommand 'frobnicate'"),
            std::string::npos);
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(RunData({"biuld"}), 2);
  EXPECT_NE(::testing::internal::GetCapturedStderr().find("did you mean 'build'?"),
            std::string::npos);
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(RunData({"inspect"}), 2);
  ::testing::internal::GetCapturedStderr();
}

TEST(DataCommandTest, MissingRawDirectorySaysHowToGetIt) {
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(RunData({"build", "--out=/tmp/x", "--raw=/nonexistent/raw"}), 1);
  EXPECT_NE(::testing::internal::GetCapturedStderr().find("/nonexistent/raw"), std::string::npos);
}

TEST(DataCommandTest, BuildsAndInspectsASlice) {
  const std::string raw = data::testing::RawDataDirOrEmpty();
  if (raw.empty()) GTEST_SKIP() << "raw data not found";
  const std::string out = data::testing::ScratchDir("command_build");
  ::testing::internal::CaptureStdout();
  ASSERT_EQ(RunData({"build", "--raw=" + raw, "--out=" + out, "--setting=trimodal", "--seq_len=512",
                 "--image_codes=32", "--speech_units=16", "--kmeans_iterations=3",
                 "--limit_mnist_train=500", "--limit_mnist_val=100", "--limit_fsdd_train=40",
                 "--limit_fsdd_val=20", "--limit_cathy_train=3", "--limit_cathy_val=2",
                 "--limit_text_train=5000", "--limit_text_val=2000"}),
            0);
  const std::string built = ::testing::internal::GetCapturedStdout();
  EXPECT_NE(built.find("setting trimodal: seq_len 512, vocab 311"), std::string::npos) << built;
  EXPECT_NE(built.find("wrote " + out + "/trimodal ("), std::string::npos) << built;

  // Decode val sequences until one holds speech: PNGs and WAVs appear.
  const std::string decoded = out + "/decoded";
  bool wav = false, png = false;
  for (int sample = 0; sample < 10 && !wav; ++sample) {
    ::testing::internal::CaptureStdout();
    ASSERT_EQ(RunData({"inspect", out + "/trimodal", "--sample=" + std::to_string(sample),
                   "--decode_dir=" + decoded, "--griffin_lim_iterations=4"}),
              0);
    const std::string text = ::testing::internal::GetCapturedStdout();
    EXPECT_NE(text.find("sequence " + std::to_string(sample) + " of val"), std::string::npos);
    for (const auto& e : fs::directory_iterator(decoded)) {
      wav |= e.path().extension() == ".wav";
      png |= e.path().extension() == ".png";
    }
  }
  EXPECT_TRUE(wav);
  EXPECT_TRUE(png);
}

TEST(DataCommandTest, ExportsTheDigitsWorldAndBuildsItAsACorpus) {
  const std::string raw = data::testing::RawDataDirOrEmpty();
  if (raw.empty()) GTEST_SKIP() << "raw data not found";
  const std::string dir = data::testing::ScratchDir("command_export");
  const std::string corpus = dir + "/digits";
  const std::vector<std::string> limits = {
      "--limit_mnist_train=300", "--limit_mnist_val=60", "--limit_fsdd_train=20",
      "--limit_fsdd_val=10",     "--limit_cathy_train=2", "--limit_cathy_val=1",
      "--limit_text_train=3000", "--limit_text_val=1000"};
  std::vector<std::string> args = {"export-digits", "--raw=" + raw, "--out=" + corpus, "--seq_len=256"};
  args.insert(args.end(), limits.begin(), limits.end());
  ::testing::internal::CaptureStdout();
  ASSERT_EQ(RunData(args), 0);
  EXPECT_NE(::testing::internal::GetCapturedStdout().find("build it: modamba data build --train="),
            std::string::npos);
  EXPECT_TRUE(fs::exists(corpus + "/images/train/00299.png"));
  EXPECT_TRUE(fs::exists(corpus + "/audio/cathy"));
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(RunData(args), 1);  // never over an existing directory
  EXPECT_NE(::testing::internal::GetCapturedStderr().find("exists"), std::string::npos);

  ::testing::internal::CaptureStdout();
  ::testing::internal::CaptureStderr();
  ASSERT_EQ(RunData({"build", "--train=" + corpus + "/train.jsonl", "--val=" + corpus + "/val.jsonl",
                     "--out=" + dir + "/out", "--seq_len=256", "--image_codes=32",
                     "--speech_units=16", "--kmeans_iterations=3", "--setting=chameleon,trimodal"}),
            0);
  const std::string built = ::testing::internal::GetCapturedStdout();
  const std::string progress = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(built.find("setting trimodal: seq_len 256, vocab 311"), std::string::npos) << built;
  EXPECT_NE(built.find("left_out_speech_documents"), std::string::npos) << built;
  EXPECT_NE(progress.find("encode train [##############################] 100%"), std::string::npos)
      << progress;
}

TEST(DataCommandTest, CorpusFlagsAreChecked) {
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(RunData({"build", "--train=/nonexistent/*.jsonl", "--val_fraction=0.1", "--out=/tmp/x"}), 1);
  EXPECT_NE(::testing::internal::GetCapturedStderr().find("'/nonexistent/*.jsonl' matches no file"),
            std::string::npos);
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(RunData({"build", "--train=a.jsonl", "--out=/tmp/x"}), 1);
  EXPECT_NE(::testing::internal::GetCapturedStderr().find("--val=GLOBS or as --val_fraction"),
            std::string::npos);
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(RunData({"build", "--out=/tmp/x", "--fsdd_val_takes=4-0"}), 2);
  EXPECT_NE(::testing::internal::GetCapturedStderr().find("--fsdd_val_takes: expected A-B with A <= B"),
            std::string::npos);
}

}  // namespace
}  // namespace modamba
