#include "tools/compare/compare.h"

#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "core/file_util.h"
#include "gtest/gtest.h"

namespace modamba {
namespace {

TEST(FlopsToReach, InterpolatesLinearlyBetweenEvaluations) {
  std::vector<EvalPoint> curve = {{10, 100, {{"text", 4.0}}}, {20, 200, {{"text", 3.0}}},
                                  {30, 300, {{"text", 2.0}}}};
  EXPECT_DOUBLE_EQ(*FlopsToReach(curve, "text", 2.5), 250);
  EXPECT_DOUBLE_EQ(*FlopsToReach(curve, "text", 3.0), 200);
  EXPECT_DOUBLE_EQ(*FlopsToReach(curve, "text", 5.0), 100);  // already there at the first point
  EXPECT_FALSE(FlopsToReach(curve, "text", 1.0).has_value());
  EXPECT_FALSE(FlopsToReach(curve, "image", 9.0).has_value());
}

// A run directory whose validation loss falls as a / flops, for a text corpus:
// a Mamba model (d8x1), or with `transformer` a Transformer (d16x2, routed:
// MoT); `flops_scale` multiplies its FLOPs, `tokens_per_s` (if > 0) is logged
// at every step but the first, which logs 1.
std::string WriteRun(const std::string& name, bool routed, int seed, double a,
                     bool transformer = false, double flops_scale = 1, double tokens_per_s = 0) {
  const std::string dir = absl::StrCat(std::getenv("TEST_TMPDIR"), "/", name);
  EXPECT_TRUE(MakeDirs(dir).ok());
  const char* r = routed ? "true" : "false";
  const std::string model =
      transformer ? absl::StrCat("architecture: TRANSFORMER d_model: 16 n_layer: 2 n_head: 1 "
                                 "vocab_size: 256 route_qkv: ", r, " route_attn_out: ", r,
                                 " route_ffn_in: ", r, " route_ffn_out: ", r, " route_norms: ", r)
                  : absl::StrCat("d_model: 8 n_layer: 1 vocab_size: 256 route_in: ", r,
                                 " route_x: ", r, " route_dt: ", r, " route_out: ", r);
  EXPECT_TRUE(WriteFileAtomic(dir + "/config.textproto",
                              absl::StrCat("model { ", model,
                                           " }\noptimizer { lr: 1e-3 }\nsteps: 4\nbatch_size: 1\n"
                                           "seq_len: 8\nseed: ", seed, "\ntext_path: \"t\"\n"))
                  .ok());
  std::string lines;
  for (int step = 1; step <= 4; ++step) {
    const std::string scalars =
        tokens_per_s > 0 ? absl::StrCat(",\"scalars\":{\"tokens_per_s\":", step == 1 ? 1.0 : tokens_per_s, "}")
                         : "";
    absl::StrAppend(&lines, "{\"step\":", step, ",\"flops\":", step * 100.0 * flops_scale,
                    ",\"loss\":{\"objective\":1}", scalars, ",\"val\":{\"text\":", a / step, "}}\n");
  }
  EXPECT_TRUE(WriteFileAtomic(dir + "/metrics.jsonl", lines).ok());
  return dir;
}

TEST(Compare, TableAndChartsFromRunDirectories) {
  // dense reaches 1.0 at 400 FLOPs; MoM with a = 2 reaches it at 200, with a = 2.5
  // between 200 (loss 1.25) and 300 (0.833): at 260.
  std::vector<std::string> runs = {WriteRun("dense", false, 1, 4.0), WriteRun("mom1", true, 1, 2.0),
                                   WriteRun("mom2", true, 2, 2.5)};
  const std::string out = absl::StrCat(std::getenv("TEST_TMPDIR"), "/out");
  auto md = Compare(runs, out);
  ASSERT_TRUE(md.ok()) << md.status();
  EXPECT_NE(md->find("| MoM | 2 | 57.5% [50.0, 65.0] |"), std::string::npos) << *md;
  EXPECT_NE(md->find("| dense | 1 | best 1.0000 at 100% |"), std::string::npos) << *md;
  for (const char* ext : {".svg", ".png"}) {
    EXPECT_TRUE(FileExists(out + "/text_d8x1_text" + ext)) << ext;
  }
  auto svg = ReadFile(out + "/text_d8x1_text.svg");
  ASSERT_TRUE(svg.ok());
  EXPECT_NE(svg->find("<polygon"), std::string::npos);  // the seed band
}

// Equal budgets, other shapes: dense Mamba, MoM, the dense Transformer (4%
// more FLOPs) and MoT form one group, labelled by shape, with a second table
// against the dense Transformer; a run of four times the FLOPs is another group.
TEST(Compare, GroupsByTrainingBudgetAcrossShapes) {
  std::vector<std::string> runs = {
      WriteRun("g_dense", false, 1, 4.0, false, 1, 1000), WriteRun("g_mom", true, 1, 2.0, false, 1, 800),
      WriteRun("g_tf", false, 1, 4.0, true, 1.04, 2000), WriteRun("g_mot", true, 1, 2.0, true, 1.04, 1500),
      WriteRun("g_big", false, 1, 4.0, false, 4)};
  const std::string out = absl::StrCat(std::getenv("TEST_TMPDIR"), "/out4");
  auto md = Compare(runs, out);
  ASSERT_TRUE(md.ok()) << md.status();
  EXPECT_NE(md->find("## text d8x1+d16x2\n"), std::string::npos) << *md;
  EXPECT_NE(md->find("| dense d8x1 | 1 | best 1.0000 at 100% | 1000 |"), std::string::npos) << *md;
  EXPECT_NE(md->find("| MoM d8x1 | 1 | 50.0% | 800 (0.80x) |"), std::string::npos) << *md;
  // The dense Transformer reaches 1.0 at 416 FLOPs, MoT at 208: against dense Mamba's 400.
  EXPECT_NE(md->find("| dense Transformer d16x2 | 1 | 104.0% | 2000 (2.00x) |"), std::string::npos) << *md;
  EXPECT_NE(md->find("| MoT d16x2 | 1 | 52.0% | 1500 (1.50x) |"), std::string::npos) << *md;
  const size_t second = md->find("The Transformers against the dense Transformer:");
  ASSERT_NE(second, std::string::npos) << *md;
  EXPECT_NE(md->find("| dense Transformer d16x2 | 1 | best 1.0000 at 100% | 2000 |", second),
            std::string::npos) << *md;
  EXPECT_NE(md->find("| MoT d16x2 | 1 | 50.0% | 1500 (0.75x) |", second), std::string::npos) << *md;
  EXPECT_NE(md->find("## text d8x1\n"), std::string::npos) << *md;  // the big run, alone
  EXPECT_TRUE(FileExists(out + "/text_d8x1+d16x2_text.png"));
}

TEST(Compare, SaysHowManySeedsReachTheTarget) {
  // dense reaches 1.0; MoM seed 1 (a = 2) reaches it, seed 2 (a = 5, best 1.25) does not.
  auto md = Compare({WriteRun("s_dense", false, 1, 4.0), WriteRun("s_mom1", true, 1, 2.0),
                     WriteRun("s_mom2", true, 2, 5.0)},
                    absl::StrCat(std::getenv("TEST_TMPDIR"), "/out5"));
  ASSERT_TRUE(md.ok()) << md.status();
  EXPECT_NE(md->find("| MoM | 2 | 1 of 2 seeds reach it (best 0.8750 vs 1.0000) |"), std::string::npos)
      << *md;
}

TEST(Compare, TargetIsTheDenseRunsBestLossWhenItOverfits) {
  // dense: 4, 2, 1, 3 (best 1.0 at 300 FLOPs, then rising); MoM reaches 1.0 at 200.
  const std::string dense = WriteRun("overfit_dense", false, 1, 4.0);
  ASSERT_TRUE(WriteFileAtomic(dense + "/metrics.jsonl",
                              "{\"step\":1,\"flops\":100,\"val\":{\"text\":4}}\n"
                              "{\"step\":2,\"flops\":200,\"val\":{\"text\":2}}\n"
                              "{\"step\":3,\"flops\":300,\"val\":{\"text\":1}}\n"
                              "{\"step\":4,\"flops\":400,\"val\":{\"text\":3}}\n").ok());
  auto md = Compare({dense, WriteRun("overfit_mom", true, 1, 2.0)},
                    absl::StrCat(std::getenv("TEST_TMPDIR"), "/out3"));
  ASSERT_TRUE(md.ok()) << md.status();
  EXPECT_NE(md->find("| dense | 1 | best 1.0000 at 75% |"), std::string::npos) << *md;
  EXPECT_NE(md->find("| MoM | 1 | 66.7% |"), std::string::npos) << *md;
}

TEST(Compare, AResumedRunsRepeatedStepsCountOnce) {
  const std::string dir = WriteRun("resumed", true, 1, 4.0);
  // Interrupted after step 4, resumed from the checkpoint of step 2: steps 3
  // and 4 come again, and their later lines are the run's.
  auto lines = ReadFile(dir + "/metrics.jsonl");
  ASSERT_TRUE(lines.ok());
  ASSERT_TRUE(WriteFileAtomic(dir + "/metrics.jsonl",
                              *lines + "{\"step\":3,\"flops\":300,\"val\":{\"text\":1.5}}\n"
                                       "{\"step\":4,\"flops\":400,\"val\":{\"text\":0.5}}\n")
                  .ok());
  auto run = LoadRun(dir);
  ASSERT_TRUE(run.ok()) << run.status();
  ASSERT_EQ(run->val.size(), 4u);
  EXPECT_EQ(run->val[2].step, 3);
  EXPECT_EQ(run->val[2].loss.at("text"), 1.5);
  EXPECT_EQ(run->val[3].loss.at("text"), 0.5);
}

TEST(Compare, NamesWhatARunDirectoryNeeds) {
  const std::string dir = absl::StrCat(std::getenv("TEST_TMPDIR"), "/not_a_run");
  ASSERT_TRUE(MakeDirs(dir).ok());
  auto run = LoadRun(dir);
  ASSERT_FALSE(run.ok());
  EXPECT_NE(run.status().message().find("not a run directory (no config.textproto"),
            std::string::npos)
      << run.status();
}

TEST(Compare, MissingMetricsNamesTheFile) {
  const std::string dir = WriteRun("broken", false, 1, 4.0);
  ASSERT_TRUE(WriteFileAtomic(dir + "/metrics.jsonl", "{not json\n").ok());
  auto md = Compare({dir}, absl::StrCat(std::getenv("TEST_TMPDIR"), "/out2"));
  ASSERT_FALSE(md.ok());
  EXPECT_NE(md.status().message().find("metrics.jsonl:1"), std::string::npos) << md.status();
}

}  // namespace
}  // namespace modamba
