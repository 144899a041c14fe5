// End to end: a coordinator, two trainer ranks and an evaluator as real
// processes finish a job; checkpoints travel from the trainers through the
// coordinator to the evaluator with their sha256 intact; the scheduler
// queues what does not fit; cancel stops every worker.
#include <map>
#include <set>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "core/file_util.h"
#include "gtest/gtest.h"
#include "tests/cluster.h"

namespace modamba {
namespace {

// (step, path) -> sha256 from a worker's uploads.txt / downloads.txt.
std::map<std::pair<int64_t, std::string>, std::string> ReadShaLog(const std::string& path) {
  std::map<std::pair<int64_t, std::string>, std::string> entries;
  for (absl::string_view line :
       absl::StrSplit(ReadFile(path).value_or(""), '\n', absl::SkipEmpty())) {
    std::vector<std::string> f = absl::StrSplit(line, ' ');
    if (f.size() == 3) entries[{std::stoll(f[0]), f[1]}] = f[2];
  }
  return entries;
}

class EndToEndTest : public ::testing::Test {
 protected:
  void TearDown() override {
    if (HasFailure() && cluster_ != nullptr) std::cerr << cluster_->Logs();
  }
  std::unique_ptr<Cluster> cluster_;
};

TEST_F(EndToEndTest, TwoTrainersAndAnEvaluatorFinishAJob) {
  auto cluster = Cluster::Start();
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  cluster_ = std::move(*cluster);
  const std::string dataset = cluster_->MakeDataset("e2e", "step_ms=10\n");
  auto submitted =
      cluster_->Submit(Cluster::Spec("e2e", dataset, 30, 2, 1, 10, "keep_last_checkpoints: 2\n"));
  ASSERT_TRUE(submitted.ok()) << submitted.status();
  const std::string id = submitted->id();

  auto job = cluster_->WaitFinished(id);
  ASSERT_TRUE(job.ok()) << job.status();
  ASSERT_EQ(job->state(), v1::JOB_SUCCEEDED) << job->reason();
  EXPECT_EQ(job->step(), 30);
  EXPECT_EQ(job->restarts(), 0);
  EXPECT_EQ(job->latest_checkpoint_step(), 30);
  ASSERT_EQ(job->workers_size(), 3);
  for (const v1::WorkerInfo& w : job->workers()) {
    EXPECT_EQ(w.state(), v1::WORKER_SUCCEEDED) << w.ShortDebugString();
  }

  // Every train step is recorded once, with validation every 5 steps.
  auto metrics = cluster_->Metrics(id);
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  std::set<int64_t> train_steps, val_steps, eval_steps;
  for (const v1::MetricPoint& p : *metrics) {
    if (p.kind() == "train") {
      train_steps.insert(p.step());
      EXPECT_EQ(p.losses().size(), 3u);
    }
    if (p.kind() == "val") val_steps.insert(p.step());
    if (p.kind() == "eval") {
      eval_steps.insert(p.checkpoint_step());
      EXPECT_TRUE(p.scalars().contains("digit_accuracy"));
    }
  }
  EXPECT_EQ(train_steps.size(), 30u);
  EXPECT_EQ(*train_steps.begin(), 1);
  EXPECT_EQ(*train_steps.rbegin(), 30);
  EXPECT_EQ(val_steps, (std::set<int64_t>{5, 10, 15, 20, 25, 30}));
  // The checkpoints that retention keeps are always evaluated before the end.
  EXPECT_TRUE(eval_steps.count(20) && eval_steps.count(30));

  // Three checkpoints, each with both ranks' files; retention kept the last 2.
  auto checkpoints = cluster_->Checkpoints(id);
  ASSERT_TRUE(checkpoints.ok()) << checkpoints.status();
  ASSERT_EQ(checkpoints->size(), 3u);
  std::map<std::pair<int64_t, std::string>, std::string> recorded;
  for (const v1::CheckpointInfo& c : *checkpoints) {
    EXPECT_TRUE(c.complete());
    EXPECT_EQ(c.files_size(), 4) << c.ShortDebugString();
    EXPECT_EQ(c.deleted(), c.step() == 10) << c.step();
    EXPECT_EQ(
        FileExists(absl::StrFormat("%s/%s/step-%08d", cluster_->checkpoint_root(), id, c.step())),
        c.step() != 10);
    for (const v1::CheckpointFile& f : c.files()) recorded[{c.step(), f.path()}] = f.sha256();
  }

  // What the evaluator downloaded is byte for byte what the trainers uploaded.
  const std::string job_dir = cluster_->run_root() + "/" + id;
  auto uploads = ReadShaLog(job_dir + "/trainer-0/uploads.txt");
  auto rank1 = ReadShaLog(job_dir + "/trainer-1/uploads.txt");
  uploads.insert(rank1.begin(), rank1.end());
  EXPECT_EQ(uploads, recorded);
  auto downloads = ReadShaLog(job_dir + "/evaluator-0/downloads.txt");
  ASSERT_GE(downloads.size(), 8u);
  for (const auto& [key, sha] : downloads) {
    EXPECT_EQ(uploads[key], sha) << "step " << key.first << " " << key.second;
  }

  // Logs are kept per worker and served over gRPC; they are complete once
  // the workers have exited and given their slots back.
  ASSERT_TRUE(cluster_->WaitJob(id, [](const v1::Job& j) { return !j.has_allocation(); }).ok());
  grpc::ClientContext context;
  cluster_->Prepare(&context);
  v1::GetLogsRequest logs;
  logs.set_job_id(id);
  logs.set_worker("trainer-1");
  logs.set_offset(-4096);
  v1::GetLogsResponse log;
  ASSERT_TRUE(cluster_->jobs()->GetLogs(&context, logs, &log).ok());
  EXPECT_TRUE(absl::StrContains(log.data(), "fake_worker: done")) << log.data();

  // Every worker process has exited.
  EXPECT_TRUE(cluster_->LiveWorkerPids().empty());

  // Watching an ended job replays its metrics and ends.
  grpc::ClientContext watch_context;
  cluster_->Prepare(&watch_context);
  v1::WatchJobRequest watch;
  watch.set_job_id(id);
  watch.set_metrics_after_seq(0);
  auto reader = cluster_->jobs()->WatchJob(&watch_context, watch);
  v1::JobEvent event;
  size_t replayed = 0;
  while (reader->Read(&event)) {
    replayed += event.metrics_size();
    EXPECT_EQ(event.job().state(), v1::JOB_SUCCEEDED);
  }
  EXPECT_TRUE(reader->Finish().ok());
  EXPECT_EQ(replayed, metrics->size());
}

TEST_F(EndToEndTest, JobsThatDoNotFitWaitTheirTurn) {
  ClusterOptions options;
  options.cpu_slots = 3;
  auto cluster = Cluster::Start(options);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  cluster_ = std::move(*cluster);
  const std::string dataset = cluster_->MakeDataset("queue", "step_ms=20\n");
  auto first = cluster_->Submit(Cluster::Spec("first", dataset, 20, 2, 1, 10));
  auto second = cluster_->Submit(Cluster::Spec("second", dataset, 20, 3, 0, 10));
  ASSERT_TRUE(first.ok() && second.ok()) << first.status() << second.status();
  EXPECT_EQ(first->state(), v1::JOB_RUNNING);
  EXPECT_EQ(second->state(), v1::JOB_PENDING);
  EXPECT_EQ(first->allocation().cpu_slots(), 3);

  // A job that could never fit is refused outright, naming the field.
  auto too_big = cluster_->Submit(Cluster::Spec("big", dataset, 20, 4, 0, 10));
  EXPECT_EQ(too_big.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(too_big.status().message(), "world_size")) << too_big.status();

  // Finished, and the slots given back once the processes are gone.
  auto done = [](const v1::Job& j) { return IsFinished(j) && !j.has_allocation(); };
  auto one = cluster_->WaitJob(first->id(), done);
  auto two = cluster_->WaitJob(second->id(), done);
  ASSERT_TRUE(one.ok() && two.ok()) << one.status() << two.status();
  EXPECT_EQ(one->state(), v1::JOB_SUCCEEDED) << one->reason();
  EXPECT_EQ(two->state(), v1::JOB_SUCCEEDED) << two->reason();
  // The second started only once the first had given its slots back.
  EXPECT_GE(two->start_time_ms(), one->end_time_ms());
}

TEST_F(EndToEndTest, CancelStopsEveryWorker) {
  auto cluster = Cluster::Start();
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  cluster_ = std::move(*cluster);
  const std::string dataset = cluster_->MakeDataset("cancel", "step_ms=20\n");
  auto job = cluster_->Submit(Cluster::Spec("cancel", dataset, 100000, 2, 1, 50));
  ASSERT_TRUE(job.ok()) << job.status();
  ASSERT_TRUE(cluster_->WaitJob(job->id(), [](const v1::Job& j) { return j.step() >= 3; }).ok());
  EXPECT_EQ(cluster_->LiveWorkerPids().size(), 3u);

  // Through the HTTP API this time (the CLI test cancels over gRPC).
  auto cancelled = cluster_->Http("POST", "/api/jobs/" + job->id() + "/cancel");
  ASSERT_TRUE(cancelled.ok()) << cancelled.status();
  EXPECT_EQ(cancelled->status, 200) << cancelled->body;
  EXPECT_TRUE(absl::StrContains(cancelled->body, "\"state\":\"JOB_CANCELLED\"")) << cancelled->body;

  // Stopped within the grace period, and the slots given back.
  auto released = cluster_->WaitJob(
      job->id(), [](const v1::Job& j) { return !j.has_allocation(); }, absl::Seconds(15));
  ASSERT_TRUE(released.ok()) << released.status();
  EXPECT_TRUE(cluster_->LiveWorkerPids().empty());
  for (const v1::WorkerInfo& w : released->workers()) {
    EXPECT_EQ(w.state(), v1::WORKER_STOPPED) << w.ShortDebugString();
  }
}

}  // namespace
}  // namespace modamba
