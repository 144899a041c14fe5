// The job manager's state machine in one process: a fake launcher stands in
// for worker processes, so each transition is driven by the test.
#include "coordinator/job_manager.h"

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <map>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "core/file_util.h"
#include "core/small_fs.h"
#include "gtest/gtest.h"
#include "worker/limits.h"

namespace modamba {
namespace {

// Processes that exist only as pids; they end when the test says so, or
// when signalled (a worker that obeys SIGTERM).
class FakeLauncher : public Launcher {
 public:
  absl::StatusOr<ProcessHandle> Start(const ProcessSpec& spec) override {
    absl::MutexLock lock(&mu_);
    const int64_t pid = next_pid_++;
    started_.push_back(spec);
    return ProcessHandle{pid, 1};
  }
  void Stop(const ProcessHandle& process, bool kill) override {
    absl::MutexLock lock(&mu_);
    signalled_.insert(process.pid);
    if (!exited_.count(process.pid)) exited_[process.pid] = kill ? 128 + SIGKILL : 128 + SIGTERM;
  }
  std::optional<ProcessExit> Poll(const ProcessHandle& process) override {
    absl::MutexLock lock(&mu_);
    auto it = exited_.find(process.pid);
    if (it == exited_.end()) return std::nullopt;
    ProcessExit exit;
    exit.code = it->second;
    return exit;
  }
  // Set by the test: every process runs in one cluster job in this state.
  std::optional<ClusterJobState> ClusterState(const ProcessHandle& process) override {
    absl::MutexLock lock(&mu_);
    return cluster_state_;
  }
  void Release(const std::string& job_id) override {
    absl::MutexLock lock(&mu_);
    released_.push_back(job_id);
  }
  void SetClusterState(std::optional<ClusterJobState> state) {
    absl::MutexLock lock(&mu_);
    cluster_state_ = std::move(state);
  }
  std::vector<std::string> released() {
    absl::MutexLock lock(&mu_);
    return released_;
  }
  void Exit(int64_t pid, int code) {
    absl::MutexLock lock(&mu_);
    exited_[pid] = code;
  }
  std::vector<ProcessSpec> started() {
    absl::MutexLock lock(&mu_);
    return started_;
  }
  bool signalled(int64_t pid) {
    absl::MutexLock lock(&mu_);
    return signalled_.count(pid) > 0;
  }

 private:
  absl::Mutex mu_;
  int64_t next_pid_ = 1000;
  std::vector<ProcessSpec> started_;
  std::map<int64_t, int> exited_;
  std::set<int64_t> signalled_;
  std::optional<ClusterJobState> cluster_state_;
  std::vector<std::string> released_;
};

std::string Env(const ProcessSpec& spec, const std::string& name) {
  for (const auto& [key, value] : spec.env) {
    if (key == name) return value;
  }
  return "<unset>";
}

class JobManagerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = absl::StrCat(getenv("TEST_TMPDIR"), "/jm-",
                         ::testing::UnitTest::GetInstance()->current_test_info()->name());
    ASSERT_TRUE(MakeDirs(root_ + "/data/ds").ok());
    if (db_path_.empty()) db_path_ = root_ + "/state.db";
    auto db = Db::Open(db_path_);
    ASSERT_TRUE(db.ok()) << db.status();
    db_ = std::move(*db);
    auto store = CheckpointStore::Open(root_ + "/checkpoints");
    ASSERT_TRUE(store.ok());
    store_ = std::move(*store);
    options_.run_root = root_ + "/run";
    options_.trainer_binary = "trainer";
    options_.evaluator_binary = "evaluator";
    options_.worker_token = [](const v1::WorkerRef& ref) {
      return absl::StrCat("token-of-", ref.job_id(), "-", ref.role(), "-", ref.rank());
    };
    options_.spec_context.data_root = root_ + "/data";
    options_.spec_context.has_evaluator_binary = true;
    options_.spec_context.cpu_slots = 8;
    options_.spec_context.gpus = 3;
    options_.heartbeat_timeout = absl::Minutes(5);
    options_.stop_grace = absl::Milliseconds(300);
    options_.tick = absl::Milliseconds(5);
    StartManager();
  }

  void StartManager() {
    auto manager = JobManager::Create(options_, db_.get(), store_.get(), &launcher_);
    ASSERT_TRUE(manager.ok()) << manager.status();
    manager_ = std::move(*manager);
    manager_->Start("127.0.0.1:1");
  }

  std::string Spec(int world_size, int n_evaluators, const std::string& extra = "") {
    return absl::StrCat("name: \"t\" dataset_dir: \"ds\" world_size: ", world_size,
                        " n_evaluators: ", n_evaluators, " checkpoint_every_steps: 10 ", extra,
                        " train { steps: 100 batch_size: 1 seq_len: 4 model { d_model: 8 n_layer: 1"
                        " vocab_size: 16 } optimizer { lr: 0.001 } }");
  }

  v1::WorkerRef Ref(const std::string& job, v1::WorkerRole role, int rank, int generation) {
    v1::WorkerRef ref;
    ref.set_job_id(job);
    ref.set_role(role);
    ref.set_rank(rank);
    ref.set_generation(generation);
    return ref;
  }

  absl::StatusOr<v1::RegisterResponse> Register(const v1::WorkerRef& ref) {
    v1::RegisterRequest request;
    *request.mutable_worker() = ref;
    return manager_->Register(request);
  }

  // Uploads one file and reports it as `ref`'s part of checkpoint `step`.
  absl::StatusOr<v1::CheckpointInfo> Checkpoint(const v1::WorkerRef& ref, int64_t step) {
    const std::string data = absl::StrCat("rank ", ref.rank(), " step ", step);
    v1::CheckpointFile file;
    file.set_path(absl::StrCat("rank-", ref.rank(), "/w.bin"));
    file.set_size(data.size());
    file.set_sha256(Sha256Hex(data));
    auto writer = store_->NewWriter(ref.job_id(), step, file);
    if (!writer.ok()) return writer.status();
    if (absl::Status s = (*writer)->Append(data); !s.ok()) return s;
    auto published = manager_->PublishUpload(ref, step, writer->get());
    if (!published.ok()) return published.status();
    v1::ReportCheckpointRequest report;
    *report.mutable_worker() = ref;
    report.set_step(step);
    *report.add_files() = file;
    auto response = manager_->ReportCheckpoint(report);
    if (!response.ok()) return response.status();
    return response->checkpoint();
  }

  // Waits (bounded) for the supervisor to bring the job where `done` holds.
  v1::Job WaitJob(const std::string& id, const std::function<bool(const v1::Job&)>& done) {
    v1::Job job;
    for (int i = 0; i < 1000; ++i) {
      job = *manager_->GetJob(id);
      if (done(job)) return job;
      absl::SleepFor(absl::Milliseconds(5));
    }
    ADD_FAILURE() << "job never got there: " << job.ShortDebugString();
    return job;
  }

  std::string root_;
  std::string db_path_;  // default root_/state.db
  ManagerOptions options_;
  std::unique_ptr<Db> db_;
  std::unique_ptr<CheckpointStore> store_;
  FakeLauncher launcher_;
  std::unique_ptr<JobManager> manager_;
};

TEST_F(JobManagerTest, LaunchesEveryWorkerWithItsIdentity) {
  auto job = manager_->Submit(Spec(2, 1), "spec", "alice");
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->state(), v1::JOB_RUNNING);
  const std::vector<ProcessSpec> started = launcher_.started();
  ASSERT_EQ(started.size(), 3u);
  EXPECT_EQ(started[1].argv[0], "trainer");
  EXPECT_EQ(started[2].argv[0], "evaluator");
  EXPECT_EQ(started[1].argv[2], "--rank=1");
  EXPECT_EQ(started[1].argv[3], "--world_size=2");
  EXPECT_EQ(started[1].argv[4], "--coordinator=127.0.0.1:1");
  EXPECT_EQ(Env(started[1], "MODAMBA_ROLE"), "trainer");
  EXPECT_EQ(Env(started[1], "MODAMBA_GENERATION"), "0");
  EXPECT_EQ(Env(started[2], "MODAMBA_ROLE"), "evaluator");
  EXPECT_EQ(started[0].log_path, options_.run_root + "/job-1/logs/trainer-0.log");
  EXPECT_EQ(started[0].unset_env, std::vector<std::string>{"MODAMBA_TOKEN"});
  EXPECT_TRUE(FileExists(options_.run_root + "/job-1/job_spec.textproto"));
  // Each worker gets a token of its own, in a file only its user can read.
  const std::string token_file = options_.run_root + "/job-1/trainer-1/worker.token";
  EXPECT_EQ(started[1].argv[5], "--token_file=" + token_file);
  EXPECT_EQ(Env(started[1], "MODAMBA_TOKEN_FILE"), token_file);
  EXPECT_EQ(ReadFile(token_file).value_or(""), absl::StrCat("token-of-job-1-", v1::ROLE_TRAINER, "-1\n"));
  struct stat st;
  ASSERT_EQ(stat(token_file.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600);

  // Registration answers with the resolved spec; unknown ranks are refused.
  auto registered = Register(Ref(job->id(), v1::ROLE_TRAINER, 0, 0));
  ASSERT_TRUE(registered.ok()) << registered.status();
  EXPECT_EQ(registered->world_size(), 2);
  EXPECT_FALSE(registered->has_resume_checkpoint());
  EXPECT_EQ(Register(Ref(job->id(), v1::ROLE_TRAINER, 2, 0)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Register(Ref("job-9", v1::ROLE_TRAINER, 0, 0)).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(JobManagerTest, PlacesRanksOnTheNodesTheSpecAsksFor) {
  auto job = manager_->Submit(Spec(4, 1, "cluster { nodes: 2 time_limit_minutes: 30 cpus_per_task: 3 }"), "spec",
                              "alice");
  ASSERT_TRUE(job.ok()) << job.status();
  const std::vector<ProcessSpec> started = launcher_.started();
  ASSERT_EQ(started.size(), 5u);
  for (int r = 0; r < 4; ++r) {
    const Placement& p = started[r].placement;
    EXPECT_EQ(p.job_id, "job-1");
    EXPECT_EQ(p.group, "trainers");
    EXPECT_EQ(p.name, absl::StrCat("trainer-", r, "-g0"));
    EXPECT_EQ(p.nodes, 2);
    EXPECT_EQ(p.tasks_per_node, 2);
    EXPECT_EQ(p.node, r / 2);
    EXPECT_EQ(p.time_limit_minutes, 30);
    EXPECT_EQ(p.cpus_per_task, 3);
    EXPECT_EQ(p.host_flag, "--hostname");
  }
  const Placement& evaluator = started[4].placement;
  EXPECT_EQ(evaluator.group, "evaluator-0");
  EXPECT_EQ(evaluator.nodes, 1);
  EXPECT_EQ(evaluator.tasks_per_node, 1);
  EXPECT_EQ(evaluator.host_flag, "");
  ASSERT_TRUE(manager_->Cancel(job->id(), "alice").ok());
  // Once every worker is gone, what the cluster holds for the job is given back.
  for (int i = 0; i < 1000 && launcher_.released().empty(); ++i) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  EXPECT_EQ(launcher_.released(), std::vector<std::string>{"job-1"});
}

TEST_F(JobManagerTest, TimeInTheClustersQueueDoesNotCountAgainstRegistering) {
  manager_.reset();
  options_.register_timeout = absl::Milliseconds(100);
  launcher_.SetClusterState(ClusterJobState{"PENDING (Resources)", true});
  StartManager();
  auto job = manager_->Submit(Spec(1, 0), "spec", "alice");
  ASSERT_TRUE(job.ok()) << job.status();
  absl::SleepFor(absl::Milliseconds(400));
  v1::Job queued = *manager_->GetJob(job->id());
  EXPECT_EQ(queued.state(), v1::JOB_RUNNING);
  ASSERT_EQ(queued.workers_size(), 1);
  EXPECT_EQ(queued.workers(0).state(), v1::WORKER_STARTING);
  EXPECT_EQ(queued.workers(0).cluster_job_state(), "PENDING (Resources)");
  // Running there, the worker must register in time again.
  launcher_.SetClusterState(ClusterJobState{"RUNNING", false});
  v1::Job failed = WaitJob(job->id(), [](const v1::Job& j) { return j.restarts() == 1; });
  EXPECT_TRUE(absl::StrContains(failed.reason(), "did not register")) << failed.reason();
}

TEST_F(JobManagerTest, OnlyTheOwnerCancelsAJob) {
  auto job = manager_->Submit(Spec(1, 0), "spec", "alice");
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->owner(), "alice");
  auto refused = manager_->Cancel(job->id(), "bob");
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_TRUE(absl::StrContains(refused.status().message(), "belongs to alice")) << refused.status();
  EXPECT_EQ(manager_->GetJob(job->id())->state(), v1::JOB_RUNNING);
  auto cancelled = manager_->Cancel(job->id(), "alice");
  ASSERT_TRUE(cancelled.ok()) << cancelled.status();
  EXPECT_EQ(cancelled->state(), v1::JOB_CANCELLED);
}

TEST_F(JobManagerTest, GpuWorkersEachSeeTheirOwnGpu) {
  auto job = manager_->Submit(Spec(2, 1, "device: \"gpu\""), "spec", "alice");
  ASSERT_TRUE(job.ok()) << job.status();
  auto second = manager_->Submit(Spec(1, 0, "device: \"gpu\""), "spec", "alice");
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(second->state(), v1::JOB_PENDING);  // all 3 GPUs are taken
  const std::vector<ProcessSpec> started = launcher_.started();
  ASSERT_EQ(started.size(), 3u);
  EXPECT_EQ(Env(started[0], "CUDA_VISIBLE_DEVICES"), "0");
  EXPECT_EQ(Env(started[1], "CUDA_VISIBLE_DEVICES"), "1");
  EXPECT_EQ(Env(started[2], "CUDA_VISIBLE_DEVICES"), "2");
  EXPECT_EQ(job->workers(2).gpus(0), 2);
  // Cancelled, its GPUs go to the job that waited.
  ASSERT_TRUE(manager_->Cancel(job->id(), "alice").ok());
  v1::Job next =
      WaitJob(second->id(), [](const v1::Job& j) { return j.state() == v1::JOB_RUNNING; });
  EXPECT_EQ(next.allocation().gpus_size(), 1);
}

TEST_F(JobManagerTest, ADeadRankRestartsTheGroupFromTheNewestCheckpoint) {
  auto job = manager_->Submit(Spec(2, 0), "spec", "alice");
  ASSERT_TRUE(job.ok()) << job.status();
  const std::string id = job->id();
  const v1::WorkerRef rank0 = Ref(id, v1::ROLE_TRAINER, 0, 0),
                      rank1 = Ref(id, v1::ROLE_TRAINER, 1, 0);
  ASSERT_TRUE(Register(rank0).ok() && Register(rank1).ok());
  auto partial = Checkpoint(rank0, 10);
  ASSERT_TRUE(partial.ok()) << partial.status();
  EXPECT_FALSE(partial->complete());
  auto complete = Checkpoint(rank1, 10);
  ASSERT_TRUE(complete.ok()) << complete.status();
  EXPECT_TRUE(complete->complete());
  ASSERT_TRUE(Checkpoint(rank0, 20).ok());  // rank 1 dies before its part of 20

  const int64_t pid0 = job->workers(0).pid(), pid1 = job->workers(1).pid();
  launcher_.Exit(pid1, 128 + SIGKILL);
  v1::Job restarted = WaitJob(id, [](const v1::Job& j) { return j.generation() == 1; });
  EXPECT_EQ(restarted.restarts(), 1);
  EXPECT_TRUE(absl::StrContains(restarted.reason(), "trainer-1 was killed by signal 9"))
      << restarted.reason();
  // The survivor was told to stop, and the old generation is shut out.
  EXPECT_TRUE(launcher_.signalled(pid0));
  v1::HeartbeatRequest beat;
  *beat.mutable_worker() = rank0;
  auto answer = manager_->Heartbeat(beat);
  ASSERT_TRUE(answer.ok());
  EXPECT_TRUE(answer->stop());
  EXPECT_EQ(Checkpoint(rank0, 30).status().code(), absl::StatusCode::kAborted);

  // Once the old processes are gone, generation 1 starts and resumes from step 10.
  restarted = WaitJob(id, [](const v1::Job& j) {
    return j.workers_size() == 2 && j.workers(0).ref().generation() == 1;
  });
  EXPECT_EQ(launcher_.started().size(), 4u);
  EXPECT_EQ(Env(launcher_.started()[3], "MODAMBA_GENERATION"), "1");
  auto resumed = Register(Ref(id, v1::ROLE_TRAINER, 1, 1));
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  ASSERT_TRUE(resumed->has_resume_checkpoint());
  EXPECT_EQ(resumed->resume_checkpoint().step(), 10);
  EXPECT_EQ(resumed->resume_checkpoint().files_size(), 2);
}

TEST_F(JobManagerTest, RestartsAreBoundedThenTheJobFails) {
  auto job = manager_->Submit(Spec(1, 0, "max_restarts: 1"), "spec", "alice");
  ASSERT_TRUE(job.ok());
  launcher_.Exit(job->workers(0).pid(), 3);
  v1::Job once = WaitJob(job->id(), [](const v1::Job& j) {
    return j.generation() == 1 && j.workers(0).ref().generation() == 1;
  });
  launcher_.Exit(once.workers(0).pid(), 3);
  v1::Job failed = WaitJob(job->id(), [](const v1::Job& j) { return j.state() == v1::JOB_FAILED; });
  EXPECT_EQ(failed.restarts(), 1);
  EXPECT_TRUE(absl::StrContains(failed.reason(), "exited with code 3; no restarts left"))
      << failed.reason();
  // The CPU slot comes back.
  WaitJob(job->id(), [](const v1::Job& j) { return !j.has_allocation(); });
}

TEST_F(JobManagerTest, EvaluatorsShareCheckpointsAndRetentionSparesTheirs) {
  auto job = manager_->Submit(Spec(1, 2, "keep_last_checkpoints: 1"), "spec", "alice");
  ASSERT_TRUE(job.ok());
  const std::string id = job->id();
  const v1::WorkerRef trainer = Ref(id, v1::ROLE_TRAINER, 0, 0);
  const v1::WorkerRef eval0 = Ref(id, v1::ROLE_EVALUATOR, 0, 0),
                      eval1 = Ref(id, v1::ROLE_EVALUATOR, 1, 0);
  ASSERT_TRUE(Register(trainer).ok() && Register(eval0).ok() && Register(eval1).ok());
  auto await = [&](const v1::WorkerRef& ref, int64_t finished, absl::Duration wait) {
    v1::AwaitCheckpointRequest request;
    *request.mutable_worker() = ref;
    request.set_finished_step(finished);
    return manager_->AwaitCheckpoint(request, absl::Now() + wait);
  };
  // Nothing yet: the wait ends empty.
  auto none = await(eval0, -1, absl::Milliseconds(20));
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_checkpoint() || none->job_done());

  ASSERT_TRUE(Checkpoint(trainer, 10).ok());
  ASSERT_TRUE(Checkpoint(trainer, 20).ok());
  auto first = await(eval0, -1, absl::Seconds(5));
  auto second = await(eval1, -1, absl::Milliseconds(50));
  ASSERT_TRUE(first.ok() && second.ok());
  // Retention (keep 1) already took step 10, unclaimed: evaluator 0 gets 20.
  EXPECT_EQ(first->checkpoint().step(), 20);
  EXPECT_FALSE(second->has_checkpoint());

  ASSERT_TRUE(Checkpoint(trainer, 30).ok());
  auto checkpoints = manager_->Checkpoints(id);
  ASSERT_TRUE(checkpoints.ok());
  std::map<int64_t, v1::CheckpointInfo> by_step;
  for (const auto& c : *checkpoints) by_step[c.step()] = c;
  EXPECT_TRUE(by_step[10].deleted());
  EXPECT_FALSE(by_step[20].deleted());  // evaluator 0 still holds it
  auto third = await(eval1, -1, absl::Seconds(5));
  ASSERT_TRUE(third.ok());
  EXPECT_EQ(third->checkpoint().step(), 30);
  // Evaluator 0 finishes 20: it goes; nothing is left for now.
  auto after = await(eval0, 20, absl::Milliseconds(20));
  ASSERT_TRUE(after.ok());
  EXPECT_FALSE(after->has_checkpoint());
  checkpoints = manager_->Checkpoints(id);
  ASSERT_TRUE(checkpoints.ok());
  for (const auto& c : *checkpoints) {
    if (c.step() == 20) {
      EXPECT_TRUE(c.deleted() && c.evaluated());
    }
  }

  // Training ends: evaluators hear job_done once all is evaluated, then the job succeeds.
  v1::DoneRequest done;
  *done.mutable_worker() = trainer;
  done.set_ok(true);
  ASSERT_TRUE(manager_->Done(done).ok());
  auto last = await(eval1, 30, absl::Seconds(5));
  ASSERT_TRUE(last.ok());
  EXPECT_TRUE(last->job_done());
  for (const v1::WorkerRef& ref : {eval0, eval1}) {
    *done.mutable_worker() = ref;
    ASSERT_TRUE(manager_->Done(done).ok());
  }
  EXPECT_EQ(manager_->GetJob(id)->state(), v1::JOB_SUCCEEDED);
}

TEST_F(JobManagerTest, TheRendezvousStoreIsScopedToTheGeneration) {
  auto job = manager_->Submit(Spec(2, 0), "spec", "alice");
  ASSERT_TRUE(job.ok());
  const v1::WorkerRef rank0 = Ref(job->id(), v1::ROLE_TRAINER, 0, 0);
  const v1::WorkerRef rank1 = Ref(job->id(), v1::ROLE_TRAINER, 1, 0);
  ASSERT_TRUE(manager_->KvSet(rank0, "id", "nccl-unique-id").ok());
  EXPECT_EQ(*manager_->KvGet(rank1, "id", absl::Now()), "nccl-unique-id");
  EXPECT_EQ(*manager_->KvAdd(rank0, "n", 2), 2);
  EXPECT_EQ(*manager_->KvAdd(rank1, "n", 3), 5);
  EXPECT_TRUE(*manager_->KvCheck(rank1, {"id", "n"}));
  EXPECT_FALSE(*manager_->KvCheck(rank1, {"id", "other"}));
  EXPECT_EQ(manager_->KvGet(rank1, "other", absl::Now() + absl::Milliseconds(20)).status().code(),
            absl::StatusCode::kDeadlineExceeded);
  // A waiting Get returns when another rank sets the key.
  std::thread setter([&] {
    absl::SleepFor(absl::Milliseconds(50));
    ASSERT_TRUE(manager_->KvSet(rank0, "late", "v").ok());
  });
  EXPECT_EQ(*manager_->KvGet(rank1, "late", absl::Now() + absl::Seconds(5)), "v");
  setter.join();
  EXPECT_EQ(
      manager_->KvGet(Ref(job->id(), v1::ROLE_TRAINER, 1, 7), "id", absl::Now()).status().code(),
      absl::StatusCode::kAborted);
}

TEST_F(JobManagerTest, OnlyEvalPointsCarrySpeechAndWithinTheLimit) {
  auto job = manager_->Submit(Spec(1, 0), "spec", "alice");
  ASSERT_TRUE(job.ok());
  const v1::WorkerRef trainer = Ref(job->id(), v1::ROLE_TRAINER, 0, 0);
  ASSERT_TRUE(Register(trainer).ok());
  v1::ReportMetricsRequest metrics;
  *metrics.mutable_worker() = trainer;
  v1::MetricPoint* point = metrics.add_points();
  point->set_kind("train");
  (*point->mutable_speech_wav())["7"] = "RIFF";
  absl::Status status = manager_->ReportMetrics(metrics);
  EXPECT_TRUE(absl::IsInvalidArgument(status) && absl::StrContains(status.message(), "speech_wav"))
      << status;
  point->set_kind("eval");
  (*point->mutable_speech_wav())["7"] = std::string(kMaxSpeechWavBytes + 1, 'x');
  status = manager_->ReportMetrics(metrics);
  EXPECT_TRUE(absl::StrContains(status.message(), "larger than")) << status;
  (*point->mutable_speech_wav())["7"] = "RIFF";
  EXPECT_TRUE(manager_->ReportMetrics(metrics).ok());
  EXPECT_EQ(manager_->Metrics(job->id(), 0, 0)->points(0).speech_wav().at("7"), "RIFF");
}

TEST_F(JobManagerTest, AJobKeepsEachDistinctNoteOfItsPoints) {
  auto job = manager_->Submit(Spec(1, 1), "spec", "alice");
  ASSERT_TRUE(job.ok());
  const v1::WorkerRef evaluator = Ref(job->id(), v1::ROLE_EVALUATOR, 0, 0);
  ASSERT_TRUE(Register(evaluator).ok());
  v1::ReportMetricsRequest metrics;
  *metrics.mutable_worker() = evaluator;
  v1::MetricPoint* point = metrics.add_points();
  point->set_kind("eval");
  point->add_notes("evaluator: no raw data");
  ASSERT_TRUE(manager_->ReportMetrics(metrics).ok());
  ASSERT_TRUE(manager_->ReportMetrics(metrics).ok());
  auto stored = manager_->GetJob(job->id());
  ASSERT_TRUE(stored.ok());
  ASSERT_EQ(stored->notes_size(), 1);
  EXPECT_EQ(stored->notes(0), "evaluator: no raw data");
  point->set_notes(0, std::string(kMaxNoteBytes + 1, 'x'));
  const absl::Status status = manager_->ReportMetrics(metrics);
  EXPECT_TRUE(absl::IsInvalidArgument(status) && absl::StrContains(status.message(), "points.notes"))
      << status;
}

TEST_F(JobManagerTest, AnEndedJobsRendezvousKeysAreDeleted) {
  auto job = manager_->Submit(Spec(1, 0), "spec", "alice");
  ASSERT_TRUE(job.ok());
  ASSERT_TRUE(manager_->KvSet(Ref(job->id(), v1::ROLE_TRAINER, 0, 0), "addr", "a").ok());
  ASSERT_EQ(db_->Load()->kv.count(job->id() + "/trainer/g0"), 1u);
  ASSERT_TRUE(manager_->Cancel(job->id(), "alice").ok());
  EXPECT_EQ(db_->Load()->kv.count(job->id() + "/trainer/g0"), 0u);
}

TEST_F(JobManagerTest, ARestartedManagerRemembersEverything) {
  auto job = manager_->Submit(Spec(1, 0), "spec", "alice");
  ASSERT_TRUE(job.ok());
  const v1::WorkerRef trainer = Ref(job->id(), v1::ROLE_TRAINER, 0, 0);
  ASSERT_TRUE(Register(trainer).ok());
  v1::ReportMetricsRequest metrics;
  *metrics.mutable_worker() = trainer;
  for (int step = 1; step <= 3; ++step) {
    v1::MetricPoint* point = metrics.add_points();
    point->set_kind("train");
    point->set_step(step);
    (*point->mutable_losses())["text"] = 4.0 - step;
  }
  ASSERT_TRUE(manager_->ReportMetrics(metrics).ok());
  ASSERT_TRUE(Checkpoint(trainer, 10).ok());
  ASSERT_TRUE(manager_->KvSet(trainer, "k", "v").ok());
  auto second = manager_->Submit(Spec(1, 0), "spec", "alice");
  ASSERT_TRUE(second.ok());

  manager_.reset();
  db_.reset();
  auto db = Db::Open(root_ + "/state.db");
  ASSERT_TRUE(db.ok()) << db.status();
  db_ = std::move(*db);
  StartManager();

  auto restored = manager_->GetJob(job->id());
  ASSERT_TRUE(restored.ok());
  EXPECT_EQ(restored->state(), v1::JOB_RUNNING);
  EXPECT_EQ(restored->step(), 3);
  EXPECT_EQ(restored->latest_checkpoint_step(), 10);
  EXPECT_EQ(manager_->Metrics(job->id(), 0, 0)->points_size(), 3);
  EXPECT_EQ(*manager_->KvGet(trainer, "k", absl::Now()), "v");
  // The worker carries on with the new manager: no new launch.
  v1::HeartbeatRequest beat;
  *beat.mutable_worker() = trainer;
  EXPECT_FALSE(manager_->Heartbeat(beat)->stop());
  EXPECT_EQ(launcher_.started().size(), 2u);
  auto third = manager_->Submit(Spec(1, 0), "spec", "alice");
  ASSERT_TRUE(third.ok());
  EXPECT_EQ(third->id(), "job-3");
}

// The database on a small real filesystem that the test fills up.
class JobManagerDiskTest : public JobManagerTest {
 protected:
  void SetUp() override {
    disk_ = absl::StrCat(getenv("TEST_TMPDIR"), "/small-db");
    absl::Status mounted = MountSmallFilesystem(disk_, 256 << 10);
    if (!mounted.ok()) GTEST_SKIP() << mounted;
    db_path_ = disk_ + "/state.db";
    JobManagerTest::SetUp();
  }
  std::string disk_;
};

TEST_F(JobManagerDiskTest, AFullDatabaseRefusesUsersDegradesAndSparesTheJobs) {
  auto running = manager_->Submit(Spec(1, 0), "spec", "alice");
  ASSERT_TRUE(running.ok()) << running.status();
  const v1::WorkerRef trainer = Ref(running->id(), v1::ROLE_TRAINER, 0, 0);
  ASSERT_TRUE(Register(trainer).ok());
  ASSERT_TRUE(FillFilesystem(disk_ + "/filler").ok());

  // A submission that cannot be stored is refused, and leaves nothing.
  auto refused = manager_->Submit(Spec(1, 0), "spec", "alice");
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnavailable) << refused.status();
  EXPECT_TRUE(absl::StrContains(refused.status().message(), "No space left on device"))
      << refused.status();
  EXPECT_EQ(manager_->ListJobs().size(), 1u);
  EXPECT_FALSE(FileExists(options_.run_root + "/job-2"));
  // So is a cancel: it would not survive a restart.
  EXPECT_FALSE(manager_->Cancel(running->id(), "alice").ok());

  // The running job's worker is not failed by it: its calls succeed.
  v1::ReportMetricsRequest metrics;
  *metrics.mutable_worker() = trainer;
  for (int step = 1; step <= 200; ++step) {
    v1::MetricPoint* point = metrics.add_points();
    point->set_kind("train");
    point->set_step(step);
    (*point->mutable_scalars())["padding"] = step;
  }
  EXPECT_TRUE(manager_->ReportMetrics(metrics).ok());
  // Checked only now: a small write queued before (a heartbeat) may still fit in the
  // database's free pages and clear the flag, but 200 points cannot be written.
  EXPECT_TRUE(absl::StrContains(manager_->Degraded(), "No space left on device"))
      << manager_->Degraded();
  EXPECT_EQ(manager_->GetJob(running->id())->state(), v1::JOB_RUNNING);

  // Space again: what was queued is written, and it survives a restart.
  ASSERT_EQ(unlink((disk_ + "/filler").c_str()), 0);
  for (int i = 0; i < 1000 && !manager_->Degraded().empty(); ++i) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  EXPECT_EQ(manager_->Degraded(), "");
  manager_.reset();
  db_.reset();
  auto db = Db::Open(db_path_);
  ASSERT_TRUE(db.ok()) << db.status();
  db_ = std::move(*db);
  StartManager();
  EXPECT_EQ(manager_->Metrics(running->id(), 0, 0)->points_size(), 200);
  auto next = manager_->Submit(Spec(1, 0), "spec", "alice");
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_EQ(next->id(), "job-2");
}

}  // namespace
}  // namespace modamba
