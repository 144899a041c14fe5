#include "trainer/train_loop.h"

#include <cstdlib>
#include <cstring>
#include <fstream>

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

v1::TrainConfig Config(const std::string& text, const std::string& ckpt, int steps) {
  auto c = ParseTextProto<v1::TrainConfig>(R"pb(
    model { d_model: 16 n_layer: 2 vocab_size: 256 d_state: 4 route_in: true route_out: true }
    optimizer { lr: 5e-3 warmup_steps: 3 }
    batch_size: 2
    seq_len: 24
    seed: 5
    eval_every: 4
    eval_batches: 2
    checkpoint_every: 3
  )pb", "test");
  EXPECT_TRUE(c.ok());
  c->set_steps(steps);
  c->set_text_path(text);
  c->set_checkpoint_dir(ckpt);
  EXPECT_TRUE(ResolveTrainConfig(&*c, "test").ok());
  return *c;
}

TEST(TrainLoop, ResumeGivesBitIdenticalLosses) {
  const std::string text = WriteCorpus();
  auto be = NewCpuBackend();
  TrainContext ctx;
  ctx.backend = be.get();
  auto straight = Train(Config(text, TmpDir("straight"), 10), ctx);
  ASSERT_TRUE(straight.ok()) << straight.status();

  const std::string dir = TmpDir("interrupted");
  TrainContext first = ctx;
  first.stop_after = 5;  // checkpoints at 3 and at the stop, 5
  ASSERT_TRUE(Train(Config(text, dir, 10), first).ok());
  auto rest = Train(Config(text, dir, 10), ctx);
  ASSERT_TRUE(rest.ok()) << rest.status();
  ASSERT_EQ(rest->size(), 5u);
  for (const StepRecord& r : *rest) {
    const StepRecord& s = (*straight)[r.step - 1];
    EXPECT_EQ(r.loss.total_sum(), s.loss.total_sum()) << "step " << r.step;
    EXPECT_EQ(r.grad_norm, s.grad_norm) << "step " << r.step;
    EXPECT_EQ(r.flops, s.flops) << "step " << r.step;
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
