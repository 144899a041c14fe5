#include "coordinator/db.h"

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace modamba {
namespace {

std::string DbPath(const char* name) {
  return absl::StrCat(getenv("TEST_TMPDIR"), "/", name, ".db");
}

TEST(DbTest, WritesSurviveReopening) {
  const std::string path = DbPath("reopen");
  {
    auto db = Db::Open(path);
    ASSERT_TRUE(db.ok()) << db.status();
    WriteBatch batch;
    for (const char* id : {"job-2", "job-1"}) {
      v1::Job job;
      job.set_id(id);
      job.set_state(v1::JOB_RUNNING);
      job.add_workers();  // never stored with the job
      batch.jobs.push_back(job);
    }
    v1::WorkerInfo worker;
    worker.mutable_ref()->set_job_id("job-2");
    worker.mutable_ref()->set_role(v1::ROLE_TRAINER);
    worker.mutable_ref()->set_rank(1);
    worker.set_pid(42);
    batch.workers.push_back(worker);
    v1::CheckpointInfo checkpoint;
    checkpoint.set_job_id("job-2");
    checkpoint.set_step(10);
    batch.checkpoints.push_back(checkpoint);
    for (int seq = 1; seq <= 3; ++seq) {
      v1::MetricPoint point;
      point.set_seq(seq);
      (*point.mutable_losses())["text"] = seq;
      batch.metrics.emplace_back("job-2", point);
    }
    batch.kv.push_back({{"job-2/trainer/g0", "addr/0"}, std::string("a\0b", 3)});
    batch.kv.push_back({{"job-2/trainer/g1", "addr/0"}, "c"});
    ASSERT_TRUE((*db)->Write(batch).ok());

    // Updates replace rows; namespaces can be dropped.
    WriteBatch update;
    batch.jobs[0].set_state(v1::JOB_SUCCEEDED);
    update.jobs.push_back(batch.jobs[0]);
    update.drop_kv_namespaces.push_back("job-2/trainer/g1");
    ASSERT_TRUE((*db)->Write(update).ok());
  }
  auto db = Db::Open(path);
  ASSERT_TRUE(db.ok()) << db.status();
  auto state = (*db)->Load();
  ASSERT_TRUE(state.ok()) << state.status();
  ASSERT_EQ(state->jobs.size(), 2u);
  EXPECT_EQ(state->jobs[0].id(), "job-2");  // submission order
  EXPECT_EQ(state->jobs[0].state(), v1::JOB_SUCCEEDED);
  EXPECT_EQ(state->jobs[0].workers_size(), 0);
  ASSERT_EQ(state->workers.size(), 1u);
  EXPECT_EQ(state->workers[0].pid(), 42);
  ASSERT_EQ(state->checkpoints.size(), 1u);
  ASSERT_EQ(state->metrics["job-2"].size(), 3u);
  EXPECT_EQ(state->metrics["job-2"][2].losses().at("text"), 3);
  EXPECT_EQ(state->kv["job-2/trainer/g0"]["addr/0"], std::string("a\0b", 3));
  EXPECT_EQ(state->kv.count("job-2/trainer/g1"), 0u);
}

TEST(DbTest, OneCoordinatorPerDatabase) {
  const std::string path = DbPath("exclusive");
  auto first = Db::Open(path);
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_TRUE((*first)->Load().ok());
  auto second = Db::Open(path);
  EXPECT_FALSE(second.ok());
}

TEST(DbTest, AFailedBatchChangesNothing) {
  auto db = Db::Open(DbPath("atomic"));
  ASSERT_TRUE(db.ok());
  WriteBatch batch;
  v1::MetricPoint point;
  point.set_seq(1);
  batch.metrics.emplace_back("job-1", point);
  ASSERT_TRUE((*db)->Write(batch).ok());
  v1::Job job;
  job.set_id("job-1");
  batch.jobs.push_back(job);
  // The metric's key exists already: the whole batch, job included, fails.
  EXPECT_FALSE((*db)->Write(batch).ok());
  auto state = (*db)->Load();
  ASSERT_TRUE(state.ok());
  EXPECT_TRUE(state->jobs.empty());
}

}  // namespace
}  // namespace modamba
