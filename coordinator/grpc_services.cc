#include "coordinator/grpc_services.h"

#include <algorithm>
#include <cstdio>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "coordinator/job_manager_internal.h"
#include "core/sha256.h"

namespace modamba {
namespace {

// Blocking calls wait at most this long per call; clients call again.
constexpr absl::Duration kMaxKvWait = absl::Minutes(10);
constexpr absl::Duration kMaxAwaitCheckpoint = absl::Minutes(1);
constexpr int kMaxLogBytes = 1 << 20;
constexpr int kMaxPointsPerEvent = 1000;

// The earlier of now + `wait` (capped at `cap`) and the client's deadline.
absl::Time Deadline(const grpc::ServerContext& context, int64_t wait_ms, absl::Duration cap) {
  const absl::Time deadline =
      absl::Now() + std::min(absl::Milliseconds(std::max<int64_t>(wait_ms, 0)), cap);
  const auto client = context.deadline();
  if (client == std::chrono::system_clock::time_point::max()) return deadline;
  return std::min(deadline, absl::FromChrono(client));
}

// Returns from the handler unless `check` (an auth_ call) passes.
#define CHECK_AUTH(check)            \
  do {                               \
    grpc::Status _auth = (check);    \
    if (!_auth.ok()) return _auth;   \
  } while (0)

}  // namespace

grpc::Status ToGrpc(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

// --- JobService ------------------------------------------------------------

grpc::Status JobServiceImpl::SubmitJob(grpc::ServerContext* context,
                                       const v1::SubmitJobRequest* request, v1::Job* response) {
  std::string user;
  CHECK_AUTH(auth_->CheckUser(*context, &user));
  const std::string source = request->source().empty() ? "spec" : request->source().substr(0, 256);
  absl::StatusOr<v1::Job> job = manager_->Submit(request->spec_textproto(), source, user);
  if (!job.ok()) return ToGrpc(job.status());
  *response = std::move(*job);
  return grpc::Status::OK;
}

grpc::Status JobServiceImpl::GetJob(grpc::ServerContext* context, const v1::GetJobRequest* request,
                                    v1::Job* response) {
  std::string user;
  CHECK_AUTH(auth_->CheckUser(*context, &user));
  absl::StatusOr<v1::Job> job = manager_->GetJob(request->job_id());
  if (!job.ok()) return ToGrpc(job.status());
  *response = std::move(*job);
  return grpc::Status::OK;
}

grpc::Status JobServiceImpl::ListJobs(grpc::ServerContext* context, const v1::ListJobsRequest*,
                                      v1::ListJobsResponse* response) {
  std::string user;
  CHECK_AUTH(auth_->CheckUser(*context, &user));
  for (v1::Job& job : manager_->ListJobs()) *response->add_jobs() = std::move(job);
  return grpc::Status::OK;
}

grpc::Status JobServiceImpl::CancelJob(grpc::ServerContext* context,
                                       const v1::CancelJobRequest* request, v1::Job* response) {
  std::string user;
  CHECK_AUTH(auth_->CheckUser(*context, &user));
  absl::StatusOr<v1::Job> job = manager_->Cancel(request->job_id(), user);
  if (!job.ok()) return ToGrpc(job.status());
  *response = std::move(*job);
  return grpc::Status::OK;
}

grpc::Status JobServiceImpl::WatchJob(grpc::ServerContext* context,
                                      const v1::WatchJobRequest* request,
                                      grpc::ServerWriter<v1::JobEvent>* writer) {
  std::string user;
  CHECK_AUTH(auth_->CheckUser(*context, &user));
  int64_t seen_version = -1;
  int64_t after_seq = request->metrics_after_seq();
  while (!context->IsCancelled()) {
    absl::StatusOr<JobManager::JobSnapshot> snapshot = manager_->WaitJob(
        request->job_id(), seen_version, after_seq, absl::Now() + absl::Seconds(1));
    if (!snapshot.ok()) return ToGrpc(snapshot.status());
    if (snapshot->version == seen_version) continue;
    seen_version = snapshot->version;
    // Long histories go out in several events, each with the job.
    size_t sent = 0;
    do {
      v1::JobEvent event;
      *event.mutable_job() = snapshot->job;
      const size_t end = std::min(snapshot->metrics.size(), sent + kMaxPointsPerEvent);
      for (; sent < end; ++sent) *event.add_metrics() = snapshot->metrics[sent];
      if (!writer->Write(event)) return grpc::Status::OK;  // the client left
    } while (sent < snapshot->metrics.size());
    if (!snapshot->metrics.empty()) after_seq = snapshot->metrics.back().seq();
    if (internal::IsTerminal(snapshot->job.state())) return grpc::Status::OK;
  }
  return grpc::Status::OK;
}

grpc::Status JobServiceImpl::GetMetrics(grpc::ServerContext* context,
                                        const v1::GetMetricsRequest* request,
                                        v1::GetMetricsResponse* response) {
  std::string user;
  CHECK_AUTH(auth_->CheckUser(*context, &user));
  auto metrics = manager_->Metrics(request->job_id(), request->after_seq(), request->limit());
  if (!metrics.ok()) return ToGrpc(metrics.status());
  *response = std::move(*metrics);
  return grpc::Status::OK;
}

grpc::Status JobServiceImpl::ListWorkers(grpc::ServerContext* context,
                                         const v1::ListWorkersRequest* request,
                                         v1::ListWorkersResponse* response) {
  std::string user;
  CHECK_AUTH(auth_->CheckUser(*context, &user));
  for (v1::WorkerInfo& w : manager_->Workers(request->job_id()))
    *response->add_workers() = std::move(w);
  return grpc::Status::OK;
}

grpc::Status JobServiceImpl::GetLogs(grpc::ServerContext* context,
                                     const v1::GetLogsRequest* request,
                                     v1::GetLogsResponse* response) {
  std::string user;
  CHECK_AUTH(auth_->CheckUser(*context, &user));
  absl::StatusOr<std::string> path = manager_->LogPath(request->job_id(), request->worker());
  if (!path.ok()) return ToGrpc(path.status());
  std::unique_ptr<FILE, int (*)(FILE*)> file(fopen(path->c_str(), "rb"), fclose);
  if (file == nullptr) return grpc::Status(grpc::StatusCode::NOT_FOUND, "no log yet");
  fseeko(file.get(), 0, SEEK_END);
  const int64_t size = ftello(file.get());
  int64_t offset = request->offset() < 0 ? std::max<int64_t>(0, size + request->offset())
                                         : std::min<int64_t>(request->offset(), size);
  const int max_bytes =
      request->max_bytes() <= 0 ? kMaxLogBytes : std::min(request->max_bytes(), kMaxLogBytes);
  std::string data(std::min<int64_t>(max_bytes, size - offset), '\0');
  fseeko(file.get(), offset, SEEK_SET);
  data.resize(fread(data.data(), 1, data.size(), file.get()));
  response->set_size(size);
  response->set_next_offset(offset + static_cast<int64_t>(data.size()));
  response->set_data(std::move(data));
  return grpc::Status::OK;
}

// --- WorkerService ---------------------------------------------------------

grpc::Status WorkerServiceImpl::Register(grpc::ServerContext* context,
                                         const v1::RegisterRequest* request,
                                         v1::RegisterResponse* response) {
  CHECK_AUTH(auth_->CheckWorker(*context, request->worker()));
  auto result = manager_->Register(*request);
  if (!result.ok()) return ToGrpc(result.status());
  *response = std::move(*result);
  return grpc::Status::OK;
}

grpc::Status WorkerServiceImpl::Heartbeat(grpc::ServerContext* context,
                                          const v1::HeartbeatRequest* request,
                                          v1::HeartbeatResponse* response) {
  CHECK_AUTH(auth_->CheckWorker(*context, request->worker()));
  auto result = manager_->Heartbeat(*request);
  if (!result.ok()) return ToGrpc(result.status());
  *response = std::move(*result);
  return grpc::Status::OK;
}

grpc::Status WorkerServiceImpl::KvSet(grpc::ServerContext* context, const v1::KvSetRequest* request,
                                      v1::KvSetResponse*) {
  CHECK_AUTH(auth_->CheckWorker(*context, request->worker()));
  return ToGrpc(manager_->KvSet(request->worker(), request->key(), request->value()));
}

grpc::Status WorkerServiceImpl::KvGet(grpc::ServerContext* context, const v1::KvGetRequest* request,
                                      v1::KvGetResponse* response) {
  CHECK_AUTH(auth_->CheckWorker(*context, request->worker()));
  auto value = manager_->KvGet(request->worker(), request->key(),
                               Deadline(*context, request->timeout_ms(), kMaxKvWait));
  if (!value.ok()) return ToGrpc(value.status());
  response->set_value(std::move(*value));
  return grpc::Status::OK;
}

grpc::Status WorkerServiceImpl::KvAdd(grpc::ServerContext* context, const v1::KvAddRequest* request,
                                      v1::KvAddResponse* response) {
  CHECK_AUTH(auth_->CheckWorker(*context, request->worker()));
  auto value = manager_->KvAdd(request->worker(), request->key(), request->delta());
  if (!value.ok()) return ToGrpc(value.status());
  response->set_value(*value);
  return grpc::Status::OK;
}

grpc::Status WorkerServiceImpl::KvCheck(grpc::ServerContext* context,
                                        const v1::KvCheckRequest* request,
                                        v1::KvCheckResponse* response) {
  CHECK_AUTH(auth_->CheckWorker(*context, request->worker()));
  auto all_set = manager_->KvCheck(
      request->worker(), std::vector<std::string>(request->keys().begin(), request->keys().end()));
  if (!all_set.ok()) return ToGrpc(all_set.status());
  response->set_all_set(*all_set);
  return grpc::Status::OK;
}

grpc::Status WorkerServiceImpl::ReportMetrics(grpc::ServerContext* context,
                                              const v1::ReportMetricsRequest* request,
                                              v1::ReportMetricsResponse*) {
  CHECK_AUTH(auth_->CheckWorker(*context, request->worker()));
  return ToGrpc(manager_->ReportMetrics(*request));
}

grpc::Status WorkerServiceImpl::ReportCheckpoint(grpc::ServerContext* context,
                                                 const v1::ReportCheckpointRequest* request,
                                                 v1::ReportCheckpointResponse* response) {
  CHECK_AUTH(auth_->CheckWorker(*context, request->worker()));
  auto result = manager_->ReportCheckpoint(*request);
  if (!result.ok()) return ToGrpc(result.status());
  *response = std::move(*result);
  return grpc::Status::OK;
}

grpc::Status WorkerServiceImpl::AwaitCheckpoint(grpc::ServerContext* context,
                                                const v1::AwaitCheckpointRequest* request,
                                                v1::AwaitCheckpointResponse* response) {
  CHECK_AUTH(auth_->CheckWorker(*context, request->worker()));
  auto result = manager_->AwaitCheckpoint(
      *request, Deadline(*context, request->wait_ms(), kMaxAwaitCheckpoint));
  if (!result.ok()) return ToGrpc(result.status());
  *response = std::move(*result);
  return grpc::Status::OK;
}

grpc::Status WorkerServiceImpl::Done(grpc::ServerContext* context, const v1::DoneRequest* request,
                                     v1::DoneResponse*) {
  CHECK_AUTH(auth_->CheckWorker(*context, request->worker()));
  return ToGrpc(manager_->Done(*request));
}

// --- CheckpointService -----------------------------------------------------

grpc::Status CheckpointServiceImpl::Upload(grpc::ServerContext* context,
                                           grpc::ServerReader<v1::UploadChunk>* reader,
                                           v1::UploadResponse* response) {
  Caller caller;
  CHECK_AUTH(auth_->Check(*context, &caller));  // before anything is read
  v1::UploadChunk chunk;
  if (!reader->Read(&chunk) || !chunk.has_header()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "the first message of an upload must be its header");
  }
  const v1::UploadHeader header = chunk.header();
  CHECK_AUTH(auth_->CheckWorker(*context, header.worker()));
  absl::Status allowed = manager_->CheckUpload(header.worker(), header.step());
  if (!allowed.ok()) return ToGrpc(allowed);
  auto writer = store_->NewWriter(header.worker().job_id(), header.step(), header.file());
  if (!writer.ok()) return ToGrpc(writer.status());
  while (reader->Read(&chunk)) {
    if (chunk.part_case() != v1::UploadChunk::kData) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "only data may follow the header");
    }
    absl::Status appended = (*writer)->Append(chunk.data());
    if (!appended.ok()) return ToGrpc(appended);
  }
  auto file = manager_->PublishUpload(header.worker(), header.step(), writer->get());
  if (!file.ok()) return ToGrpc(file.status());
  *response->mutable_file() = std::move(*file);
  return grpc::Status::OK;
}

grpc::Status CheckpointServiceImpl::Download(grpc::ServerContext* context,
                                             const v1::DownloadRequest* request,
                                             grpc::ServerWriter<v1::DownloadChunk>* writer) {
  CHECK_AUTH(auth_->CheckJobReader(*context, request->job_id()));
  auto checkpoint = manager_->ServableCheckpoint(request->job_id(), request->step());
  if (!checkpoint.ok()) return ToGrpc(checkpoint.status());
  v1::CheckpointInfo selected = *checkpoint;
  if (request->paths_size() > 0) {
    selected.clear_files();
    for (const std::string& path : request->paths()) {
      auto it = std::find_if(checkpoint->files().begin(), checkpoint->files().end(),
                             [&](const v1::CheckpointFile& f) { return f.path() == path; });
      if (it == checkpoint->files().end()) {
        return grpc::Status(grpc::StatusCode::NOT_FOUND,
                            absl::StrCat("checkpoint step ", request->step(), " has no file '",
                                         path.substr(0, 256), "'"));
      }
      *selected.add_files() = *it;
    }
  }
  // Every byte is checked before the first one leaves.
  absl::Status verified = store_->Verify(selected);
  if (!verified.ok()) {
    manager_->MarkCorrupt(request->job_id(), request->step(), std::string(verified.message()));
    return ToGrpc(verified);
  }
  std::string buffer(kCheckpointChunkBytes, '\0');
  for (const v1::CheckpointFile& file : selected.files()) {
    v1::DownloadChunk chunk;
    *chunk.mutable_file() = file;
    if (!writer->Write(chunk)) return grpc::Status::OK;
    std::unique_ptr<FILE, int (*)(FILE*)> in(
        fopen(store_->PathOf(selected.job_id(), selected.step(), file.path()).c_str(), "rb"),
        fclose);
    if (in == nullptr) {
      return grpc::Status(grpc::StatusCode::NOT_FOUND,
                          absl::StrCat("'", file.path(), "' vanished"));
    }
    // Hashed again while sending, so a file changed after the check is caught.
    Sha256 hash;
    for (;;) {
      const size_t n = fread(buffer.data(), 1, buffer.size(), in.get());
      if (n == 0) break;
      hash.Update(absl::string_view(buffer.data(), n));
      chunk.set_data(buffer.data(), n);
      if (!writer->Write(chunk)) return grpc::Status::OK;
    }
    if (hash.HexDigest() != file.sha256()) {
      const std::string why = absl::StrCat("checkpoint step ", selected.step(), ": file '",
                                           file.path(), "' changed on disk while being served");
      manager_->MarkCorrupt(request->job_id(), request->step(), why);
      return grpc::Status(grpc::StatusCode::DATA_LOSS, why);
    }
  }
  return grpc::Status::OK;
}

grpc::Status CheckpointServiceImpl::List(grpc::ServerContext* context,
                                         const v1::ListCheckpointsRequest* request,
                                         v1::ListCheckpointsResponse* response) {
  CHECK_AUTH(auth_->CheckJobReader(*context, request->job_id()));
  auto checkpoints = manager_->Checkpoints(request->job_id());
  if (!checkpoints.ok()) return ToGrpc(checkpoints.status());
  for (v1::CheckpointInfo& c : *checkpoints) *response->add_checkpoints() = std::move(c);
  return grpc::Status::OK;
}

}  // namespace modamba
