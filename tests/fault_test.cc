// Fault injection with real processes: a trainer rank killed with kill -9, a
// rank that crashes every time, a rank that hangs, the coordinator itself
// killed with kill -9 and restarted, and its database's disk full.
#include <signal.h>
#include <unistd.h>

#include <map>
#include <set>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "core/file_util.h"
#include "core/small_fs.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"
#include "tests/cluster.h"

namespace modamba {
namespace {

class FaultTest : public ClusterTest {
 protected:
  int64_t PidOf(const v1::Job& job, v1::WorkerRole role, int rank) {
    for (const v1::WorkerInfo& w : job.workers()) {
      if (w.ref().role() == role && w.ref().rank() == rank) return w.pid();
    }
    return 0;
  }

};

TEST_F(FaultTest, KilledTrainerRestartsFromTheNewestCheckpoint) {
  // The same job twice, side by side: one undisturbed, one losing a rank.
  const std::string calm = cluster_->MakeDataset("calm", "step_ms=25\n");
  const std::string hit = cluster_->MakeDataset("hit", "step_ms=25\n");
  auto reference = cluster_->Submit(Cluster::Spec("calm", calm, 40, 2, 0, 10));
  auto victim = cluster_->Submit(Cluster::Spec("hit", hit, 40, 2, 0, 10));
  ASSERT_TRUE(reference.ok() && victim.ok()) << reference.status() << victim.status();

  auto before = cluster_->WaitJob(victim->id(), [](const v1::Job& j) {
    return j.latest_checkpoint_step() >= 10 && j.step() >= 15;
  });
  ASSERT_TRUE(before.ok()) << before.status();
  const int64_t pid = PidOf(*before, v1::ROLE_TRAINER, 1);
  ASSERT_GT(pid, 0);
  ASSERT_EQ(kill(static_cast<pid_t>(pid), SIGKILL), 0);

  auto calm_job = cluster_->WaitFinished(reference->id());
  auto hit_job = cluster_->WaitFinished(victim->id());
  ASSERT_TRUE(calm_job.ok() && hit_job.ok()) << calm_job.status() << hit_job.status();
  ASSERT_EQ(calm_job->state(), v1::JOB_SUCCEEDED) << calm_job->reason();
  ASSERT_EQ(hit_job->state(), v1::JOB_SUCCEEDED) << hit_job->reason();
  EXPECT_EQ(hit_job->restarts(), 1);
  EXPECT_EQ(hit_job->generation(), 1);
  EXPECT_EQ(hit_job->reason(), "");  // a success keeps no restart's text

  // Same final step, same final per-modality losses, bit for bit.
  EXPECT_EQ(hit_job->step(), 40);
  EXPECT_EQ(hit_job->last_train().step(), calm_job->last_train().step());
  ASSERT_EQ(hit_job->last_train().losses().size(), 3u);
  for (const auto& [modality, loss] : calm_job->last_train().losses()) {
    EXPECT_EQ(hit_job->last_train().losses().at(modality), loss) << modality;
  }

  // The new generation resumed from a checkpoint at least as new as the one
  // complete at the kill, not from scratch.
  const std::string log =
      ReadFile(cluster_->run_root() + "/" + victim->id() + "/logs/trainer-1.log").value_or("");
  const size_t at = log.find("resumes from step ");
  ASSERT_NE(at, std::string::npos) << log;
  EXPECT_GE(std::stoll(log.substr(at + 18)), before->latest_checkpoint_step()) << log;
  EXPECT_TRUE(absl::StrContains(log, "generation 1")) << log;
}

TEST_F(FaultTest, ARankThatAlwaysCrashesFailsTheJobAtTheSecondSameFailure) {
  const std::string dataset = cluster_->MakeDataset(
      "crash", "step_ms=5\ncrash_rank=0\ncrash_at_step=3\ncrash_generation=-1\ncrash_mode=exit\n");
  auto job = cluster_->Submit(Cluster::Spec("crash", dataset, 50, 2, 1, 10, "max_restarts: 2\n"));
  ASSERT_TRUE(job.ok()) << job.status();
  auto done = cluster_->WaitFinished(job->id());
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_EQ(done->state(), v1::JOB_FAILED);
  // The same exit code twice is deterministic: the second restart is not tried.
  EXPECT_EQ(done->restarts(), 1);
  EXPECT_TRUE(absl::StrContains(done->reason(), "trainer-0 exited with code 3")) << done->reason();
  EXPECT_TRUE(absl::StrContains(done->reason(), "the same failure twice in a row: not retried"))
      << done->reason();
  auto released = cluster_->WaitJob(
      job->id(), [](const v1::Job& j) { return !j.has_allocation(); }, absl::Seconds(15));
  ASSERT_TRUE(released.ok()) << released.status();
  EXPECT_TRUE(cluster_->LiveWorkerPids().empty());
}

TEST_F(FaultTest, AHungRankIsFoundByItsHeartbeatAndReplaced) {
  // Rank 1 stops itself (SIGSTOP) at step 12: alive, but silent.
  const std::string dataset = cluster_->MakeDataset(
      "hang", "step_ms=20\ncrash_rank=1\ncrash_at_step=12\ncrash_mode=hang\n");
  auto job = cluster_->Submit(Cluster::Spec("hang", dataset, 30, 2, 0, 10));
  ASSERT_TRUE(job.ok()) << job.status();
  auto done = cluster_->WaitFinished(job->id());
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_EQ(done->state(), v1::JOB_SUCCEEDED) << done->reason();
  EXPECT_EQ(done->restarts(), 1);
  EXPECT_EQ(done->reason(), "");  // a success keeps no restart's text; the log does
  EXPECT_TRUE(absl::StrContains(cluster_->Logs(), "trainer-1 generation 0 sent no heartbeat"));
  EXPECT_EQ(done->step(), 30);
}

TEST_F(FaultTest, CoordinatorKilledAndRestartedLosesNothing) {
  const std::string dataset = cluster_->MakeDataset("phoenix", "step_ms=30\n");
  auto job = cluster_->Submit(Cluster::Spec("phoenix", dataset, 60, 2, 1, 10));
  ASSERT_TRUE(job.ok()) << job.status();
  auto before = cluster_->WaitJob(job->id(), [](const v1::Job& j) {
    return j.latest_checkpoint_step() >= 10 && j.step() >= 15;
  });
  ASSERT_TRUE(before.ok()) << before.status();
  auto metrics_before = cluster_->Metrics(job->id());
  auto checkpoints_before = cluster_->Checkpoints(job->id());
  ASSERT_TRUE(metrics_before.ok() && checkpoints_before.ok());
  const size_t workers = cluster_->LiveWorkerPids().size();
  EXPECT_EQ(workers, 3u);

  ASSERT_TRUE(cluster_->KillCoordinator().ok());
  absl::SleepFor(absl::Seconds(1));  // the workers carry on meanwhile
  EXPECT_EQ(cluster_->LiveWorkerPids().size(), workers);
  ASSERT_TRUE(cluster_->RestartCoordinator().ok());

  auto after = cluster_->WaitFinished(job->id());
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(after->state(), v1::JOB_SUCCEEDED) << after->reason();
  // Re-adopted, not restarted.
  EXPECT_EQ(after->restarts(), 0) << after->reason();
  EXPECT_EQ(after->step(), 60);

  // Every metric point and checkpoint record from before is still there, and
  // every step of the run has its train point.
  auto metrics_after = cluster_->Metrics(job->id());
  ASSERT_TRUE(metrics_after.ok());
  std::map<int64_t, v1::MetricPoint> by_seq;
  std::set<int64_t> train_steps;
  for (const v1::MetricPoint& p : *metrics_after) {
    by_seq[p.seq()] = p;
    if (p.kind() == "train") train_steps.insert(p.step());
  }
  for (const v1::MetricPoint& p : *metrics_before) {
    EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(by_seq[p.seq()], p))
        << "seq " << p.seq();
  }
  EXPECT_EQ(train_steps.size(), 60u);
  auto checkpoints_after = cluster_->Checkpoints(job->id());
  ASSERT_TRUE(checkpoints_after.ok());
  std::set<int64_t> steps_after;
  for (const v1::CheckpointInfo& c : *checkpoints_after) steps_after.insert(c.step());
  for (const v1::CheckpointInfo& c : *checkpoints_before) {
    if (c.complete()) {
      EXPECT_TRUE(steps_after.count(c.step())) << c.step();
    }
  }
  EXPECT_EQ(*steps_after.rbegin(), 60);

  grpc::ClientContext context;
  cluster_->Prepare(&context);
  v1::ListJobsResponse jobs;
  ASSERT_TRUE(cluster_->jobs()->ListJobs(&context, v1::ListJobsRequest(), &jobs).ok());
  EXPECT_EQ(jobs.jobs_size(), 1);
}

// The coordinator's database on a small real filesystem, filled up while
// jobs run.
class DatabaseDiskFullTest : public FaultTest {
 protected:
  ClusterOptions Options() override {
    ClusterOptions options;
    options.db_dir = disk_;
    return options;
  }
  void SetUp() override {
    disk_ = std::string(getenv("TEST_TMPDIR")) + "/db-disk";
    absl::Status mounted = MountSmallFilesystem(disk_, 2 << 20);
    if (!mounted.ok()) GTEST_SKIP() << mounted;
    FaultTest::SetUp();
  }
  std::string disk_;
};

TEST_F(DatabaseDiskFullTest, JobsGoOnTheCoordinatorSaysItIsDegradedAndTheOutcomeIsKept) {
  const std::string calm = cluster_->MakeDataset("calm", "step_ms=20\n");
  const std::string crash = cluster_->MakeDataset(
      "crash", "step_ms=20\ncrash_rank=0\ncrash_at_step=30\ncrash_generation=-1\ncrash_mode=exit\n");
  auto fine = cluster_->Submit(Cluster::Spec("fine", calm, 60, 2, 0, 10));
  auto doomed = cluster_->Submit(Cluster::Spec("doomed", crash, 60, 1, 0, 10, "max_restarts: 5\n"));
  ASSERT_TRUE(fine.ok() && doomed.ok()) << fine.status() << doomed.status();
  ASSERT_TRUE(FillFilesystem(disk_ + "/filler").ok());

  // Users are refused what could not be stored ...
  auto refused = cluster_->Submit(Cluster::Spec("late", calm, 10, 1, 0, 10));
  ASSERT_FALSE(refused.ok());
  EXPECT_TRUE(absl::StrContains(refused.status().message(), "No space left on device"))
      << refused.status();
  // ... but the jobs go on and end as they would have.
  auto fine_done = cluster_->WaitFinished(fine->id());
  auto doomed_done = cluster_->WaitFinished(doomed->id());
  ASSERT_TRUE(fine_done.ok() && doomed_done.ok()) << fine_done.status() << doomed_done.status();
  EXPECT_EQ(fine_done->state(), v1::JOB_SUCCEEDED) << fine_done->reason();
  EXPECT_EQ(doomed_done->state(), v1::JOB_FAILED);
  EXPECT_TRUE(absl::StrContains(doomed_done->reason(), "trainer-0 exited with code 3"))
      << doomed_done->reason();
  auto health = cluster_->Http("GET", "/healthz", false);
  ASSERT_TRUE(health.ok());
  EXPECT_EQ(health->status, 503);
  EXPECT_TRUE(absl::StrContains(health->body, "degraded: cannot write the database")) << health->body;
  EXPECT_TRUE(absl::StrContains(health->body, "No space left on device")) << health->body;

  // Space again: healthy once it is all written, and a restarted
  // coordinator knows both outcomes (it relaunches nothing).
  ASSERT_EQ(unlink((disk_ + "/filler").c_str()), 0);
  for (int i = 0; i < 200 && health.ok() && health->status != 200; ++i) {
    absl::SleepFor(absl::Milliseconds(50));
    health = cluster_->Http("GET", "/healthz", false);
  }
  ASSERT_TRUE(health.ok());
  EXPECT_EQ(health->status, 200) << health->body;
  ASSERT_TRUE(cluster_->KillCoordinator().ok());
  ASSERT_TRUE(cluster_->RestartCoordinator().ok());
  EXPECT_EQ(cluster_->GetJob(fine->id())->state(), v1::JOB_SUCCEEDED);
  EXPECT_EQ(cluster_->GetJob(doomed->id())->state(), v1::JOB_FAILED);
  absl::SleepFor(absl::Seconds(1));
  EXPECT_TRUE(cluster_->LiveWorkerPids().empty());
}

}  // namespace
}  // namespace modamba
