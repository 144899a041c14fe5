#include "evaluator/eval_worker.h"

#include <filesystem>
#include <fstream>
#include <map>

#include "absl/strings/str_cat.h"
#include "core/backend.h"
#include "core/checkpoint.h"
#include "core/file_util.h"
#include "evaluator/test_util.h"
#include "gtest/gtest.h"
#include "trainer/synthetic_dataset.h"
#include "trainer/train_loop.h"

namespace modamba::eval {
namespace {

namespace fs = std::filesystem;

// Serves checkpoints from local directories as the coordinator would: each
// file under the rank-0/ prefix, handed out in step order, one at a time.
class FakeLink : public CoordinatorLink {
 public:
  struct Served {
    v1::CheckpointInfo info;
    std::string source;        // a checkpoint directory
    bool corrupt_in_transit = false;  // every download fails its sha256
  };
  std::vector<Served> served;
  std::vector<int64_t> finished;          // finished_step of each call
  std::map<int64_t, int> downloads;       // step -> attempts
  std::vector<v1::MetricPoint> points;
  absl::Status fail_await;                // returned by the next AwaitCheckpoint
  bool stop = false;

  absl::StatusOr<v1::AwaitCheckpointResponse> AwaitCheckpoint(int64_t finished_step,
                                                              absl::Duration) override {
    finished.push_back(finished_step);
    if (!fail_await.ok()) return fail_await;
    v1::AwaitCheckpointResponse r;
    if (next_ < served.size()) {
      *r.mutable_checkpoint() = served[next_++].info;
    } else {
      r.set_job_done(true);
    }
    return r;
  }
  absl::Status DownloadCheckpoint(const v1::CheckpointInfo& c, const std::string& dir) override {
    downloads[c.step()]++;
    for (const Served& s : served) {
      if (s.info.step() != c.step()) continue;
      if (s.corrupt_in_transit) return absl::DataLossError("sha256 mismatch in transit");
      fs::create_directories(dir + "/rank-0");
      for (const auto& e : fs::directory_iterator(s.source)) {
        fs::copy_file(e.path(), fs::path(dir) / "rank-0" / e.path().filename());
      }
      return absl::OkStatus();
    }
    return absl::NotFoundError("no such checkpoint");
  }
  void ReportMetrics(std::vector<v1::MetricPoint> p) override {
    points.insert(points.end(), p.begin(), p.end());
  }
  bool stop_requested() const override { return stop; }

 private:
  size_t next_ = 0;
};

class EvalWorkerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const std::string data = ::testing::TempDir() + "/worker_data";
    ASSERT_TRUE(WriteSyntheticDataset(data, "chameleon", 64, 8, 4).ok());
    root_ = new std::string(::testing::TempDir() + "/worker_run");
    auto config = testing::TinyTrainConfig(data, *root_, 2);
    ASSERT_TRUE(config.ok()) << config.status();
    config->set_checkpoint_every(1);
    auto be = NewCpuBackend();
    TrainContext ctx;
    ctx.backend = be.get();
    ASSERT_TRUE(Train(*config, ctx).ok());
  }
  FakeLink::Served Serve(int64_t as_step, int64_t from_step) {
    FakeLink::Served s;
    s.info.set_step(as_step);
    s.info.set_flops(1e9 * as_step);
    s.info.set_complete(true);
    s.source = CheckpointPath(*root_, from_step);
    return s;
  }
  EvalWorkerOptions Options(const std::string& name) {
    EvalWorkerOptions o;
    o.work_dir = ::testing::TempDir() + "/" + name;
    fs::create_directories(o.work_dir);
    return o;
  }
  static EvalOptions ValidationOnly() {
    EvalOptions o;
    o.images = o.speech = false;
    o.val.max_sequences = 2;
    return o;
  }
  static std::string* root_;
};
std::string* EvalWorkerTest::root_ = nullptr;

TEST_F(EvalWorkerTest, EvaluatesEachCheckpointAndRejectsCorruptOnes) {
  FakeLink link;
  link.served.push_back(Serve(1, 1));
  link.served.push_back(Serve(2, 2));
  FakeLink::Served in_transit = Serve(3, 2);
  in_transit.corrupt_in_transit = true;
  link.served.push_back(in_transit);
  // Step 4: the bytes arrive as served but one differs from the
  // checkpoint's own manifest.
  const std::string damaged = ::testing::TempDir() + "/damaged";
  fs::create_directories(damaged);
  for (const auto& e : fs::directory_iterator(CheckpointPath(*root_, 2))) {
    fs::copy_file(e.path(), fs::path(damaged) / e.path().filename(),
                  fs::copy_options::overwrite_existing);
  }
  auto manifest = ReadManifest(damaged);
  ASSERT_TRUE(manifest.ok());
  {
    std::fstream f(damaged + "/" + manifest->files(0).name(),
                   std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(64);
    f.put('\x01');
  }
  FakeLink::Served on_disk = Serve(4, 2);
  on_disk.source = damaged;
  link.served.push_back(on_disk);

  auto be = NewCpuBackend();
  CheckpointEvaluator evaluator(ValidationOnly(), be.get());
  EvalWorkerOptions options = Options("worker_good");
  options.notes = {"evaluator: no raw data"};
  ASSERT_TRUE(RunEvalWorker(&link, &evaluator, options).ok());

  // Each step passed back as finished, then the job is done.
  EXPECT_EQ(link.finished, (std::vector<int64_t>{-1, 1, 2, 3, 4}));
  EXPECT_EQ(link.downloads[3], 2);  // retried once
  EXPECT_EQ(link.downloads[4], 1);
  ASSERT_EQ(link.points.size(), 4u);
  for (int i = 0; i < 2; ++i) {
    const v1::MetricPoint& p = link.points[i];
    EXPECT_EQ(p.kind(), "eval");
    EXPECT_EQ(p.step(), i + 1);
    EXPECT_EQ(p.checkpoint_step(), i + 1);
    EXPECT_DOUBLE_EQ(p.flops(), 1e9 * (i + 1));
    EXPECT_TRUE(p.losses().contains("text"));
    EXPECT_TRUE(p.losses().contains("image"));
    EXPECT_TRUE(p.scalars().contains("val/text_bpb"));
    EXPECT_FALSE(p.scalars().contains("checkpoint_rejected"));
    ASSERT_EQ(p.notes_size(), 1);  // every point says what this worker cannot measure
    EXPECT_EQ(p.notes(0), "evaluator: no raw data");
  }
  // Different weights, different losses.
  EXPECT_NE(link.points[0].losses().at("text"), link.points[1].losses().at("text"));
  for (int i = 2; i < 4; ++i) {
    EXPECT_EQ(link.points[i].step(), i + 1);
    EXPECT_EQ(link.points[i].scalars().at("checkpoint_rejected"), 1);
    EXPECT_TRUE(link.points[i].losses().empty());
  }
  // Downloads are cleaned up.
  for (int step = 1; step <= 4; ++step) {
    EXPECT_FALSE(fs::exists(absl::StrCat(options.work_dir, "/ckpt-", step)));
  }
}

TEST_F(EvalWorkerTest, StopsWhenTheCoordinatorIsGoneOrSaysStop) {
  auto be = NewCpuBackend();
  CheckpointEvaluator evaluator(ValidationOnly(), be.get());
  FakeLink gone;
  gone.fail_await = absl::UnavailableError("coordinator unreachable for 2 minutes");
  EXPECT_EQ(RunEvalWorker(&gone, &evaluator, Options("worker_gone")).code(),
            absl::StatusCode::kUnavailable);
  FakeLink stopped;
  stopped.stop = true;
  EXPECT_TRUE(RunEvalWorker(&stopped, &evaluator, Options("worker_stop")).ok());
  EXPECT_TRUE(stopped.finished.empty());
}

TEST(FlattenCheckpoint, MovesRankFilesUp) {
  const std::string dir = ::testing::TempDir() + "/flatten";
  fs::create_directories(dir + "/rank-0");
  fs::create_directories(dir + "/rank-1/sub");
  ASSERT_TRUE(WriteFileAtomic(dir + "/rank-0/manifest.json", "{}").ok());
  ASSERT_TRUE(WriteFileAtomic(dir + "/rank-0/shard-0", "a").ok());
  ASSERT_TRUE(WriteFileAtomic(dir + "/rank-1/sub/shard-1", "b").ok());
  ASSERT_TRUE(FlattenCheckpoint(dir).ok());
  EXPECT_TRUE(FileExists(dir + "/manifest.json"));
  EXPECT_EQ(*ReadFile(dir + "/shard-0"), "a");
  EXPECT_EQ(*ReadFile(dir + "/sub/shard-1"), "b");
  EXPECT_FALSE(fs::exists(dir + "/rank-0"));
  EXPECT_TRUE(FlattenCheckpoint(dir).ok());  // already flat

  const std::string clash = ::testing::TempDir() + "/clash";
  fs::create_directories(clash + "/rank-0");
  fs::create_directories(clash + "/rank-1");
  ASSERT_TRUE(WriteFileAtomic(clash + "/rank-0/x", "a").ok());
  ASSERT_TRUE(WriteFileAtomic(clash + "/rank-1/x", "b").ok());
  EXPECT_EQ(FlattenCheckpoint(clash).code(), absl::StatusCode::kDataLoss);
  const std::string none = ::testing::TempDir() + "/no_manifest";
  fs::create_directories(none + "/rank-0");
  ASSERT_TRUE(WriteFileAtomic(none + "/rank-0/x", "a").ok());
  EXPECT_EQ(FlattenCheckpoint(none).code(), absl::StatusCode::kDataLoss);
}

}  // namespace
}  // namespace modamba::eval

namespace modamba::eval {
namespace {

TEST(EvalPoint, CarriesTheDigitGridTheSpeechAndThePerModalityLosses) {
  const std::string dir = absl::StrCat(std::getenv("TEST_TMPDIR"), "/grid");
  ASSERT_TRUE(MakeDirs(dir).ok());
  const std::string png = std::string("\x89PNG\r\n\x1a\n", 8) + "pixels";
  ASSERT_TRUE(WriteFileAtomic(dir + "/images.png", png).ok());
  const std::string wav = std::string("RIFF\0\0\0\0WAVE", 12);
  ASSERT_TRUE(WriteFileAtomic(dir + "/speech_7.wav", wav).ok());
  EvalReport report;
  report.metrics = {{"val/image_ce", 1.5}, {"image/accuracy", 0.9}};
  report.files = {dir + "/speech_7.wav", dir + "/images.png"};
  v1::CheckpointInfo checkpoint;
  checkpoint.set_step(40);
  checkpoint.set_flops(1e12);
  v1::MetricPoint point = EvalPoint(report, checkpoint);
  EXPECT_EQ(point.kind(), "eval");
  EXPECT_EQ(point.checkpoint_step(), 40);
  EXPECT_EQ(point.losses().at("image"), 1.5);
  EXPECT_EQ(point.scalars().at("image/accuracy"), 0.9);
  EXPECT_EQ(point.image_grid_png(), png);
  ASSERT_EQ(point.speech_wav().size(), 1u);
  EXPECT_EQ(point.speech_wav().at("7"), wav);
}

}  // namespace
}  // namespace modamba::eval
