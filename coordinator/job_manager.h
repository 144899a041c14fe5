// The coordinator's state machine: jobs, their workers, checkpoint records,
// metrics and rendezvous keys, kept in memory for fast answers and written
// through to SQLite on every change, so a coordinator restarted after kill -9
// picks up where it stopped.
//
// Job states: PENDING -> RUNNING -> SUCCEEDED | FAILED | CANCELLED. A job runs
// when the scheduler gives it devices; its trainer ranks then form one group
// of a generation. When any rank of the group dies (exits non-zero, is
// killed, stops heartbeating, or never registers), the whole group is stopped
// and a new generation is launched that resumes from the newest complete
// checkpoint, up to spec.max_restarts times; then the job FAILS with the
// reason. Evaluators are independent: a dead evaluator is relaunched alone
// (from the same restart budget). The job SUCCEEDS when every trainer and
// every evaluator has finished.
//
// A supervisor thread reaps worker processes, times out heartbeats, escalates
// SIGTERM to SIGKILL, launches restarts and starts pending jobs.
#ifndef MODAMBA_COORDINATOR_JOB_MANAGER_H_
#define MODAMBA_COORDINATOR_JOB_MANAGER_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "coordinator/checkpoint_store.h"
#include "coordinator/db.h"
#include "coordinator/job_spec.h"
#include "coordinator/launcher.h"
#include "coordinator/scheduler.h"
#include "proto/job.pb.h"
#include "proto/service.pb.h"
#include "worker/limits.h"

namespace modamba {

struct ManagerOptions {
  // Each job gets RUN_ROOT/<job id>/ with job_spec.textproto, logs/<worker>.log
  // and one working directory per worker (trainer-R, evaluator-I).
  std::string run_root;
  std::string trainer_binary;
  std::string evaluator_binary;
  // Each worker's own token (coordinator/auth.h), written at launch into a
  // file of its run directory (mode 0600); with TLS, the root certificate
  // workers trust.
  std::function<std::string(const v1::WorkerRef&)> worker_token;
  std::string worker_tls_ca_file;
  SpecContext spec_context;
  absl::Duration heartbeat_timeout = absl::Seconds(30);
  absl::Duration register_timeout = absl::Minutes(5);
  absl::Duration stop_grace = absl::Seconds(10);
  absl::Duration tick = absl::Milliseconds(100);
};

// The most metric points one answer carries (limits on reports: limits.h).
inline constexpr int kMaxMetricsPerAnswer = 10000;

class JobManager {
 public:
  // Loads the stored state and re-adopts the workers of running jobs.
  // `db`, `store` and `launcher` must outlive the manager.
  static absl::StatusOr<std::unique_ptr<JobManager>> Create(ManagerOptions options, Db* db,
                                                            CheckpointStore* store,
                                                            Launcher* launcher);
  // Starts launching workers, which will dial `worker_address` (HOST:PORT),
  // and the supervisor. Until then jobs are accepted but wait. Kept apart from
  // Create because the gRPC port is only known once the server, which needs
  // the manager, is serving.
  void Start(const std::string& worker_address);
  // Stops the supervisor; workers keep running (a new coordinator adopts them).
  ~JobManager();

  // --- Users -------------------------------------------------------------

  // `owner`: the submitting user, the only one who may cancel the job.
  absl::StatusOr<v1::Job> Submit(absl::string_view spec_text, const std::string& source,
                                 const std::string& owner);
  absl::StatusOr<v1::Job> GetJob(const std::string& job_id) const;
  std::vector<v1::Job> ListJobs() const;
  // PERMISSION_DENIED unless `user` owns the job (jobs without an owner:
  // anyone).
  absl::StatusOr<v1::Job> Cancel(const std::string& job_id, const std::string& user);

  struct JobSnapshot {
    v1::Job job;
    int64_t version = 0;  // changes whenever anything about the job does
    std::vector<v1::MetricPoint> metrics;
  };
  // The job once its version differs from `seen_version` (or at `deadline`),
  // with the metric points whose seq is greater than `after_seq`.
  absl::StatusOr<JobSnapshot> WaitJob(const std::string& job_id, int64_t seen_version,
                                      int64_t after_seq, absl::Time deadline) const;
  absl::StatusOr<v1::GetMetricsResponse> Metrics(const std::string& job_id, int64_t after_seq,
                                                 int limit) const;
  std::vector<v1::WorkerInfo> Workers(const std::string& job_id) const;
  absl::StatusOr<std::vector<v1::CheckpointInfo>> Checkpoints(const std::string& job_id) const;
  // "" when healthy; else why the coordinator is degraded (its database
  // cannot be written: "cannot write the database: sqlite: database or disk
  // is full (No space left on device)").
  std::string Degraded() const;
  // The log file of worker `worker` ("trainer-0", "evaluator-1").
  absl::StatusOr<std::string> LogPath(const std::string& job_id, const std::string& worker) const;

  // --- Workers (WorkerService) -------------------------------------------

  absl::StatusOr<v1::RegisterResponse> Register(const v1::RegisterRequest& request);
  absl::StatusOr<v1::HeartbeatResponse> Heartbeat(const v1::HeartbeatRequest& request);
  absl::Status ReportMetrics(const v1::ReportMetricsRequest& request);
  absl::StatusOr<v1::ReportCheckpointResponse> ReportCheckpoint(
      const v1::ReportCheckpointRequest& request);
  absl::StatusOr<v1::AwaitCheckpointResponse> AwaitCheckpoint(
      const v1::AwaitCheckpointRequest& request, absl::Time deadline);
  absl::Status Done(const v1::DoneRequest& request);

  absl::Status KvSet(const v1::WorkerRef& ref, const std::string& key, const std::string& value);
  absl::StatusOr<std::string> KvGet(const v1::WorkerRef& ref, const std::string& key,
                                    absl::Time deadline);
  absl::StatusOr<int64_t> KvAdd(const v1::WorkerRef& ref, const std::string& key, int64_t delta);
  absl::StatusOr<bool> KvCheck(const v1::WorkerRef& ref, const std::vector<std::string>& keys);

  // --- Checkpoint files (CheckpointService) ------------------------------

  // Whether trainer `ref` may upload files of checkpoint `step` now.
  absl::Status CheckUpload(const v1::WorkerRef& ref, int64_t step) const;
  // Publishes a received and verified file (`writer` finished) and records it
  // in the checkpoint, if `ref` may still upload to it.
  absl::StatusOr<v1::CheckpointFile> PublishUpload(const v1::WorkerRef& ref, int64_t step,
                                                   CheckpointStore::Writer* writer);
  // A checkpoint that may be served: complete, kept and not known corrupt.
  absl::StatusOr<v1::CheckpointInfo> ServableCheckpoint(const std::string& job_id,
                                                        int64_t step) const;
  // Records that a file of the checkpoint failed its sha256 on disk: it is
  // never served or resumed from again.
  void MarkCorrupt(const std::string& job_id, int64_t step, const std::string& why);

 private:
  struct Worker;
  struct JobEntry;

  JobManager(ManagerOptions options, Db* db, CheckpointStore* store, Launcher* launcher);
  absl::Status Restore();
  void SuperviseLoop();

  // Everything below runs with mu_ held.
  JobEntry* FindJobLocked(const std::string& job_id) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<JobEntry*> JobOrError(const std::string& job_id) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The current incarnation of the worker `ref` names. ABORTED when `ref` is
  // an older generation or the worker or its job has ended.
  absl::StatusOr<Worker*> LiveWorkerLocked(const v1::WorkerRef& ref, JobEntry** job) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  v1::Job JobWithWorkersLocked(const JobEntry& job) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  const v1::CheckpointInfo* NewestGoodCheckpointLocked(const JobEntry& job) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  void TickLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ScheduleLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void LaunchTrainersLocked(JobEntry* job) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void LaunchWorkerLocked(JobEntry* job, Worker* worker) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void OnExitLocked(JobEntry* job, Worker* worker, const ProcessExit& exit)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void OnWorkerFailedLocked(JobEntry* job, Worker* worker, const std::string& why)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void OnWorkerSucceededLocked(JobEntry* job, Worker* worker) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void StopWorkerLocked(JobEntry* job, Worker* worker, const std::string& why)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void EndJobLocked(JobEntry* job, v1::JobState state, const std::string& why)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool TrainersDoneLocked(const JobEntry& job) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ApplyRetentionLocked(JobEntry* job) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::string KvNamespace(const v1::WorkerRef& ref) const;

  // Marks the job (and its waiters) changed and queues its rows for writing.
  void TouchJobLocked(JobEntry* job) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void TouchWorkerLocked(JobEntry* job, Worker* worker) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void TouchCheckpointLocked(JobEntry* job, int64_t step) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Writes what was queued since the last flush, in one transaction. On an
  // error everything stays queued and the coordinator is degraded (Health)
  // until a flush succeeds. Users' requests fail on it; workers' calls do
  // not (their jobs go on, and what they changed is written once the
  // database can be written again).
  absl::Status FlushLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Records a failed write (the coordinator is degraded) and returns the
  // error users see.
  absl::Status DegradedLocked(const absl::Status& write_error) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const ManagerOptions options_;
  Db* const db_;
  CheckpointStore* const store_;
  Launcher* const launcher_;

  mutable absl::Mutex mu_;
  mutable absl::CondVar changed_;  // signalled after every change
  Scheduler scheduler_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::unique_ptr<JobEntry>> jobs_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> order_ ABSL_GUARDED_BY(mu_);  // submission order
  int64_t next_job_number_ ABSL_GUARDED_BY(mu_) = 1;
  std::map<std::string, std::map<std::string, std::string>> kv_ ABSL_GUARDED_BY(mu_);
  // Processes of replaced workers, polled until reaped.
  std::vector<ProcessHandle> dying_ ABSL_GUARDED_BY(mu_);
  // Rows changed since the last flush, and appended metrics and kv writes.
  std::set<std::string> dirty_jobs_ ABSL_GUARDED_BY(mu_);
  std::set<std::tuple<std::string, int, int>> dirty_workers_ ABSL_GUARDED_BY(mu_);
  std::set<std::pair<std::string, int64_t>> dirty_checkpoints_ ABSL_GUARDED_BY(mu_);
  WriteBatch pending_ ABSL_GUARDED_BY(mu_);
  std::string worker_address_ ABSL_GUARDED_BY(mu_);  // set by Start
  std::string db_error_ ABSL_GUARDED_BY(mu_);        // the last flush's error; "" when it worked
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread supervisor_;
};

}  // namespace modamba

#endif  // MODAMBA_COORDINATOR_JOB_MANAGER_H_
