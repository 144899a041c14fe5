// The job side of the manager: submission, scheduling, launching, the
// supervisor and the state transitions. The worker-facing calls are in
// job_manager_workers.cc.
#include "coordinator/job_manager.h"

#include <sys/stat.h>

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "coordinator/job_manager_internal.h"
#include "core/file_util.h"
#include "core/status_macros.h"
#include "glog/logging.h"
#include "google/protobuf/text_format.h"

namespace modamba {

using internal::HostName;
using internal::IsTerminal;
using internal::kOomKilled;
using internal::NowMs;
using internal::WorkerName;

JobManager::JobManager(ManagerOptions options, Db* db, CheckpointStore* store, Launcher* launcher)
    : options_(std::move(options)),
      db_(db),
      store_(store),
      launcher_(launcher),
      scheduler_(options_.spec_context.gpus, options_.spec_context.cpu_slots) {}

absl::StatusOr<std::unique_ptr<JobManager>> JobManager::Create(ManagerOptions options, Db* db,
                                                               CheckpointStore* store,
                                                               Launcher* launcher) {
  std::unique_ptr<JobManager> manager(new JobManager(std::move(options), db, store, launcher));
  RETURN_IF_ERROR(manager->Restore());
  return manager;
}

void JobManager::Start(const std::string& worker_address) {
  {
    absl::MutexLock lock(&mu_);
    worker_address_ = worker_address;
    started_ = true;
    // Evaluator slots of running jobs that a previous coordinator never launched.
    for (const std::string& id : order_) {
      JobEntry* job = jobs_[id].get();
      if (job->job.state() != v1::JOB_RUNNING) continue;
      job->evaluators.resize(job->job.spec().n_evaluators());
      for (int i = 0; i < static_cast<int>(job->evaluators.size()); ++i) {
        Worker& evaluator = job->evaluators[i];
        if (evaluator.info.has_ref() || job->job.state() != v1::JOB_RUNNING) continue;
        evaluator.info.mutable_ref()->set_job_id(id);
        evaluator.info.mutable_ref()->set_role(v1::ROLE_EVALUATOR);
        evaluator.info.mutable_ref()->set_rank(i);
        LaunchWorkerLocked(job, &evaluator);
      }
    }
    FlushLocked().IgnoreError();
  }
  supervisor_ = std::thread([this] { SuperviseLoop(); });
}

JobManager::~JobManager() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    changed_.SignalAll();
  }
  if (supervisor_.joinable()) supervisor_.join();
}

absl::Status JobManager::Restore() {
  ASSIGN_OR_RETURN(StoredState state, db_->Load());
  absl::MutexLock lock(&mu_);
  const absl::Time now = absl::Now();
  for (v1::Job& record : state.jobs) {
    auto job = std::make_unique<JobEntry>();
    job->job = std::move(record);
    int64_t number = 0;
    if (absl::SimpleAtoi(absl::string_view(job->job.id()).substr(4), &number)) {
      next_job_number_ = std::max(next_job_number_, number + 1);
    }
    order_.push_back(job->job.id());
    jobs_[job->job.id()] = std::move(job);
  }
  for (v1::WorkerInfo& info : state.workers) {
    JobEntry* job = FindJobLocked(info.ref().job_id());
    if (job == nullptr) continue;
    std::vector<Worker>& list =
        info.ref().role() == v1::ROLE_TRAINER ? job->trainers : job->evaluators;
    const int rank = info.ref().rank();
    if (rank < 0 || rank >= 1024) continue;
    if (static_cast<int>(list.size()) <= rank) list.resize(rank + 1);
    Worker& worker = list[rank];
    worker.info = std::move(info);
    // Every worker gets a full timeout from now to show up again.
    worker.last_seen = now;
    worker.gone = worker.info.pid() <= 0;
    if (worker.info.state() == v1::WORKER_STOPPING && !worker.gone) {
      launcher_->Stop(worker.handle(), /*kill=*/false);
      worker.kill_at = now + options_.stop_grace;
    }
  }
  for (v1::CheckpointInfo& checkpoint : state.checkpoints) {
    if (JobEntry* job = FindJobLocked(checkpoint.job_id())) {
      job->checkpoints[checkpoint.step()] = std::move(checkpoint);
    }
  }
  for (auto& [job_id, points] : state.metrics) {
    if (JobEntry* job = FindJobLocked(job_id)) job->metrics = std::move(points);
  }
  kv_ = std::move(state.kv);

  for (const std::string& id : order_) {
    JobEntry* job = jobs_[id].get();
    if (job->job.has_allocation()) {
      absl::Status restored = scheduler_.Restore(job->job.allocation());
      if (!restored.ok()) {
        job->job.clear_allocation();
        if (!IsTerminal(job->job.state())) EndJobLocked(job, v1::JOB_FAILED, restored.ToString());
        continue;
      }
    }
    if (job->job.state() != v1::JOB_RUNNING) continue;
    LOG(INFO) << "re-adopting " << id << " (generation " << job->job.generation() << ")";
    // A restart the previous coordinator had begun but not finished.
    bool current = static_cast<int>(job->trainers.size()) == job->job.spec().world_size();
    for (const Worker& t : job->trainers) {
      current = current && t.info.ref().generation() == job->job.generation();
    }
    job->restart_pending = !current;
  }
  return FlushLocked();
}

void JobManager::SuperviseLoop() {
  absl::MutexLock lock(&mu_);
  while (!stopping_) {
    TickLocked();
    mu_.AwaitWithTimeout(absl::Condition(&stopping_), options_.tick);
  }
}

void JobManager::TickLocked() {
  const absl::Time now = absl::Now();
  for (const std::string& id : order_) {
    JobEntry* job = jobs_[id].get();
    for (std::vector<Worker>* list : {&job->trainers, &job->evaluators}) {
      for (size_t i = 0; i < list->size(); ++i) {
        Worker* worker = &(*list)[i];
        if (worker->gone) continue;
        if (std::optional<ProcessExit> exit = launcher_->Poll(worker->handle())) {
          worker->gone = true;
          OnExitLocked(job, worker, *exit);
          continue;
        }
        if (std::optional<ClusterJobState> cluster = launcher_->ClusterState(worker->handle())) {
          if (cluster->state != worker->info.cluster_job_state()) {
            worker->info.set_cluster_job_state(cluster->state);
            TouchWorkerLocked(job, worker);
          }
          // Time in the cluster's queue does not count against registering.
          if (cluster->queued) worker->last_seen = now;
        }
        const v1::WorkerState state = worker->info.state();
        if (state == v1::WORKER_STARTING && now - worker->last_seen > options_.register_timeout) {
          OnWorkerFailedLocked(job, worker,
                               absl::StrCat("did not register within ",
                                            absl::FormatDuration(options_.register_timeout)));
        } else if (state == v1::WORKER_RUNNING &&
                   now - worker->last_seen > options_.heartbeat_timeout) {
          OnWorkerFailedLocked(job, worker,
                               absl::StrCat("sent no heartbeat for ",
                                            absl::FormatDuration(options_.heartbeat_timeout)));
        } else if (now >= worker->kill_at) {
          LOG(WARNING) << id << ": " << WorkerName(worker->info.ref())
                       << " outlived its grace period; SIGKILL";
          launcher_->Stop(worker->handle(), /*kill=*/true);
          worker->kill_at = absl::InfiniteFuture();
        }
      }
    }
    auto all_gone = [](const std::vector<Worker>& list) {
      return std::all_of(list.begin(), list.end(), [](const Worker& w) { return w.gone; });
    };
    if (job->restart_pending && job->job.state() == v1::JOB_RUNNING && all_gone(job->trainers)) {
      LaunchTrainersLocked(job);
    }
    if (IsTerminal(job->job.state()) && job->job.has_allocation() && all_gone(job->trainers) &&
        all_gone(job->evaluators)) {
      scheduler_.Release(job->job.allocation());
      job->job.clear_allocation();
      launcher_->Release(id);
      TouchJobLocked(job);
    }
  }
  dying_.erase(
      std::remove_if(dying_.begin(), dying_.end(),
                     [this](const ProcessHandle& p) { return launcher_->Poll(p).has_value(); }),
      dying_.end());
  ScheduleLocked();
  if (!db_error_.empty() && dirty_jobs_.empty()) {
    // Degraded with nothing queued: rewriting the jobs' rows tells when the
    // database can be written again.
    dirty_jobs_.insert(order_.begin(), order_.end());
  }
  FlushLocked().IgnoreError();  // logged inside; retried at the next flush
}

void JobManager::ScheduleLocked() {
  if (!started_) return;
  std::vector<std::pair<std::string, const v1::JobSpec*>> pending;
  for (const std::string& id : order_) {
    const JobEntry& job = *jobs_[id];
    if (job.job.state() == v1::JOB_PENDING) pending.emplace_back(id, &job.job.spec());
  }
  if (pending.empty()) return;
  for (auto& [id, allocation] : scheduler_.Schedule(pending)) {
    JobEntry* job = jobs_[id].get();
    *job->job.mutable_allocation() = std::move(allocation);
    job->job.set_state(v1::JOB_RUNNING);
    job->job.set_start_time_ms(NowMs());
    TouchJobLocked(job);
    LOG(INFO) << "starting " << id << " (" << job->job.spec().name() << ")";
    LaunchTrainersLocked(job);
    job->evaluators.assign(job->job.spec().n_evaluators(), Worker());
    for (int i = 0; i < job->job.spec().n_evaluators() && job->job.state() == v1::JOB_RUNNING;
         ++i) {
      v1::WorkerRef* ref = job->evaluators[i].info.mutable_ref();
      ref->set_job_id(id);
      ref->set_role(v1::ROLE_EVALUATOR);
      ref->set_rank(i);
      LaunchWorkerLocked(job, &job->evaluators[i]);
    }
  }
}

void JobManager::LaunchTrainersLocked(JobEntry* job) {
  job->restart_pending = false;
  job->trainers.assign(job->job.spec().world_size(), Worker());
  for (int r = 0; r < job->job.spec().world_size() && job->job.state() == v1::JOB_RUNNING; ++r) {
    v1::WorkerRef* ref = job->trainers[r].info.mutable_ref();
    ref->set_job_id(job->job.id());
    ref->set_role(v1::ROLE_TRAINER);
    ref->set_rank(r);
    ref->set_generation(job->job.generation());
    LaunchWorkerLocked(job, &job->trainers[r]);
  }
}

void JobManager::LaunchWorkerLocked(JobEntry* job, Worker* worker) {
  const v1::WorkerRef& ref = worker->info.ref();
  const v1::JobSpec& spec = job->job.spec();
  const bool trainer = ref.role() == v1::ROLE_TRAINER;
  const std::string name = WorkerName(ref);
  const std::string job_dir = absl::StrCat(options_.run_root, "/", job->job.id());
  const std::string run_dir = absl::StrCat(job_dir, "/", name);
  const std::string log_path = absl::StrCat(job_dir, "/logs/", name, ".log");
  const std::string spec_path = absl::StrCat(job_dir, "/job_spec.textproto");

  worker->info.set_state(v1::WORKER_STARTING);
  worker->info.set_log_path(log_path);
  worker->info.set_host(HostName());
  worker->info.set_launch_time_ms(NowMs());
  worker->info.clear_gpus();
  worker->info.clear_cluster_job_id();
  worker->info.clear_cluster_job_state();
  // GPU jobs: trainer r takes the job's r-th GPU, evaluator i the one after the trainers'.
  const int device_index = trainer ? ref.rank() : spec.world_size() + ref.rank();
  std::string visible;
  if (device_index < job->job.allocation().gpus_size()) {
    const int gpu = job->job.allocation().gpus(device_index);
    worker->info.add_gpus(gpu);
    visible = absl::StrCat(gpu);
  }
  worker->last_seen = absl::Now();
  worker->kill_at = absl::InfiniteFuture();
  worker->claimed_step = -1;
  worker->gone = true;
  TouchWorkerLocked(job, worker);

  absl::Status made = MakeDirs(run_dir);
  if (made.ok()) made = MakeDirs(job_dir + "/logs");
  const std::string token_file = run_dir + "/worker.token";
  if (made.ok()) {
    v1::WorkerRef identity = ref;
    identity.clear_generation();
    const mode_t old_mask = umask(077);  // readable by the worker's user only
    made = WriteFileAtomic(token_file, options_.worker_token(identity) + "\n");
    umask(old_mask);
  }
  const int world = trainer ? spec.world_size() : spec.n_evaluators();
  ProcessSpec process;
  process.argv = {trainer ? options_.trainer_binary : options_.evaluator_binary,
                  "--job_spec=" + spec_path,
                  absl::StrCat("--rank=", ref.rank()),
                  absl::StrCat("--world_size=", world),
                  "--coordinator=" + worker_address_,
                  "--token_file=" + token_file,
                  "--run_dir=" + run_dir};
  process.env = {{"MODAMBA_JOB_ID", job->job.id()},
                 {"MODAMBA_ROLE", trainer ? "trainer" : "evaluator"},
                 {"MODAMBA_RANK", absl::StrCat(ref.rank())},
                 {"MODAMBA_WORLD_SIZE", absl::StrCat(world)},
                 {"MODAMBA_GENERATION", absl::StrCat(ref.generation())},
                 {"MODAMBA_COORDINATOR", worker_address_},
                 {"MODAMBA_TOKEN_FILE", token_file},
                 {"MODAMBA_TLS_CA", options_.worker_tls_ca_file},
                 {"MODAMBA_JOB_SPEC", spec_path},
                 {"MODAMBA_RUN_DIR", run_dir},
                 {"CUDA_VISIBLE_DEVICES", visible}};
  process.unset_env = {"MODAMBA_TOKEN"};
  process.log_path = log_path;
  Placement& placement = process.placement;
  placement.job_id = job->job.id();
  placement.group = trainer ? "trainers" : name;
  placement.name = absl::StrCat(name, "-g", ref.generation());
  placement.nodes = trainer ? spec.cluster().nodes() : 1;
  placement.tasks_per_node = trainer ? spec.world_size() / placement.nodes : 1;
  placement.node = trainer ? ref.rank() / placement.tasks_per_node : 0;
  placement.gpus_per_task = spec.device() == "gpu" ? 1 : 0;
  // Gloo ranks listen on the address they are given (the trainer's default: loopback).
  placement.host_flag = trainer ? "--hostname" : "";
  placement.partition = spec.cluster().partition();
  placement.time_limit_minutes = spec.cluster().time_limit_minutes();
  placement.cpus_per_task = spec.cluster().cpus_per_task();
  if (made.ok()) {
    // A line in the log between incarnations makes restarts easy to follow.
    FILE* log = fopen(log_path.c_str(), "a");
    if (log != nullptr) {
      fprintf(log, "=== %s: coordinator starts %s generation %d ===\n",
              absl::FormatTime(absl::Now()).c_str(), name.c_str(), ref.generation());
      fclose(log);
    }
  }
  // The record goes to disk before the process exists: a coordinator that
  // dies right after the spawn then knows the worker (and adopts it when it
  // registers) instead of launching a second one for the same rank.
  FlushLocked().IgnoreError();
  absl::StatusOr<ProcessHandle> handle =
      made.ok() ? launcher_->Start(process) : absl::StatusOr<ProcessHandle>(made);
  if (!handle.ok()) {
    worker->info.set_state(v1::WORKER_FAILED);
    worker->info.set_reason(std::string(handle.status().message()));
    // A worker that cannot even start will not start on a retry either.
    EndJobLocked(job, v1::JOB_FAILED,
                 absl::StrCat("cannot start ", name, ": ", handle.status().message()));
    return;
  }
  worker->info.set_pid(handle->pid);
  worker->info.set_pid_start_ticks(handle->start_ticks);
  worker->info.set_cluster_job_id(handle->cluster_job);
  worker->gone = false;
  LOG(INFO) << job->job.id() << ": started " << name << " generation " << ref.generation()
            << " as pid " << handle->pid
            << (handle->cluster_job.empty() ? "" : " in cluster job " + handle->cluster_job);
}

void JobManager::OnExitLocked(JobEntry* job, Worker* worker, const ProcessExit& exit) {
  worker->info.set_exit_code(exit.code);
  worker->kill_at = absl::InfiniteFuture();
  switch (worker->info.state()) {
    case v1::WORKER_STARTING:
    case v1::WORKER_RUNNING:
      if (exit.code == 0) {
        OnWorkerSucceededLocked(job, worker);
      } else {
        OnWorkerFailedLocked(job, worker, internal::DescribeExit(exit));
      }
      break;
    case v1::WORKER_STOPPING:
      worker->info.set_state(v1::WORKER_STOPPED);
      break;
    default:
      break;
  }
  TouchWorkerLocked(job, worker);
}

void JobManager::OnWorkerSucceededLocked(JobEntry* job, Worker* worker) {
  worker->info.set_state(v1::WORKER_SUCCEEDED);
  TouchWorkerLocked(job, worker);
  if (IsTerminal(job->job.state()) || !TrainersDoneLocked(*job)) return;
  for (const Worker& evaluator : job->evaluators) {
    if (evaluator.info.state() != v1::WORKER_SUCCEEDED) return;
  }
  EndJobLocked(job, v1::JOB_SUCCEEDED, "");
}

void JobManager::OnWorkerFailedLocked(JobEntry* job, Worker* worker, const std::string& why) {
  const std::string name = WorkerName(worker->info.ref());
  LOG(WARNING) << job->job.id() << ": " << name << " generation " << worker->info.ref().generation()
               << " " << why;
  worker->info.set_state(v1::WORKER_FAILED);
  worker->info.set_reason(why);
  // A failed worker may be hung: it gets no grace period.
  if (!worker->gone) launcher_->Stop(worker->handle(), /*kill=*/true);
  TouchWorkerLocked(job, worker);
  if (IsTerminal(job->job.state())) return;
  const std::string event = absl::StrCat(name, " ", why);
  // What the worker says itself, its exit code or running out of memory,
  // repeating word for word, is deterministic: another try would end the
  // same way. (Other signals and timeouts come from outside.)
  const bool deterministic = absl::StartsWith(why, "reported failure") ||
                             absl::StartsWith(why, "exited with code") ||
                             absl::StartsWith(why, kOomKilled);
  const std::string signature = event.substr(0, event.find(" (peak RSS"));
  const bool repeated = deterministic && signature == job->last_failure;
  job->last_failure = deterministic ? signature : "";
  if (job->job.restarts() >= job->job.spec().max_restarts()) {
    EndJobLocked(job, v1::JOB_FAILED,
                 absl::StrCat(event, "; no restarts left (max_restarts ",
                              job->job.spec().max_restarts(), ")"));
    return;
  }
  if (repeated) {
    EndJobLocked(job, v1::JOB_FAILED,
                 absl::StrCat(event, "; the same failure twice in a row: not retried"));
    return;
  }
  job->job.set_restarts(job->job.restarts() + 1);
  job->job.set_reason(absl::StrCat("restart ", job->job.restarts(), ": ", event));
  TouchJobLocked(job);
  if (worker->info.ref().role() == v1::ROLE_TRAINER) {
    // The whole group goes: its collectives cannot continue without the rank.
    const std::string old_namespace = KvNamespace(worker->info.ref());
    kv_.erase(old_namespace);
    pending_.drop_kv_namespaces.push_back(old_namespace);
    job->job.set_generation(job->job.generation() + 1);
    for (Worker& trainer : job->trainers) {
      StopWorkerLocked(job, &trainer, absl::StrCat("generation superseded after ", event));
    }
    job->restart_pending = true;
  } else {
    if (!worker->gone) dying_.push_back(worker->handle());
    Worker next;
    *next.info.mutable_ref() = worker->info.ref();
    next.info.mutable_ref()->set_generation(worker->info.ref().generation() + 1);
    *worker = std::move(next);
    LaunchWorkerLocked(job, worker);
  }
  TouchJobLocked(job);
}

void JobManager::StopWorkerLocked(JobEntry* job, Worker* worker, const std::string& why) {
  const v1::WorkerState state = worker->info.state();
  if (state == v1::WORKER_STARTING || state == v1::WORKER_RUNNING) {
    worker->info.set_state(v1::WORKER_STOPPING);
    worker->info.set_reason(why);
    if (!worker->gone) launcher_->Stop(worker->handle(), /*kill=*/false);
  }
  // Even a worker that reported success is killed if it does not exit.
  if (!worker->gone && worker->kill_at == absl::InfiniteFuture()) {
    worker->kill_at = absl::Now() + options_.stop_grace;
  }
  TouchWorkerLocked(job, worker);
}

void JobManager::EndJobLocked(JobEntry* job, v1::JobState state, const std::string& why) {
  job->job.set_state(state);
  job->job.set_reason(why);  // a success after restarts keeps no restart's text
  job->job.set_end_time_ms(NowMs());
  job->restart_pending = false;
  LOG(INFO) << job->job.id() << " " << v1::JobState_Name(state) << (why.empty() ? "" : ": ") << why;
  for (std::vector<Worker>* list : {&job->trainers, &job->evaluators}) {
    for (Worker& worker : *list) {
      // Slots never launched (the job failed while launching its group) have nothing to stop.
      if (worker.info.has_ref()) StopWorkerLocked(job, &worker, "the job ended");
    }
  }
  // An ended job meets no one again: its rendezvous keys go, in memory and on disk.
  const std::string prefix = job->job.id() + "/";
  for (auto it = kv_.lower_bound(prefix); it != kv_.end() && absl::StartsWith(it->first, prefix);) {
    pending_.drop_kv_namespaces.push_back(it->first);
    it = kv_.erase(it);
  }
  TouchJobLocked(job);
}

bool JobManager::TrainersDoneLocked(const JobEntry& job) const {
  if (job.trainers.empty()) return false;
  for (const Worker& trainer : job.trainers) {
    if (trainer.info.state() != v1::WORKER_SUCCEEDED) return false;
  }
  return true;
}

absl::StatusOr<v1::Job> JobManager::Submit(absl::string_view spec_text, const std::string& source,
                                           const std::string& owner) {
  ASSIGN_OR_RETURN(v1::JobSpec spec, ParseJobSpec(spec_text, source));
  RETURN_IF_ERROR(ResolveJobSpec(&spec, options_.spec_context, source));
  absl::MutexLock lock(&mu_);
  auto job = std::make_unique<JobEntry>();
  job->job.set_id(absl::StrCat("job-", next_job_number_));
  *job->job.mutable_spec() = std::move(spec);
  job->job.set_state(v1::JOB_PENDING);
  job->job.set_submit_time_ms(NowMs());
  job->job.set_latest_checkpoint_step(-1);
  job->job.set_owner(owner);
  const std::string job_dir = absl::StrCat(options_.run_root, "/", job->job.id());
  std::string text;
  google::protobuf::TextFormat::PrintToString(job->job.spec(), &text);
  RETURN_IF_ERROR(MakeDirs(job_dir + "/logs"));
  RETURN_IF_ERROR(WriteFileAtomic(job_dir + "/job_spec.textproto", text));
  const std::string id = job->job.id();
  order_.push_back(id);
  JobEntry* entry = job.get();
  jobs_[id] = std::move(job);
  TouchJobLocked(entry);
  if (absl::Status written = FlushLocked(); !written.ok()) {
    // Not stored, so not accepted: nothing of it may run or be listed.
    dirty_jobs_.erase(id);
    order_.pop_back();
    jobs_.erase(id);
    RemoveTree(job_dir).IgnoreError();
    return written;
  }
  ++next_job_number_;
  LOG(INFO) << "submitted " << id << " (" << entry->job.spec().name() << ")";
  ScheduleLocked();
  FlushLocked().IgnoreError();
  return JobWithWorkersLocked(*entry);
}

absl::StatusOr<v1::Job> JobManager::GetJob(const std::string& job_id) const {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(JobEntry * job, JobOrError(job_id));
  return JobWithWorkersLocked(*job);
}

std::vector<v1::Job> JobManager::ListJobs() const {
  absl::MutexLock lock(&mu_);
  std::vector<v1::Job> jobs;
  for (const std::string& id : order_) jobs.push_back(JobWithWorkersLocked(*jobs_.at(id)));
  return jobs;
}

absl::StatusOr<v1::Job> JobManager::Cancel(const std::string& job_id, const std::string& user) {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(JobEntry * job, JobOrError(job_id));
  if (!job->job.owner().empty() && job->job.owner() != user) {
    return absl::PermissionDeniedError(absl::StrCat(job_id, " belongs to ", job->job.owner(),
                                                    ": only they may cancel it"));
  }
  if (!IsTerminal(job->job.state())) {
    // Stored before any worker is stopped: a cancel that the database did
    // not take would come back as RUNNING after a restart.
    WriteBatch batch;
    batch.jobs.push_back(job->job);
    batch.jobs.back().set_state(v1::JOB_CANCELLED);
    if (absl::Status written = db_->Write(batch); !written.ok()) return DegradedLocked(written);
    EndJobLocked(job, v1::JOB_CANCELLED, "cancelled by the user");
  }
  RETURN_IF_ERROR(FlushLocked());
  return JobWithWorkersLocked(*job);
}

absl::StatusOr<JobManager::JobSnapshot> JobManager::WaitJob(const std::string& job_id,
                                                            int64_t seen_version, int64_t after_seq,
                                                            absl::Time deadline) const {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(JobEntry * job, JobOrError(job_id));
  while (job->version == seen_version && !stopping_) {
    if (changed_.WaitWithDeadline(&mu_, deadline)) break;
  }
  JobSnapshot snapshot;
  snapshot.job = JobWithWorkersLocked(*job);
  snapshot.version = job->version;
  if (after_seq >= 0) {
    for (auto it = internal::FirstAfter(job->metrics, after_seq); it != job->metrics.end(); ++it) {
      snapshot.metrics.push_back(*it);
    }
  }
  return snapshot;
}

absl::StatusOr<v1::GetMetricsResponse> JobManager::Metrics(const std::string& job_id,
                                                           int64_t after_seq, int limit) const {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(JobEntry * job, JobOrError(job_id));
  if (limit <= 0 || limit > kMaxMetricsPerAnswer) limit = kMaxMetricsPerAnswer;
  v1::GetMetricsResponse response;
  response.set_last_seq(std::max<int64_t>(after_seq, 0));
  for (auto it = internal::FirstAfter(job->metrics, after_seq);
       it != job->metrics.end() && response.points_size() < limit; ++it) {
    *response.add_points() = *it;
    response.set_last_seq(it->seq());
  }
  return response;
}

std::vector<v1::WorkerInfo> JobManager::Workers(const std::string& job_id) const {
  absl::MutexLock lock(&mu_);
  std::vector<v1::WorkerInfo> workers;
  for (const std::string& id : order_) {
    if (!job_id.empty() && id != job_id) continue;
    const v1::Job job = JobWithWorkersLocked(*jobs_.at(id));
    workers.insert(workers.end(), job.workers().begin(), job.workers().end());
  }
  return workers;
}

absl::StatusOr<std::vector<v1::CheckpointInfo>> JobManager::Checkpoints(
    const std::string& job_id) const {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(JobEntry * job, JobOrError(job_id));
  std::vector<v1::CheckpointInfo> checkpoints;
  for (const auto& [step, checkpoint] : job->checkpoints) checkpoints.push_back(checkpoint);
  return checkpoints;
}

std::string JobManager::Degraded() const {
  absl::MutexLock lock(&mu_);
  return db_error_;
}

absl::StatusOr<std::string> JobManager::LogPath(const std::string& job_id,
                                                const std::string& worker) const {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(JobEntry * job, JobOrError(job_id));
  for (const std::vector<Worker>* list : {&job->trainers, &job->evaluators}) {
    for (const Worker& w : *list) {
      if (WorkerName(w.info.ref()) == worker) return w.info.log_path();
    }
  }
  return absl::NotFoundError(absl::StrCat(job_id, " has no worker '", worker, "'"));
}

// --- Helpers -------------------------------------------------------------

JobManager::JobEntry* JobManager::FindJobLocked(const std::string& job_id) const {
  auto it = jobs_.find(job_id);
  return it == jobs_.end() ? nullptr : it->second.get();
}

absl::StatusOr<JobManager::JobEntry*> JobManager::JobOrError(const std::string& job_id) const {
  JobEntry* job = FindJobLocked(job_id);
  if (job == nullptr)
    return absl::NotFoundError(absl::StrCat("no job '", job_id.substr(0, 64), "'"));
  return job;
}

v1::Job JobManager::JobWithWorkersLocked(const JobEntry& job) const {
  v1::Job out = job.job;
  for (const std::vector<Worker>* list : {&job.trainers, &job.evaluators}) {
    for (const Worker& w : *list) {
      if (w.info.has_ref()) *out.add_workers() = w.info;
    }
  }
  return out;
}

void JobManager::TouchJobLocked(JobEntry* job) {
  ++job->version;
  dirty_jobs_.insert(job->job.id());
  changed_.SignalAll();
}

void JobManager::TouchWorkerLocked(JobEntry* job, Worker* worker) {
  const v1::WorkerRef& ref = worker->info.ref();
  dirty_workers_.emplace(ref.job_id(), ref.role(), ref.rank());
  ++job->version;
  changed_.SignalAll();
}

void JobManager::TouchCheckpointLocked(JobEntry* job, int64_t step) {
  dirty_checkpoints_.emplace(job->job.id(), step);
  ++job->version;
  changed_.SignalAll();
}

absl::Status JobManager::DegradedLocked(const absl::Status& write_error) {
  const std::string error = absl::StrCat("cannot write the database: ", write_error.message());
  if (error != db_error_) LOG(ERROR) << error << "; the coordinator is degraded";
  db_error_ = error;
  return absl::UnavailableError(absl::StrCat("coordinator degraded: ", error));
}

absl::Status JobManager::FlushLocked() {
  WriteBatch batch = pending_;
  for (const std::string& id : dirty_jobs_) batch.jobs.push_back(jobs_.at(id)->job);
  for (const auto& [job_id, role, rank] : dirty_workers_) {
    const JobEntry& job = *jobs_.at(job_id);
    const std::vector<Worker>& list = role == v1::ROLE_TRAINER ? job.trainers : job.evaluators;
    if (rank < static_cast<int>(list.size())) batch.workers.push_back(list[rank].info);
  }
  for (const auto& [job_id, step] : dirty_checkpoints_) {
    batch.checkpoints.push_back(jobs_.at(job_id)->checkpoints.at(step));
  }
  if (batch.empty()) return absl::OkStatus();  // proves nothing about the database
  absl::Status status = db_->Write(batch);
  if (!status.ok()) return DegradedLocked(status);  // everything stays queued
  if (!db_error_.empty()) LOG(INFO) << "the database can be written again";
  db_error_.clear();
  dirty_jobs_.clear();
  dirty_workers_.clear();
  dirty_checkpoints_.clear();
  pending_ = WriteBatch();
  return absl::OkStatus();
}

}  // namespace modamba
