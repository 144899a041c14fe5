// `modamba train` as a user runs it: its flags, its progress (a terminal and
// a log file), and a run directory that `modamba compare` draws.
#include "tools/train_command.h"

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "core/checkpoint.h"
#include "core/file_util.h"
#include "gtest/gtest.h"
#include "tools/compare/compare.h"

namespace modamba {
namespace {

class TrainCommandTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* tmp = std::getenv("TEST_TMPDIR");
    root_ = absl::StrCat(tmp != nullptr ? tmp : "/tmp", "/train_command_",
                         ::testing::UnitTest::GetInstance()->current_test_info()->name());
    ASSERT_TRUE(MakeDirs(root_).ok());
    std::ofstream text(root_ + "/text.txt");
    for (int i = 0; i < 300; ++i) text << "all the world's a stage, " << i % 11 << " and all\n";
    text.close();
    ASSERT_TRUE(WriteFileAtomic(root_ + "/tiny.textproto", absl::StrCat(R"pb(
      model { d_model: 16 n_layer: 1 vocab_size: 256 d_state: 4 }
      optimizer { lr: 1e-2 }
      steps: 6 batch_size: 2 seq_len: 32 seed: 2
      log_every: 2 eval_every: 3 eval_batches: 1 checkpoint_every: 3
      text_path: ")pb", root_, "/text.txt\"\n")).ok());
  }

  // `modamba train ARGS...`; what it printed in `out`.
  int Train(std::vector<std::string> args, bool terminal, std::string* out) {
    args.insert(args.begin(), "train");
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    std::ostringstream captured;
    const int code = RunTrainCommand(argv.size(), argv.data(), captured, terminal);
    *out = captured.str();
    return code;
  }

  std::string root_;
};

TEST_F(TrainCommandTest, WritesARunDirectoryThatCompareDraws) {
  const std::string run = root_ + "/run";
  std::string out;
  ASSERT_EQ(Train({"--config=" + root_ + "/tiny.textproto", "--checkpoint_dir=" + run,
                   "--device=cpu"}, false, &out), 0) << out;
  EXPECT_TRUE(absl::StrContains(out, "wrote " + run + "/metrics.jsonl (")) << out;
  EXPECT_TRUE(absl::StrContains(out, "wrote " + run + "/config.textproto (")) << out;
  EXPECT_TRUE(absl::StrContains(out, "wrote " + run + "/step-00000006 (")) << out;
  auto metrics = ReadFile(run + "/metrics.jsonl");
  ASSERT_TRUE(metrics.ok());
  EXPECT_EQ(std::vector<std::string>(absl::StrSplit(*metrics, '\n', absl::SkipEmpty())).size(), 6u);
  EXPECT_TRUE(absl::StrContains(*metrics, "\"val\":{\"objective\"")) << *metrics;

  auto loaded = LoadRun(run);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->val.size(), 2u);  // steps 3 and 6
  std::vector<std::pair<std::string, std::string>> charts;
  auto md = Compare({run}, root_ + "/compare", &charts);
  ASSERT_TRUE(md.ok()) << md.status();
  ASSERT_FALSE(charts.empty()) << *md;
  EXPECT_TRUE(FileExists(charts[0].first));
}

TEST_F(TrainCommandTest, PlainProgressLinesWhenNotATerminal) {
  std::string out;
  ASSERT_EQ(Train({"--config=" + root_ + "/tiny.textproto", "--checkpoint_dir=" + root_ + "/run"},
                  false, &out), 0) << out;
  EXPECT_FALSE(absl::StrContains(out, "\r")) << out;
  int lines = 0;
  for (absl::string_view line : absl::StrSplit(out, '\n')) {
    if (!absl::StrContains(line, "] ")) continue;
    ++lines;
    EXPECT_TRUE(absl::StrContains(line, " tok/s")) << line;
    EXPECT_TRUE(absl::StrContains(line, "ETA ")) << line;
    EXPECT_TRUE(absl::StrContains(line, "text ")) << line;  // the per-modality loss
  }
  EXPECT_EQ(lines, 4) << out;  // steps 1, 3, 5 (every 2) and the last, 6
  EXPECT_TRUE(absl::StrContains(out, "ms/step")) << out;
  EXPECT_TRUE(absl::StrContains(out, "step 6/6")) << out;
  EXPECT_TRUE(absl::StrContains(out, "step 3: validation text ")) << out;
}

TEST_F(TrainCommandTest, ABarRedrawnInPlaceOnATerminal) {
  std::string out;
  ASSERT_EQ(Train({"--config=" + root_ + "/tiny.textproto", "--checkpoint_dir=" + root_ + "/run"},
                  true, &out), 0) << out;
  EXPECT_TRUE(absl::StrContains(out, "\r[###############...............]  50%  step 3/6")) << out;
  EXPECT_TRUE(absl::StrContains(out, "\r[##############################] 100%  step 6/6")) << out;
  EXPECT_TRUE(absl::StrContains(out, "ms/step  ETA 0:00")) << out;
}

TEST_F(TrainCommandTest, FlagsFollowTheConvention) {
  std::string out;
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(Train({"--config=" + root_ + "/tiny.textproto", "--device=tpu"}, false, &out), 2);
  EXPECT_TRUE(absl::StrContains(::testing::internal::GetCapturedStderr(), "--device: gpu or cpu"));
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(Train({"--config=x", "--step=3"}, false, &out), 2);
  EXPECT_TRUE(absl::StrContains(::testing::internal::GetCapturedStderr(),
                                "unknown flag '--step'; did you mean '--steps'?"));
  ::testing::internal::CaptureStdout();
  EXPECT_EQ(Train({"--help"}, false, &out), 0);
  const std::string help = ::testing::internal::GetCapturedStdout();
  EXPECT_TRUE(absl::StrContains(help, "usage: modamba train --config=FILE [flags]")) << help;
  EXPECT_TRUE(absl::StrContains(help, "--device=gpu|cpu")) << help;
  EXPECT_TRUE(absl::StrContains(help, "(default: 0)")) << help;
  EXPECT_TRUE(absl::StrContains(help, "example:\n  modamba train --config=")) << help;
}

}  // namespace
}  // namespace modamba
