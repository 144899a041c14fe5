// The worker side of the manager: registration, heartbeats, metrics,
// checkpoint records, evaluation hand-out and the rendezvous store.
#include <algorithm>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "coordinator/job_manager.h"
#include "coordinator/job_manager_internal.h"
#include "core/status_macros.h"
#include "glog/logging.h"
#include "rendezvous/kv_store.h"

namespace modamba {

using internal::IsTerminal;
using internal::NowMs;
using internal::WorkerName;

namespace {

absl::Duration HeartbeatInterval(absl::Duration timeout) {
  return std::clamp(timeout / 6, absl::Milliseconds(100), absl::Seconds(5));
}

absl::Status CheckMetricMap(const google::protobuf::Map<std::string, double>& map,
                            const char* field) {
  if (map.size() > kMaxMetricEntries) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": more than ", kMaxMetricEntries, " entries"));
  }
  for (const auto& [name, value] : map) {
    if (name.empty() || name.size() > kMaxMetricNameBytes) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ": names must have 1 to ", kMaxMetricNameBytes, " bytes"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

std::string JobManager::KvNamespace(const v1::WorkerRef& ref) const {
  return absl::StrCat(ref.job_id(), "/", ref.role() == v1::ROLE_TRAINER ? "trainer" : "evaluator",
                      "/g", ref.generation());
}

absl::StatusOr<JobManager::Worker*> JobManager::LiveWorkerLocked(const v1::WorkerRef& ref,
                                                                 JobEntry** job_out) const {
  ASSIGN_OR_RETURN(JobEntry * job, JobOrError(ref.job_id()));
  if (ref.role() != v1::ROLE_TRAINER && ref.role() != v1::ROLE_EVALUATOR) {
    return absl::InvalidArgumentError("worker.role: must be ROLE_TRAINER or ROLE_EVALUATOR");
  }
  const bool trainer = ref.role() == v1::ROLE_TRAINER;
  const int slots = trainer ? job->job.spec().world_size() : job->job.spec().n_evaluators();
  if (ref.rank() < 0 || ref.rank() >= slots) {
    return absl::InvalidArgumentError(
        absl::StrCat("worker.rank: ", ref.rank(), " is outside [0, ", slots, ")"));
  }
  if (IsTerminal(job->job.state())) {
    return absl::AbortedError(
        absl::StrCat(ref.job_id(), " has ended (", v1::JobState_Name(job->job.state()), ")"));
  }
  const std::vector<Worker>& list = trainer ? job->trainers : job->evaluators;
  if (ref.rank() >= static_cast<int>(list.size()) || !list[ref.rank()].info.has_ref()) {
    return absl::AbortedError(
        absl::StrCat(WorkerName(ref), " of ", ref.job_id(), " is not running"));
  }
  Worker* worker = const_cast<Worker*>(&list[ref.rank()]);
  const int current = worker->info.ref().generation();
  if (ref.generation() != current) {
    return absl::AbortedError(absl::StrCat(WorkerName(ref), " generation ", ref.generation(),
                                           " is superseded (current: ", current, ")"));
  }
  const v1::WorkerState state = worker->info.state();
  if (state == v1::WORKER_STOPPING || state == v1::WORKER_FAILED || state == v1::WORKER_STOPPED) {
    return absl::AbortedError(
        absl::StrCat(WorkerName(ref), " is stopped: ", worker->info.reason()));
  }
  *job_out = job;
  return worker;
}

const v1::CheckpointInfo* JobManager::NewestGoodCheckpointLocked(const JobEntry& job) const {
  for (auto it = job.checkpoints.rbegin(); it != job.checkpoints.rend(); ++it) {
    const v1::CheckpointInfo& c = it->second;
    if (c.complete() && !c.deleted() && !c.corrupt()) return &c;
  }
  return nullptr;
}

absl::StatusOr<v1::RegisterResponse> JobManager::Register(const v1::RegisterRequest& request) {
  absl::MutexLock lock(&mu_);
  JobEntry* job = nullptr;
  ASSIGN_OR_RETURN(Worker * worker, LiveWorkerLocked(request.worker(), &job));
  if (worker->info.state() == v1::WORKER_STARTING) worker->info.set_state(v1::WORKER_RUNNING);
  // The launcher's pid is the one to signal; a worker adopted after a
  // restart without a recorded pid gives its own.
  if (worker->info.pid() <= 0 && request.pid() > 0) {
    worker->info.set_pid(request.pid());
    worker->info.set_pid_start_ticks(ProcessStartTicks(request.pid()));
    worker->gone = false;
  }
  if (!request.host().empty()) worker->info.set_host(request.host().substr(0, 256));
  worker->last_seen = absl::Now();
  worker->info.set_last_heartbeat_ms(NowMs());
  TouchWorkerLocked(job, worker);
  FlushLocked().IgnoreError();  // degraded at worst

  v1::RegisterResponse response;
  *response.mutable_spec() = job->job.spec();
  response.set_world_size(job->job.spec().world_size());
  response.set_heartbeat_interval_ms(
      absl::ToInt64Milliseconds(HeartbeatInterval(options_.heartbeat_timeout)));
  if (request.worker().role() == v1::ROLE_TRAINER) {
    if (const v1::CheckpointInfo* resume = NewestGoodCheckpointLocked(*job)) {
      *response.mutable_resume_checkpoint() = *resume;
    }
  }
  LOG(INFO) << job->job.id() << ": " << WorkerName(request.worker()) << " generation "
            << request.worker().generation() << " registered"
            << (response.has_resume_checkpoint()
                    ? absl::StrCat(", resumes from step ", response.resume_checkpoint().step())
                    : "");
  return response;
}

absl::StatusOr<v1::HeartbeatResponse> JobManager::Heartbeat(const v1::HeartbeatRequest& request) {
  absl::MutexLock lock(&mu_);
  v1::HeartbeatResponse response;
  JobEntry* job = nullptr;
  absl::StatusOr<Worker*> worker = LiveWorkerLocked(request.worker(), &job);
  if (absl::IsAborted(worker.status())) {
    response.set_stop(true);
    response.set_reason(std::string(worker.status().message()));
    return response;
  }
  RETURN_IF_ERROR(worker.status());
  // A worker launched by a coordinator that died before it registered.
  if ((*worker)->info.state() == v1::WORKER_STARTING) {
    (*worker)->info.set_state(v1::WORKER_RUNNING);
    TouchWorkerLocked(job, *worker);
  }
  (*worker)->last_seen = absl::Now();
  (*worker)->info.set_last_heartbeat_ms(NowMs());
  (*worker)->info.set_step(request.step());
  // Heartbeats change nothing worth persisting or waking watchers for.
  return response;
}

absl::Status JobManager::ReportMetrics(const v1::ReportMetricsRequest& request) {
  if (request.points_size() > kMaxPointsPerReport) {
    return absl::InvalidArgumentError(
        absl::StrCat("points: more than ", kMaxPointsPerReport, " in one report"));
  }
  for (const v1::MetricPoint& point : request.points()) {
    if (point.kind() != "train" && point.kind() != "val" && point.kind() != "eval") {
      return absl::InvalidArgumentError("points.kind: must be \"train\", \"val\" or \"eval\"");
    }
    if (point.step() < 0) return absl::InvalidArgumentError("points.step: negative");
    RETURN_IF_ERROR(CheckMetricMap(point.losses(), "points.losses"));
    RETURN_IF_ERROR(CheckMetricMap(point.scalars(), "points.scalars"));
    if (point.image_grid_png().size() > kMaxImageGridBytes) {
      return absl::InvalidArgumentError(
          absl::StrCat("points.image_grid_png: larger than ", kMaxImageGridBytes, " bytes"));
    }
    if (!point.image_grid_png().empty() && point.kind() != "eval") {
      return absl::InvalidArgumentError("points.image_grid_png: only eval points carry images");
    }
    if (!point.speech_wav().empty() && point.kind() != "eval") {
      return absl::InvalidArgumentError("points.speech_wav: only eval points carry speech");
    }
    size_t wav_bytes = 0;
    for (const auto& [name, wav] : point.speech_wav()) {
      if (name.empty() || name.size() > kMaxMetricNameBytes) {
        return absl::InvalidArgumentError(
            absl::StrCat("points.speech_wav: names must have 1 to ", kMaxMetricNameBytes, " bytes"));
      }
      wav_bytes += wav.size();
    }
    if (wav_bytes > kMaxSpeechWavBytes) {
      return absl::InvalidArgumentError(
          absl::StrCat("points.speech_wav: larger than ", kMaxSpeechWavBytes, " bytes"));
    }
    if (point.notes_size() > kMaxNotes) {
      return absl::InvalidArgumentError(absl::StrCat("points.notes: more than ", kMaxNotes));
    }
    for (const std::string& note : point.notes()) {
      if (note.empty() || note.size() > kMaxNoteBytes) {
        return absl::InvalidArgumentError(
            absl::StrCat("points.notes: each must have 1 to ", kMaxNoteBytes, " bytes"));
      }
    }
  }
  absl::MutexLock lock(&mu_);
  JobEntry* job = nullptr;
  ASSIGN_OR_RETURN(Worker * worker, LiveWorkerLocked(request.worker(), &job));
  worker->last_seen = absl::Now();
  const int64_t now_ms = NowMs();
  for (v1::MetricPoint point : request.points()) {
    point.set_seq(job->metrics.empty() ? 1 : job->metrics.back().seq() + 1);
    point.set_time_ms(now_ms);
    point.set_rank(request.worker().rank());
    if (point.kind() == "train") {
      job->job.set_step(std::max(job->job.step(), point.step()));
      job->job.set_flops(std::max(job->job.flops(), point.flops()));
      *job->job.mutable_last_train() = point;
    } else if (point.kind() == "val") {
      *job->job.mutable_last_val() = point;
    }
    for (const std::string& note : point.notes()) {
      const auto& kept = job->job.notes();
      if (kept.size() < kMaxNotes && std::find(kept.begin(), kept.end(), note) == kept.end()) {
        job->job.add_notes(note);
      }
    }
    pending_.metrics.emplace_back(job->job.id(), point);
    job->metrics.push_back(std::move(point));
  }
  TouchJobLocked(job);
  FlushLocked().IgnoreError();  // degraded at worst
  return absl::OkStatus();
}

absl::Status JobManager::CheckUpload(const v1::WorkerRef& ref, int64_t step) const {
  absl::MutexLock lock(&mu_);
  if (ref.role() != v1::ROLE_TRAINER) {
    return absl::PermissionDeniedError("only trainers upload checkpoints");
  }
  if (step < 0) return absl::InvalidArgumentError("step: negative");
  JobEntry* job = nullptr;
  RETURN_IF_ERROR(LiveWorkerLocked(ref, &job).status());
  auto it = job->checkpoints.find(step);
  if (it != job->checkpoints.end() && it->second.complete()) {
    return absl::AlreadyExistsError(absl::StrCat("checkpoint step ", step, " is already complete"));
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::CheckpointFile> JobManager::PublishUpload(const v1::WorkerRef& ref, int64_t step,
                                                             CheckpointStore::Writer* writer) {
  RETURN_IF_ERROR(CheckUpload(ref, step));
  ASSIGN_OR_RETURN(v1::CheckpointFile file, writer->Finish());
  absl::MutexLock lock(&mu_);
  // Checked again under the lock: the group may have been replaced meanwhile.
  JobEntry* job = nullptr;
  RETURN_IF_ERROR(LiveWorkerLocked(ref, &job).status());
  v1::CheckpointInfo& checkpoint = job->checkpoints[step];
  if (checkpoint.complete()) {
    return absl::AlreadyExistsError(absl::StrCat("checkpoint step ", step, " is already complete"));
  }
  if (checkpoint.job_id().empty() || checkpoint.generation() != ref.generation()) {
    // Left over from a failed generation: this one starts the step afresh.
    checkpoint = v1::CheckpointInfo();
    checkpoint.set_job_id(ref.job_id());
    checkpoint.set_step(step);
    checkpoint.set_generation(ref.generation());
  }
  auto existing =
      std::find_if(checkpoint.mutable_files()->begin(), checkpoint.mutable_files()->end(),
                   [&](const v1::CheckpointFile& f) { return f.path() == file.path(); });
  if (existing == checkpoint.mutable_files()->end() &&
      checkpoint.files_size() >= kMaxCheckpointFiles) {
    return absl::ResourceExhaustedError(
        absl::StrCat("checkpoint step ", step, ": more than ", kMaxCheckpointFiles, " files"));
  }
  RETURN_IF_ERROR(writer->Publish());
  if (existing != checkpoint.mutable_files()->end()) {
    *existing = file;
  } else {
    *checkpoint.add_files() = file;
  }
  TouchCheckpointLocked(job, step);
  FlushLocked().IgnoreError();  // degraded at worst
  return file;
}

absl::StatusOr<v1::ReportCheckpointResponse> JobManager::ReportCheckpoint(
    const v1::ReportCheckpointRequest& request) {
  const v1::WorkerRef& ref = request.worker();
  if (ref.role() != v1::ROLE_TRAINER) {
    return absl::PermissionDeniedError("only trainers report checkpoints");
  }
  absl::MutexLock lock(&mu_);
  JobEntry* job = nullptr;
  RETURN_IF_ERROR(LiveWorkerLocked(ref, &job).status());
  v1::ReportCheckpointResponse response;
  auto it = job->checkpoints.find(request.step());
  if (it != job->checkpoints.end() && it->second.complete()) {
    *response.mutable_checkpoint() = it->second;  // a retried report
    return response;
  }
  if (it == job->checkpoints.end() || it->second.generation() != ref.generation()) {
    if (request.files_size() > 0) {
      return absl::FailedPreconditionError(absl::StrCat("checkpoint step ", request.step(),
                                                        ": no files of generation ",
                                                        ref.generation(), " were uploaded"));
    }
    v1::CheckpointInfo fresh;
    fresh.set_job_id(ref.job_id());
    fresh.set_step(request.step());
    fresh.set_generation(ref.generation());
    it = job->checkpoints.insert_or_assign(request.step(), fresh).first;
  }
  v1::CheckpointInfo& checkpoint = it->second;
  for (const v1::CheckpointFile& file : request.files()) {
    const bool uploaded = std::any_of(
        checkpoint.files().begin(), checkpoint.files().end(), [&](const v1::CheckpointFile& f) {
          return f.path() == file.path() && f.sha256() == file.sha256() && f.size() == file.size();
        });
    if (!uploaded) {
      return absl::FailedPreconditionError(absl::StrCat("checkpoint step ", request.step(),
                                                        ": file '", file.path(),
                                                        "' was not uploaded as reported"));
    }
  }
  if (std::find(checkpoint.reported_ranks().begin(), checkpoint.reported_ranks().end(),
                ref.rank()) == checkpoint.reported_ranks().end()) {
    checkpoint.add_reported_ranks(ref.rank());
  }
  checkpoint.set_flops(std::max(checkpoint.flops(), request.flops()));
  if (checkpoint.reported_ranks_size() == job->job.spec().world_size()) {
    checkpoint.set_complete(true);
    checkpoint.set_complete_time_ms(NowMs());
    if (checkpoint.step() > job->job.latest_checkpoint_step()) {
      job->job.set_latest_checkpoint_step(checkpoint.step());
    }
    LOG(INFO) << job->job.id() << ": checkpoint step " << checkpoint.step() << " complete";
    ApplyRetentionLocked(job);
    TouchJobLocked(job);
  }
  TouchCheckpointLocked(job, request.step());
  *response.mutable_checkpoint() = checkpoint;
  FlushLocked().IgnoreError();  // degraded at worst
  return response;
}

void JobManager::ApplyRetentionLocked(JobEntry* job) {
  const v1::CheckpointInfo* newest = NewestGoodCheckpointLocked(*job);
  const int64_t newest_step = newest != nullptr ? newest->step() : -1;
  int kept = 0;
  for (auto it = job->checkpoints.rbegin(); it != job->checkpoints.rend(); ++it) {
    v1::CheckpointInfo& c = it->second;
    if (c.deleted()) continue;
    if (c.complete() && !c.corrupt() && kept < job->job.spec().keep_last_checkpoints()) {
      ++kept;
      continue;
    }
    // Still being written by the current group.
    if (!c.complete() && (c.step() > newest_step || c.generation() == job->job.generation())) {
      continue;
    }
    const bool claimed = std::any_of(job->evaluators.begin(), job->evaluators.end(),
                                     [&](const Worker& e) { return e.claimed_step == c.step(); });
    if (claimed) continue;  // removed once its evaluator is done with it
    absl::Status removed = store_->Remove(job->job.id(), c.step());
    if (!removed.ok()) {
      LOG(ERROR) << removed;
      continue;
    }
    c.set_deleted(true);
    TouchCheckpointLocked(job, c.step());
  }
}

absl::StatusOr<v1::AwaitCheckpointResponse> JobManager::AwaitCheckpoint(
    const v1::AwaitCheckpointRequest& request, absl::Time deadline) {
  if (request.worker().role() != v1::ROLE_EVALUATOR) {
    return absl::PermissionDeniedError("only evaluators await checkpoints");
  }
  absl::MutexLock lock(&mu_);
  JobEntry* job = nullptr;
  ASSIGN_OR_RETURN(Worker * worker, LiveWorkerLocked(request.worker(), &job));
  if (request.finished_step() >= 0) {
    auto it = job->checkpoints.find(request.finished_step());
    if (it != job->checkpoints.end() && !it->second.evaluated()) {
      it->second.set_evaluated(true);
      TouchCheckpointLocked(job, it->first);
    }
  }
  // Asking for the next checkpoint releases the previous one, finished or
  // not (e.g. its download failed its sha256): retention may take it now.
  if (worker->claimed_step >= 0) {
    worker->claimed_step = -1;
    ApplyRetentionLocked(job);
  }
  FlushLocked().IgnoreError();  // degraded at worst
  v1::AwaitCheckpointResponse response;
  for (;;) {
    // The worker may have been stopped or replaced while this call waited.
    ASSIGN_OR_RETURN(worker, LiveWorkerLocked(request.worker(), &job));
    worker->last_seen = absl::Now();
    for (const auto& [step, c] : job->checkpoints) {
      if (!c.complete() || c.deleted() || c.corrupt() || c.evaluated()) continue;
      const bool claimed =
          std::any_of(job->evaluators.begin(), job->evaluators.end(),
                      [&, s = step](const Worker& e) { return e.claimed_step == s; });
      if (claimed) continue;
      worker->claimed_step = step;
      *response.mutable_checkpoint() = c;
      return response;
    }
    if (TrainersDoneLocked(*job)) {
      response.set_job_done(true);
      return response;
    }
    if (changed_.WaitWithDeadline(&mu_, deadline) || stopping_) return response;
  }
}

absl::Status JobManager::Done(const v1::DoneRequest& request) {
  absl::MutexLock lock(&mu_);
  JobEntry* job = nullptr;
  ASSIGN_OR_RETURN(Worker * worker, LiveWorkerLocked(request.worker(), &job));
  if (worker->info.state() == v1::WORKER_SUCCEEDED) return absl::OkStatus();
  if (request.ok()) {
    OnWorkerSucceededLocked(job, worker);
  } else if (request.permanent()) {
    const std::string why = absl::StrCat(WorkerName(request.worker()), " reported failure: ",
                                         request.message().substr(0, 1024));
    worker->info.set_state(v1::WORKER_FAILED);
    worker->info.set_reason(why);
    TouchWorkerLocked(job, worker);
    EndJobLocked(job, v1::JOB_FAILED, absl::StrCat(why, " (not retried: a restart would repeat it)"));
  } else {
    OnWorkerFailedLocked(job, worker,
                         absl::StrCat("reported failure: ", request.message().substr(0, 1024)));
  }
  FlushLocked().IgnoreError();  // degraded at worst
  return absl::OkStatus();
}

absl::StatusOr<v1::CheckpointInfo> JobManager::ServableCheckpoint(const std::string& job_id,
                                                                  int64_t step) const {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(JobEntry * job, JobOrError(job_id));
  auto it = job->checkpoints.find(step);
  if (it == job->checkpoints.end()) {
    return absl::NotFoundError(absl::StrCat(job_id, " has no checkpoint at step ", step));
  }
  const v1::CheckpointInfo& c = it->second;
  if (!c.complete())
    return absl::FailedPreconditionError(absl::StrCat("checkpoint step ", step, " is incomplete"));
  if (c.deleted())
    return absl::NotFoundError(absl::StrCat("checkpoint step ", step, " was deleted by retention"));
  if (c.corrupt())
    return absl::DataLossError(absl::StrCat("checkpoint step ", step, " is corrupt on disk"));
  return c;
}

void JobManager::MarkCorrupt(const std::string& job_id, int64_t step, const std::string& why) {
  absl::MutexLock lock(&mu_);
  JobEntry* job = FindJobLocked(job_id);
  if (job == nullptr) return;
  auto it = job->checkpoints.find(step);
  if (it == job->checkpoints.end() || it->second.corrupt()) return;
  LOG(ERROR) << why;
  it->second.set_corrupt(true);
  const v1::CheckpointInfo* newest = NewestGoodCheckpointLocked(*job);
  job->job.set_latest_checkpoint_step(newest != nullptr ? newest->step() : -1);
  TouchCheckpointLocked(job, step);
  TouchJobLocked(job);
  FlushLocked().IgnoreError();
}

// --- Rendezvous store ----------------------------------------------------

absl::Status JobManager::KvSet(const v1::WorkerRef& ref, const std::string& key,
                               const std::string& value) {
  if (key.empty() || key.size() > kMaxKvKeyBytes)
    return absl::InvalidArgumentError("key: bad length");
  if (value.size() > kMaxKvValueBytes) return absl::InvalidArgumentError("value: too large");
  absl::MutexLock lock(&mu_);
  JobEntry* job = nullptr;
  RETURN_IF_ERROR(LiveWorkerLocked(ref, &job).status());
  const std::string ns = KvNamespace(ref);
  kv_[ns][key] = value;
  pending_.kv.push_back({{ns, key}, value});
  changed_.SignalAll();
  FlushLocked().IgnoreError();  // degraded at worst
  return absl::OkStatus();
}

absl::StatusOr<std::string> JobManager::KvGet(const v1::WorkerRef& ref, const std::string& key,
                                              absl::Time deadline) {
  absl::MutexLock lock(&mu_);
  for (;;) {
    JobEntry* job = nullptr;
    RETURN_IF_ERROR(LiveWorkerLocked(ref, &job).status());
    auto ns = kv_.find(KvNamespace(ref));
    if (ns != kv_.end()) {
      auto it = ns->second.find(key);
      if (it != ns->second.end()) return it->second;
    }
    if (changed_.WaitWithDeadline(&mu_, deadline) || stopping_) {
      return absl::DeadlineExceededError(
          absl::StrCat("key '", key.substr(0, 256), "' was not set in time"));
    }
  }
}

absl::StatusOr<int64_t> JobManager::KvAdd(const v1::WorkerRef& ref, const std::string& key,
                                          int64_t delta) {
  if (key.empty() || key.size() > kMaxKvKeyBytes)
    return absl::InvalidArgumentError("key: bad length");
  absl::MutexLock lock(&mu_);
  JobEntry* job = nullptr;
  RETURN_IF_ERROR(LiveWorkerLocked(ref, &job).status());
  const std::string ns = KvNamespace(ref);
  std::string& stored = kv_[ns][key];
  int64_t value = 0;
  if (!stored.empty() && !absl::SimpleAtoi(stored, &value)) {
    return absl::FailedPreconditionError(absl::StrCat("key '", key, "' does not hold an integer"));
  }
  value += delta;
  stored = absl::StrCat(value);
  pending_.kv.push_back({{ns, key}, stored});
  changed_.SignalAll();
  FlushLocked().IgnoreError();  // degraded at worst
  return value;
}

absl::StatusOr<bool> JobManager::KvCheck(const v1::WorkerRef& ref,
                                         const std::vector<std::string>& keys) {
  absl::MutexLock lock(&mu_);
  JobEntry* job = nullptr;
  RETURN_IF_ERROR(LiveWorkerLocked(ref, &job).status());
  auto ns = kv_.find(KvNamespace(ref));
  for (const std::string& key : keys) {
    if (ns == kv_.end() || ns->second.count(key) == 0) return false;
  }
  return true;
}

}  // namespace modamba
