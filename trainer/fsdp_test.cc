// FSDP across real processes on loopback (Gloo): N ranks of modamba-trainer
// reproduce the single-rank run, resume on another number of ranks, and fail
// fast, naming the lost rank, when one dies.
#include <chrono>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "core/backend.h"
#include "core/checkpoint.h"
#include "core/file_util.h"
#include "gtest/gtest.h"
#include "trainer/launcher.h"
#include "trainer/synthetic_dataset.h"

namespace modamba {
namespace {

std::string Scratch(const std::string& name) {
  std::string dir = absl::StrCat(std::getenv("TEST_TMPDIR"), "/", name);
  EXPECT_TRUE(MakeDirs(dir).ok());
  return dir;
}

// A TrainConfig for a setting's synthetic dataset.
// `extra` is appended (e.g. an fsdp block).
// With `transformer`, Mixture-of-Transformers blocks instead of MoM's.
std::string WriteConfig(const std::string& dir, const std::string& setting, int steps,
                        const std::string& checkpoints, int batch_size = 4,
                        const std::string& extra = "", int n_layer = 2, bool transformer = false) {
  const std::string data = dir + "/data";
  EXPECT_TRUE(WriteSyntheticDataset(data, setting, 48, 48, 8).ok());
  const int modalities = setting == "trimodal" ? 3 : 2;
  const char* blocks =
      transformer ? "architecture: TRANSFORMER n_head: 2 route_qkv: true route_attn_out: true "
                    "route_ffn_in: true route_ffn_out: true route_norms: true"
                  : "d_state: 4 route_in: true route_x: true route_dt: true route_out: true";
  std::string text = absl::StrCat(
      "model { d_model: 16 n_layer: ", n_layer, " vocab_size: 1031 n_modalities: ", modalities,
      " ", blocks, setting == "transfusion" ? " patch_dim: 16" : "", " }\n",
      "optimizer { lr: 3e-3 warmup_steps: 2 }\n", "steps: ", steps, "\nbatch_size: ", batch_size, "\nseq_len: 48\n",
      "seed: 7\neval_every: 5\neval_batches: 1\ndataset_dir: \"", data, "\"\n");
  if (!checkpoints.empty()) absl::StrAppend(&text, "checkpoint_every: 4\ncheckpoint_dir: \"", checkpoints, "\"\n");
  absl::StrAppend(&text, extra);
  const std::string path = dir + "/train.textproto";
  EXPECT_TRUE(WriteFileAtomic(path, text).ok());
  return path;
}

struct RunResult {
  LaunchResult result;
  std::vector<nlohmann::json> steps;
};

RunResult Launch(int nproc, const std::string& config, const std::string& dir,
           std::vector<std::string> extra = {}) {
  const std::string metrics = dir + "/metrics.jsonl";
  std::remove(metrics.c_str());
  LaunchOptions o;
  o.nproc = nproc;
  o.command = {"trainer/modamba-trainer", "--config=" + config, "--metrics_out=" + metrics,
               "--peer_timeout_s=5"};
  o.command.insert(o.command.end(), extra.begin(), extra.end());
  o.log_dir = dir + "/logs";
  o.grace_period = absl::Seconds(60);  // let surviving ranks fail on their own
  RunResult run;
  auto result = Launch(o);
  EXPECT_TRUE(result.ok()) << result.status();
  if (result.ok()) run.result = *result;
  std::ifstream in(metrics);
  for (std::string line; std::getline(in, line);) run.steps.push_back(nlohmann::json::parse(line));
  return run;
}

// The objective of each step, which the ranks agree on.
std::vector<double> Objectives(const RunResult& run) {
  std::vector<double> out;
  for (const auto& s : run.steps) out.push_back(s["loss"]["objective"].get<double>());
  return out;
}

// (setting, Transformer blocks instead of Mamba's)
class FsdpSettings : public ::testing::TestWithParam<std::tuple<std::string, bool>> {};

TEST_P(FsdpSettings, TwoAndFourRanksReproduceOneRank) {
  const auto& [setting, transformer] = GetParam();
  const std::string name = setting + (transformer ? "_MoT" : "_MoM");
  const std::string dir = Scratch("ranks_" + name);
  const std::string config = WriteConfig(dir, setting, 20, "", 4, "", 2, transformer);
  std::vector<double> one = Objectives(Launch(1, config, Scratch("ranks_" + name + "/1")));
  ASSERT_EQ(one.size(), 20u);
  for (int n : {2, 4}) {
    RunResult run = Launch(n, config, Scratch(absl::StrCat("ranks_", name, "/", n)));
    EXPECT_EQ(run.result.exit_code, 0);
    std::vector<double> many = Objectives(run);
    ASSERT_EQ(many.size(), one.size()) << n << " ranks";
    double worst = 0;
    for (size_t i = 0; i < one.size(); ++i) {
      worst = std::max(worst, std::fabs(many[i] - one[i]) / std::fabs(one[i]));
    }
    // fp32: only the order of the sums differs between world sizes.
    EXPECT_LT(worst, 1e-5) << n << " ranks";
    std::printf("%s, %d ranks: worst relative loss difference over 20 steps %.2e\n",
                name.c_str(), n, worst);
    EXPECT_LT(one.back(), one.front());
  }
}

INSTANTIATE_TEST_SUITE_P(AllSettings, FsdpSettings,
                         ::testing::Combine(::testing::Values("chameleon", "transfusion",
                                                              "trimodal"),
                                            ::testing::Bool()));

TEST(Fsdp, SaveWithTwoRanksResumeWithThree) {
  const std::string dir = Scratch("reshard");
  // 6 sequences a step: 3 per rank on 2 ranks, 2 per rank on 3.
  const std::string straight = WriteConfig(dir + "/a", "trimodal", 12, dir + "/a/ckpt", 6);
  std::vector<double> reference = Objectives(Launch(2, straight, dir + "/a"));
  ASSERT_EQ(reference.size(), 12u);

  const std::string config = WriteConfig(dir + "/b", "trimodal", 12, dir + "/b/ckpt", 6);
  RunResult first = Launch(2, config, dir + "/b", {"--stop_after=6"});
  ASSERT_EQ(first.result.exit_code, 0);
  RunResult second = Launch(3, config, dir + "/b");
  ASSERT_EQ(second.result.exit_code, 0);
  std::vector<double> resumed = Objectives(second);
  ASSERT_EQ(resumed.size(), 6u);  // steps 7..12
  for (int i = 0; i < 6; ++i) {
    EXPECT_NEAR(resumed[i], reference[6 + i], 1e-5 * std::fabs(reference[6 + i])) << "step " << 7 + i;
  }
  // Written by two ranks and by three, both load whole.
  auto be = NewCpuBackend();
  for (int64_t step : {6, 12}) {
    auto model = LoadTrainedModel(CheckpointPath(dir + "/b/ckpt", step), be.get());
    EXPECT_TRUE(model.ok()) << model.status();
  }
}

// The step's gradient norm, which the ranks agree on.
std::vector<double> GradNorms(const RunResult& run) {
  std::vector<double> out;
  for (const auto& s : run.steps) out.push_back(s["scalars"]["grad_norm"].get<double>());
  return out;
}

TEST(Fsdp, OverlappedAndSerialSchedulesAgreeBitForBit) {
  const std::string dir = Scratch("schedules");
  // Two micro-batches per rank, so that reductions of one are in flight
  // while the next runs; three layers, so that two per bucket leave one alone.
  struct Schedule {
    std::string name, fsdp;
  };
  const std::vector<Schedule> schedules = {
      {"serial", "fsdp { overlap: false }\n"},
      {"overlap", "fsdp { overlap: true }\n"},
      {"overlap_2_layers", "fsdp { overlap: true layers_per_bucket: 2 }\n"},
      {"serial_2_layers", "fsdp { overlap: false layers_per_bucket: 2 }\n"},
  };
  std::vector<std::vector<double>> losses, norms;
  std::vector<std::string> shards;
  for (const Schedule& s : schedules) {
    const std::string run_dir = dir + "/" + s.name;
    const std::string config =
        WriteConfig(run_dir, "trimodal", 8, run_dir + "/ckpt", 8,
                    "grad_accum_steps: 2\n" + s.fsdp, /*n_layer=*/3);
    RunResult run = Launch(2, config, run_dir);
    ASSERT_EQ(run.result.exit_code, 0) << s.name;
    losses.push_back(Objectives(run));
    norms.push_back(GradNorms(run));
    ASSERT_EQ(losses.back().size(), 8u) << s.name;
    std::string both;
    for (int r = 0; r < 2; ++r) {
      auto shard = ReadFile(absl::StrCat(CheckpointPath(run_dir + "/ckpt", 8), "/",
                                         ShardFileName(r, 2)));
      ASSERT_TRUE(shard.ok()) << shard.status();
      both += *shard;
    }
    shards.push_back(both);
    // Every rank's profile of every step is there.
    for (const auto& step : run.steps) {
      ASSERT_TRUE(step.contains("profile")) << s.name;
      for (const char* key : {"step_ms", "compute_ms", "exposed_comm_ms", "idle_ms"}) {
        ASSERT_EQ(step["profile"][key].size(), 2u) << key;
        for (double ms : step["profile"][key]) EXPECT_GE(ms, 0) << key;
      }
    }
  }
  for (size_t i = 1; i < schedules.size(); ++i) {
    EXPECT_EQ(losses[i], losses[0]) << schedules[i].name << " vs serial";
    EXPECT_EQ(norms[i], norms[0]) << schedules[i].name << " vs serial";
    EXPECT_TRUE(shards[i] == shards[0]) << schedules[i].name << ": shards differ from serial";
  }
}

TEST(Fsdp, HybridTwoHostsOfTwoRanksMatchesPlainSharding) {
  const std::string dir = Scratch("hybrid");
  const std::string plain_config = WriteConfig(dir + "/plain", "chameleon", 10, "");
  std::vector<double> plain = Objectives(Launch(4, plain_config, dir + "/plain"));
  ASSERT_EQ(plain.size(), 10u);
  const std::string config = WriteConfig(dir + "/hybrid", "chameleon", 10, dir + "/hybrid/ckpt", 4,
                                         "fsdp { shard_group_size: 2 }\n");
  RunResult run = Launch(4, config, dir + "/hybrid");
  ASSERT_EQ(run.result.exit_code, 0);
  std::vector<double> hybrid = Objectives(run);
  ASSERT_EQ(hybrid.size(), plain.size());
  for (size_t i = 0; i < plain.size(); ++i) {
    // Only the order of the gradient sums differs.
    EXPECT_NEAR(hybrid[i], plain[i], 1e-5 * std::fabs(plain[i])) << "step " << i + 1;
  }
  // One group wrote the shards (two of them); the checkpoint loads whole.
  const std::string last = CheckpointPath(dir + "/hybrid/ckpt", 10);
  EXPECT_TRUE(ReadFile(last + "/" + ShardFileName(1, 2)).ok());
  auto be = NewCpuBackend();
  auto model = LoadTrainedModel(last, be.get());
  EXPECT_TRUE(model.ok()) << model.status();
}

// Four ranks, of which `killed` dies as `fault` says: the others fail on
// their own, naming it, within the timeout.
void ExpectKilledRankNamed(const std::string& name, int killed, std::vector<std::string> fault,
                           const std::string& extra_config = "") {
  const std::string dir = Scratch(name);
  const std::string config = WriteConfig(dir, "chameleon", 200, "", 4, extra_config);
  fault.push_back(absl::StrCat("--fault_kill_rank=", killed));
  auto start = std::chrono::steady_clock::now();
  RunResult run = Launch(4, config, dir, fault);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(run.result.first_failed_rank, killed);
  EXPECT_EQ(run.result.ranks[killed].code, 128 + 9);
  // 5 s peer timeout plus start-up; far less than the launcher's 60 s grace.
  EXPECT_LT(seconds, 45);
  for (int r = 0; r < 4; ++r) {
    if (r == killed) continue;
    EXPECT_NE(run.result.ranks[r].code, 0) << "rank " << r;
    EXPECT_FALSE(run.result.ranks[r].stopped_by_launcher) << "rank " << r << " had to be stopped";
    std::string log = *ReadFile(absl::StrCat(dir, "/logs/rank_", r, ".log"));
    EXPECT_NE(log.find(absl::StrCat("rank ", killed)), std::string::npos)
        << "rank " << r << " log:\n" << log;
  }
  std::printf("%s: the surviving ranks exited %.1f s after the launch\n", name.c_str(), seconds);
}

TEST(Fsdp, KilledRankIsNamedByTheOthersWithinTheTimeout) {
  ExpectKilledRankNamed("kill", 2, {"--fault_kill_step=3"});
}

// Two layers: three prefetches a step (forward: layers 1 and 2; backward:
// layer 1), so the 10th is the first of step 4, in flight when the rank dies.
TEST(Fsdp, RankKilledMidPrefetchIsNamedByTheOthersWithinTheTimeout) {
  ExpectKilledRankNamed("kill_prefetch", 1, {"--fault_kill_prefetch=10"});
}

// Hybrid: ranks {0, 1} and {2, 3} shard, {0, 2} and {1, 3} replicate; every
// group's errors name the job's rank 3, not its place in the group.
TEST(Fsdp, HybridRankKilledMidPrefetchIsNamedByItsJobRank) {
  ExpectKilledRankNamed("kill_hybrid", 3, {"--fault_kill_prefetch=10"},
                        "fsdp { shard_group_size: 2 }\n");
}

}  // namespace
}  // namespace modamba
