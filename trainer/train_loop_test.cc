#include "trainer/train_loop.h"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "core/checkpoint.h"
#include "core/config.h"
#include "core/file_util.h"
#include "gtest/gtest.h"

namespace modamba {
namespace {

std::string TmpDir(const std::string& name) {
  std::string dir = std::string(std::getenv("TEST_TMPDIR") ? std::getenv("TEST_TMPDIR") : "/tmp") +
                    "/" + name;
  EXPECT_TRUE(MakeDirs(dir).ok());
  return dir;
}

// A small byte corpus written by the test itself, for tests that don't
// depend on the raw data.
std::string WriteCorpus() {
  std::string path = TmpDir("corpus") + "/text.txt";
  std::ofstream out(path);
  for (int i = 0; i < 400; ++i) out << "the quick brown fox " << i % 17 << " jumps over the lazy dog.\n";
  return path;
}

constexpr char kMamba[] = "d_model: 16 n_layer: 2 vocab_size: 256 d_state: 4 route_in: true route_out: true";

v1::TrainConfig Config(const std::string& text, const std::string& ckpt, int steps,
                       const std::string& model = kMamba) {
  auto c = ParseTextProto<v1::TrainConfig>(absl::StrCat("model { ", model, " }", R"pb(
    optimizer { lr: 5e-3 warmup_steps: 3 }
    batch_size: 2
    seq_len: 24
    seed: 5
    eval_every: 4
    eval_batches: 2
    checkpoint_every: 3
  )pb"), "test");
  EXPECT_TRUE(c.ok());
  c->set_steps(steps);
  c->set_text_path(text);
  c->set_checkpoint_dir(ckpt);
  EXPECT_TRUE(ResolveTrainConfig(&*c, "test").ok());
  return *c;
}

// Stopped at step 5 and resumed, `model` logs the losses, gradient norms and
// FLOPs of the straight run bit for bit.
void ExpectResumeIsBitIdentical(const std::string& name, const std::string& model) {
  const std::string text = WriteCorpus();
  auto be = NewCpuBackend();
  TrainContext ctx;
  ctx.backend = be.get();
  auto straight = Train(Config(text, TmpDir(name + "_straight"), 10, model), ctx);
  ASSERT_TRUE(straight.ok()) << straight.status();

  const std::string dir = TmpDir(name + "_interrupted");
  TrainContext first = ctx;
  first.stop_after = 5;  // checkpoints at 3 and at the stop, 5
  ASSERT_TRUE(Train(Config(text, dir, 10, model), first).ok());
  auto rest = Train(Config(text, dir, 10, model), ctx);
  ASSERT_TRUE(rest.ok()) << rest.status();
  ASSERT_EQ(rest->size(), 5u);
  for (const StepRecord& r : *rest) {
    const StepRecord& s = (*straight)[r.step - 1];
    EXPECT_EQ(r.loss.total_sum(), s.loss.total_sum()) << "step " << r.step;
    EXPECT_EQ(r.grad_norm, s.grad_norm) << "step " << r.step;
    EXPECT_EQ(r.flops, s.flops) << "step " << r.step;
  }
}

TEST(TrainLoop, ResumeGivesBitIdenticalLosses) { ExpectResumeIsBitIdentical("mamba", kMamba); }

TEST(TrainLoop, TransformerResumeGivesBitIdenticalLosses) {
  ExpectResumeIsBitIdentical(
      "transformer", "architecture: TRANSFORMER d_model: 16 n_layer: 2 n_head: 2 vocab_size: 256 route_qkv: true "
      "route_ffn_out: true");
}

TEST(TrainLoop, RecomputedActivationsGiveBitIdenticalLosses) {
  const std::string text = WriteCorpus();
  auto be = NewCpuBackend();
  TrainContext ctx;
  ctx.backend = be.get();
  auto kept = Train(Config(text, TmpDir("kept"), 6), ctx);
  v1::TrainConfig c = Config(text, TmpDir("recomputed"), 6);
  c.set_recompute_activations(true);
  auto recomputed = Train(c, ctx);
  ASSERT_TRUE(kept.ok() && recomputed.ok());
  ASSERT_EQ(kept->size(), recomputed->size());
  for (size_t i = 0; i < kept->size(); ++i) {
    EXPECT_EQ((*kept)[i].loss.total_sum(), (*recomputed)[i].loss.total_sum()) << "step " << i + 1;
    EXPECT_EQ((*kept)[i].grad_norm, (*recomputed)[i].grad_norm) << "step " << i + 1;
  }
}

TEST(TrainLoop, TruncatedCheckpointIsAClearError) {
  const std::string text = WriteCorpus();
  const std::string dir = TmpDir("truncated");
  auto be = NewCpuBackend();
  TrainContext ctx;
  ctx.backend = be.get();
  ctx.stop_after = 3;
  ASSERT_TRUE(Train(Config(text, dir, 6), ctx).ok());
  const std::string weights = CheckpointPath(dir, 3) + "/shard-00000-of-00001.safetensors";
  std::string bytes = *ReadFile(weights);
  for (std::string damaged : {bytes.substr(0, bytes.size() / 2), bytes.substr(0, bytes.size() - 1) + "x"}) {
    ASSERT_TRUE(WriteFileAtomic(weights, damaged).ok());
    ctx.stop_after = 0;
    auto resumed = Train(Config(text, dir, 6), ctx);
    ASSERT_FALSE(resumed.ok());
    EXPECT_EQ(resumed.status().code(), absl::StatusCode::kDataLoss);
    EXPECT_NE(resumed.status().message().find("shard-00000-of-00001.safetensors"), std::string::npos)
        << resumed.status();
  }
  // The checkpoint directory is left as it was for a person to inspect.
  EXPECT_TRUE(FileExists(CheckpointPath(dir, 3) + "/manifest.json"));
}

// lr 10 without clipping: the loss turns non-finite within a few steps.
v1::TrainConfig Diverging(const std::string& text, const std::string& ckpt,
                          const std::string& policy) {
  v1::TrainConfig c = Config(text, ckpt, 40);
  c.mutable_optimizer()->set_lr(10);
  c.mutable_optimizer()->set_grad_clip(0);
  c.mutable_optimizer()->set_warmup_steps(0);
  c.set_checkpoint_every(1);
  c.set_on_nonfinite(policy);
  c.set_max_nonfinite_steps(3);
  return c;
}

// Every checkpoint left on disk loads, and LoadTrainedModel checks that its
// parameters are finite.
void ExpectFiniteCheckpoints(const std::string& dir) {
  auto be = NewCpuBackend();
  for (int64_t step : CheckpointSteps(dir)) {
    auto model = LoadTrainedModel(CheckpointPath(dir, step), be.get());
    EXPECT_TRUE(model.ok()) << model.status();
  }
}

TEST(TrainLoop, NonfiniteLossFailsNamingTheStepAndTheQuantity) {
  const std::string dir = TmpDir("nonfinite_fail");
  auto be = NewCpuBackend();
  TrainContext ctx;
  ctx.backend = be.get();
  auto r = Train(Diverging(WriteCorpus(), dir, "fail"), ctx);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(IsNonfiniteError(r.status())) << r.status();
  const std::string message(r.status().message());
  EXPECT_EQ(message.rfind("step ", 0), 0u) << message;
  EXPECT_TRUE(message.find("non-finite loss") != std::string::npos ||
              message.find("gradient norm") != std::string::npos)
      << message;
  EXPECT_NE(r.status().message().find("on_nonfinite: fail"), std::string::npos) << r.status();
  ExpectFiniteCheckpoints(dir);
}

TEST(TrainLoop, SkipAndRollbackStopAtTheLimitAndNeverCheckpointNonfiniteState) {
  for (const char* policy : {"skip_step", "rollback"}) {
    const std::string dir = TmpDir(std::string("nonfinite_") + policy);
    auto be = NewCpuBackend();
    std::ostringstream log;
    TrainContext ctx;
    ctx.backend = be.get();
    ctx.log = &log;
    auto r = Train(Diverging(WriteCorpus(), dir, policy), ctx);
    ASSERT_FALSE(r.ok()) << policy;
    EXPECT_TRUE(IsNonfiniteError(r.status())) << r.status();
    EXPECT_NE(r.status().message().find("max_nonfinite_steps (3)"), std::string::npos)
        << r.status();
    EXPECT_NE(log.str().find(std::string(policy) == "rollback" ? "rolled back to step"
                                                                : "step skipped"),
              std::string::npos)
        << log.str();
    ExpectFiniteCheckpoints(dir);
  }
}

TEST(TrainLoop, EvaluationRefusesNonfiniteWeights) {
  const std::string dir = TmpDir("nan_weights");
  auto be = NewCpuBackend();
  TrainContext ctx;
  ctx.backend = be.get();
  ASSERT_TRUE(Train(Config(WriteCorpus(), dir, 3), ctx).ok());
  // Poison the first float of the shard's first tensor and re-seal the
  // manifest, as a writer without the check would have.
  const std::string ckpt = CheckpointPath(dir, 3);
  const std::string shard = ckpt + "/shard-00000-of-00001.safetensors";
  std::string bytes = *ReadFile(shard);
  uint64_t header = 0;
  std::memcpy(&header, bytes.data(), 8);
  const float nan = std::nanf("");
  std::memcpy(&bytes[8 + header], &nan, 4);
  ASSERT_TRUE(WriteFileAtomic(shard, bytes).ok());
  auto manifest = ReadManifest(ckpt);
  ASSERT_TRUE(manifest.ok());
  ASSERT_TRUE(WriteCheckpointManifest(ckpt, *manifest).ok());
  auto model = LoadTrainedModel(ckpt, be.get());
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(model.status().message().find("non-finite"), std::string::npos) << model.status();
}

TEST(TrainLoop, KeepsOnlyTheNewestLocalCheckpointsAndDropsTheResumeCopy) {
  const std::string text = WriteCorpus();
  const std::string dir = TmpDir("retention");
  auto be = NewCpuBackend();
  TrainContext ctx;
  ctx.backend = be.get();
  ctx.keep_checkpoints = 2;
  ctx.stop_after = 9;  // checkpoints at 3, 6 and 9
  ASSERT_TRUE(Train(Config(text, dir, 12), ctx).ok());
  EXPECT_EQ(CheckpointSteps(dir), (std::vector<int64_t>{6, 9}));

  // A downloaded copy is loaded, then removed; nothing else under the
  // checkpoint directory is resumed from.
  const std::string copy = TmpDir("retention_copy") + "/step-00000009";
  ASSERT_EQ(std::system(("cp -r " + CheckpointPath(dir, 9) + " " + copy).c_str()), 0);
  ctx.stop_after = 0;
  ctx.resume_local = false;
  ctx.resume_from = copy;
  ctx.remove_resume_copy = true;
  auto rest = Train(Config(text, dir, 12), ctx);
  ASSERT_TRUE(rest.ok()) << rest.status();
  EXPECT_EQ(rest->front().step, 10);
  EXPECT_FALSE(FileExists(copy));
  EXPECT_EQ(CheckpointSteps(dir), (std::vector<int64_t>{9, 12}));

  ctx.resume_from.clear();
  auto fresh = Train(Config(text, dir, 3), ctx);
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  EXPECT_EQ(fresh->front().step, 1);  // resume_local is off: the local copies are ignored
}

TEST(TrainLoop, MissingCorpusNamesTheFile) {
  auto be = NewCpuBackend();
  TrainContext ctx;
  ctx.backend = be.get();
  auto r = Train(Config("/nonexistent/text.txt", "", 2), ctx);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("/nonexistent/text.txt"), std::string::npos);
}

// A 2-layer model learns tinyshakespeare bytes: from ln(256) = 5.55 nats to
// below 2.35 in 150 steps of 8 x 64 bytes (measured 2.16; see the closing note of
// the foundation issue).
TEST(TrainLoop, TwoLayerModelLearnsShakespeare) {
  const char* data = std::getenv("MODAMBA_DATA_DIR");
  if (data == nullptr) GTEST_SKIP() << "MODAMBA_DATA_DIR is not set";
  auto c = ParseTextProto<v1::TrainConfig>(R"pb(
    model { d_model: 64 n_layer: 2 vocab_size: 256 }
    optimizer { lr: 4e-3 warmup_steps: 10 }
    steps: 150
    batch_size: 8
    seq_len: 64
    seed: 1
    eval_every: 150
    eval_batches: 8
  )pb", "test");
  ASSERT_TRUE(c.ok());
  c->set_text_path(std::string(data) + "/tinyshakespeare/input.txt");
  ASSERT_TRUE(ResolveTrainConfig(&*c, "test").ok());
  auto be = NewCpuBackend();
  TrainContext ctx;
  ctx.backend = be.get();
  auto r = Train(*c, ctx);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_TRUE(r->back().evaluated);
  std::printf("tinyshakespeare: train loss %.4f, val loss %.4f after %d steps\n",
              r->back().loss.mean(), r->back().val.mean(), c->steps());
  EXPECT_LT(r->back().val.mean(), 2.35);
}

}  // namespace
}  // namespace modamba
