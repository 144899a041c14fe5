#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tools/cli/artifacts.h"
#include "tools/cli/flags.h"
#include "tools/cli/progress.h"

namespace modamba::cli {
namespace {

struct Parsed {
  std::optional<int> exit;
  std::string out, err;
};

Parsed Parse(FlagSet* flags, std::vector<std::string> args, std::vector<std::string>* positional) {
  args.insert(args.begin(), "cmd");
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  ::testing::internal::CaptureStdout();
  ::testing::internal::CaptureStderr();
  Parsed p;
  p.exit = flags->Parse(argv.size(), argv.data(), 1, positional);
  p.out = ::testing::internal::GetCapturedStdout();
  p.err = ::testing::internal::GetCapturedStderr();
  return p;
}

TEST(FlagSetTest, ParsesAndPrintsHelpWithDefaults) {
  std::string out = "a.txt";
  int steps = 10;
  double lr = 0.5;
  bool watch = false;
  FlagSet flags("modamba thing", "ARG [flags]", "Does a thing.", "modamba thing x --steps=3");
  flags.String("out", &out, "FILE", "where it goes");
  flags.Int("steps", &steps, "how many");
  flags.Double("lr", &lr, "how fast");
  flags.Bool("watch", &watch, "follow it");
  std::vector<std::string> positional;
  Parsed p = Parse(&flags, {"x", "--steps=3", "--watch", "--lr=0.25", "y"}, &positional);
  EXPECT_FALSE(p.exit.has_value()) << p.err;
  EXPECT_EQ(steps, 3);
  EXPECT_TRUE(watch);
  EXPECT_EQ(lr, 0.25);
  EXPECT_EQ(positional, (std::vector<std::string>{"x", "y"}));

  FlagSet fresh("modamba thing", "ARG [flags]", "Does a thing.", "modamba thing x --steps=3");
  int n = 7;
  std::string empty;
  fresh.Int("steps", &n, "how many");
  fresh.String("dir", &empty, "DIR", "somewhere");
  p = Parse(&fresh, {"--help"}, nullptr);
  EXPECT_EQ(p.exit, 0);
  EXPECT_TRUE(absl::StrContains(p.out, "usage: modamba thing ARG [flags]\nDoes a thing.\n")) << p.out;
  EXPECT_TRUE(absl::StrContains(p.out, "--steps=N  how many (default: 7)")) << p.out;
  EXPECT_TRUE(absl::StrContains(p.out, "--dir=DIR  somewhere (default: none)")) << p.out;
  EXPECT_TRUE(absl::StrContains(p.out, "example:\n  modamba thing x --steps=3\n")) << p.out;
}

TEST(FlagSetTest, RefusesWithTheNearestName) {
  int steps = 0;
  std::string checkpoint;
  FlagSet flags("modamba thing", "[flags]", "Does a thing.", "modamba thing");
  flags.Int("steps", &steps, "how many");
  flags.String("checkpoint", &checkpoint, "DIR", "which");
  Parsed p = Parse(&flags, {"--chekpoint=a"}, nullptr);
  EXPECT_EQ(p.exit, 2);
  EXPECT_TRUE(absl::StrContains(p.err, "unknown flag '--chekpoint'; did you mean '--checkpoint'?"))
      << p.err;
  EXPECT_TRUE(absl::StrContains(p.err, "modamba thing --help")) << p.err;
  p = Parse(&flags, {"--steps=many"}, nullptr);
  EXPECT_EQ(p.exit, 2);
  EXPECT_TRUE(absl::StrContains(p.err, "--steps=many: expected N")) << p.err;
  p = Parse(&flags, {"--steps"}, nullptr);
  EXPECT_EQ(p.exit, 2);
  EXPECT_TRUE(absl::StrContains(p.err, "--steps needs a value")) << p.err;
  p = Parse(&flags, {"stray"}, nullptr);
  EXPECT_EQ(p.exit, 2);
  EXPECT_TRUE(absl::StrContains(p.err, "unexpected argument 'stray'")) << p.err;
  p = Parse(&flags, {"--zzzzzzz=1"}, nullptr);
  EXPECT_TRUE(absl::StrContains(p.err, "(one of: --steps --checkpoint)")) << p.err;
}

TEST(FlagSetTest, RequiredFlags) {
  std::string out;
  FlagSet flags("modamba thing", "--out=FILE", "Does a thing.", "modamba thing --out=x");
  flags.String("out", &out, "FILE", "where it goes");
  flags.Require("out");
  Parsed p = Parse(&flags, {}, nullptr);
  EXPECT_EQ(p.exit, 2);
  EXPECT_TRUE(absl::StrContains(p.err, "--out=FILE is required")) << p.err;
  p = Parse(&flags, {"--help"}, nullptr);
  EXPECT_TRUE(absl::StrContains(p.out, "--out=FILE  where it goes (required)\n")) << p.out;
  p = Parse(&flags, {"--out=x"}, nullptr);
  EXPECT_FALSE(p.exit.has_value());
  EXPECT_EQ(out, "x");
}

TEST(NearestTest, EditDistance) {
  EXPECT_EQ(EditDistance("train", "trian"), 2);
  EXPECT_EQ(EditDistance("", "abc"), 3);
  EXPECT_EQ(EditDistance("kitten", "sitting"), 3);
  const std::vector<std::string> commands = {"train", "status", "watch", "export", "eval"};
  EXPECT_EQ(Nearest("trian", commands), "train");
  EXPECT_EQ(Nearest("staus", commands), "status");
  EXPECT_EQ(Nearest("expor", commands), "export");
  EXPECT_EQ(Nearest("frobnicate", commands), "");
  EXPECT_EQ(UnknownName("command", "evla", commands).message(),
            "unknown command 'evla'; did you mean 'eval'?");
}

TEST(ProgressBarTest, PlainLinesEveryNSteps) {
  std::ostringstream out;
  ProgressBar bar(out, /*terminal=*/false, 5);
  for (int step = 1; step <= 12; ++step) {
    ProgressUpdate u;
    u.step = step;
    u.total = 12;
    u.tokens_per_s = 1500;
    u.losses = {{"text", 2.5}, {"image", 3.25}};
    bar.Show(u);
  }
  bar.Finish();
  const std::string s = out.str();
  EXPECT_TRUE(absl::StrContains(s, "[##.....")) << s;
  EXPECT_TRUE(absl::StrContains(s, "step 1/12  1500 tok/s  ETA --:--  image 3.2500, text 2.5000\n"))
      << s;
  EXPECT_TRUE(absl::StrContains(s, "step 6/12  1500 tok/s  ")) << s;
  EXPECT_TRUE(absl::StrContains(s, " ms/step  ETA ")) << s;
  EXPECT_TRUE(absl::StrContains(s, "100%  step 12/12")) << s;
  EXPECT_FALSE(absl::StrContains(s, "step 2/12")) << s;
  EXPECT_FALSE(absl::StrContains(s, "\r")) << s;
}

TEST(ProgressBarTest, RedrawnOnATerminalWithNotesAbove) {
  std::ostringstream out;
  ProgressBar bar(out, /*terminal=*/true, 5);
  ProgressUpdate u;
  u.total = 4;
  u.step = 1;
  u.state = "RUNNING";
  bar.Show(u);
  bar.Note("checkpoint step-1");
  u.step = 2;
  bar.Show(u);
  bar.Finish();
  EXPECT_EQ(out.str().substr(0, 10), "\rRUNNING [");
  // The note replaces the bar's line and the bar is drawn again below it.
  EXPECT_TRUE(absl::StrContains(out.str(), "\rcheckpoint step-1")) << out.str();
  EXPECT_TRUE(absl::StrContains(out.str(), "\nRUNNING [#######.......................]  25%"))
      << out.str();
  EXPECT_TRUE(absl::StrContains(out.str(), "\rRUNNING [###############...............]  50%"))
      << out.str();
  EXPECT_EQ(out.str().back(), '\n');
}

TEST(ArtifactsTest, SizeFromDisk) {
  EXPECT_EQ(FormatBytes(812), "812 B");
  EXPECT_EQ(FormatBytes(3482), "3.4 KiB");
  EXPECT_EQ(FormatBytes(12 << 20), "12.0 MiB");
  const char* tmp = std::getenv("TEST_TMPDIR");
  const std::string path = absl::StrCat(tmp != nullptr ? tmp : "/tmp", "/artifact.txt");
  FILE* f = fopen(path.c_str(), "w");
  fputs("hello", f);
  fclose(f);
  std::ostringstream out;
  PrintArtifact(out, path, "a greeting");
  EXPECT_EQ(out.str(), "wrote " + path + " (5 B): a greeting\n");
  std::ostringstream missing;
  PrintArtifact(missing, path + ".no", "nothing");
  EXPECT_TRUE(absl::StrContains(missing.str(), "(missing)"));
}

}  // namespace
}  // namespace modamba::cli
