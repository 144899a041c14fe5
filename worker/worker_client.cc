#include "worker/worker_client.h"

#include <cerrno>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <map>
#include <set>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "core/sha256.h"
#include "core/file_util.h"
#include "core/status_macros.h"
#include "glog/logging.h"
#include "grpcpp/create_channel.h"
#include "worker/limits.h"

namespace modamba {
namespace {

namespace fs = std::filesystem;

constexpr absl::Duration kCallTimeout = absl::Seconds(30);
constexpr size_t kChunkBytes = 1 << 20;
constexpr int kMaxPointsPerCall = 500;

std::string Env(const char* name) {
  const char* value = std::getenv(name);
  return value != nullptr ? value : "";
}

// The rendezvous store over WorkerService.Kv*: keys live in the coordinator,
// scoped to this worker's job, role and generation.
class CoordinatorKvStore : public KvStore {
 public:
  explicit CoordinatorKvStore(WorkerClient* client) : client_(client) {}

  absl::Status Set(absl::string_view key, absl::string_view value) override {
    v1::KvSetRequest request;
    *request.mutable_worker() = client_->ref();
    request.set_key(std::string(key));
    request.set_value(std::string(value));
    v1::KvSetResponse response;
    return client_->Call(kCallTimeout, [&](grpc::ClientContext* context) {
      return client_->worker_stub()->KvSet(context, request, &response);
    });
  }

  absl::StatusOr<std::string> Get(absl::string_view key, absl::Duration timeout) override {
    const absl::Time deadline = absl::Now() + timeout;
    v1::KvGetRequest request;
    *request.mutable_worker() = client_->ref();
    request.set_key(std::string(key));
    v1::KvGetResponse response;
    absl::Status status =
        client_->Call(timeout + absl::Seconds(10), [&](grpc::ClientContext* context) {
          // A retry after a coordinator restart waits only for what is left.
          request.set_timeout_ms(
              std::max<int64_t>(0, absl::ToInt64Milliseconds(deadline - absl::Now())));
          return client_->worker_stub()->KvGet(context, request, &response);
        });
    if (!status.ok()) return status;
    return response.value();
  }

  absl::StatusOr<int64_t> Add(absl::string_view key, int64_t delta) override {
    v1::KvAddRequest request;
    *request.mutable_worker() = client_->ref();
    request.set_key(std::string(key));
    request.set_delta(delta);
    v1::KvAddResponse response;
    RETURN_IF_ERROR(client_->Call(kCallTimeout, [&](grpc::ClientContext* context) {
      return client_->worker_stub()->KvAdd(context, request, &response);
    }));
    return response.value();
  }

  absl::StatusOr<bool> Check(absl::Span<const std::string> keys) override {
    v1::KvCheckRequest request;
    *request.mutable_worker() = client_->ref();
    for (const std::string& key : keys) request.add_keys(key);
    v1::KvCheckResponse response;
    RETURN_IF_ERROR(client_->Call(kCallTimeout, [&](grpc::ClientContext* context) {
      return client_->worker_stub()->KvCheck(context, request, &response);
    }));
    return response.all_set();
  }

 private:
  WorkerClient* const client_;
};

}  // namespace

absl::StatusOr<WorkerClientOptions> WorkerOptionsFromEnv() {
  WorkerClientOptions options;
  const std::string address = Env("MODAMBA_COORDINATOR");
  if (address.empty()) return absl::FailedPreconditionError("MODAMBA_COORDINATOR is not set");
  ASSIGN_OR_RETURN(options.connection,
                   MakeClientOptions(address, Env("MODAMBA_TOKEN_FILE"), Env("MODAMBA_TLS_CA")));
  options.ref.set_job_id(Env("MODAMBA_JOB_ID"));
  const std::string role = Env("MODAMBA_ROLE");
  if (role == "trainer") {
    options.ref.set_role(v1::ROLE_TRAINER);
  } else if (role == "evaluator") {
    options.ref.set_role(v1::ROLE_EVALUATOR);
  } else {
    return absl::FailedPreconditionError(
        absl::StrCat("MODAMBA_ROLE '", role, "' is not trainer or evaluator"));
  }
  int rank = 0, generation = 0;
  if (!absl::SimpleAtoi(Env("MODAMBA_RANK"), &rank) ||
      !absl::SimpleAtoi(Env("MODAMBA_GENERATION"), &generation) || options.ref.job_id().empty()) {
    return absl::FailedPreconditionError(
        "MODAMBA_JOB_ID, MODAMBA_RANK and MODAMBA_GENERATION must be set");
  }
  options.ref.set_rank(rank);
  options.ref.set_generation(generation);
  return options;
}

absl::StatusOr<std::unique_ptr<WorkerClient>> WorkerClient::Connect(WorkerClientOptions options) {
  std::unique_ptr<WorkerClient> client(new WorkerClient(std::move(options)));
  ASSIGN_OR_RETURN(client->channel_, MakeChannel(client->options_.connection));
  client->worker_ = v1::WorkerService::NewStub(client->channel_);
  client->checkpoints_ = v1::CheckpointService::NewStub(client->channel_);
  client->kv_ = std::make_unique<CoordinatorKvStore>(client.get());
  client->sender_thread_ = std::thread([c = client.get()] { c->SendLoop(); });
  return client;
}

WorkerClient::~WorkerClient() {
  {
    absl::MutexLock lock(&mu_);
    closing_ = true;
  }
  if (heartbeat_thread_.joinable()) heartbeat_thread_.join();
  if (sender_thread_.joinable()) sender_thread_.join();
}

std::string WorkerClient::stop_reason() const {
  absl::MutexLock lock(&mu_);
  return stop_reason_;
}

void WorkerClient::RequestStop(const std::string& reason) {
  absl::MutexLock lock(&mu_);
  if (!stop_requested_) {
    stop_reason_ = reason;
    stop_requested_ = true;
  }
}

absl::Status WorkerClient::Call(absl::Duration timeout,
                                const std::function<grpc::Status(grpc::ClientContext*)>& call) {
  const absl::Time give_up = absl::Now() + options_.retry_for;
  absl::Duration backoff = absl::Milliseconds(100);
  for (;;) {
    grpc::ClientContext context;
    PrepareContext(&context, options_.connection, timeout);
    const grpc::Status status = call(&context);
    if (status.ok()) return absl::OkStatus();
    if (status.error_code() == grpc::StatusCode::ABORTED) RequestStop(status.error_message());
    if (status.error_code() != grpc::StatusCode::UNAVAILABLE || absl::Now() + backoff > give_up) {
      return FromGrpc(status);
    }
    {
      // Closing cuts retries short.
      absl::MutexLock lock(&mu_);
      if (mu_.AwaitWithTimeout(absl::Condition(&closing_), backoff)) return FromGrpc(status);
    }
    backoff = std::min(backoff * 2, absl::Seconds(2));
  }
}

absl::StatusOr<v1::RegisterResponse> WorkerClient::Register() {
  v1::RegisterRequest request;
  *request.mutable_worker() = options_.ref;
  request.set_pid(getpid());
  char host[256] = {};
  gethostname(host, sizeof(host) - 1);
  request.set_host(host);
  v1::RegisterResponse response;
  RETURN_IF_ERROR(Call(kCallTimeout, [&](grpc::ClientContext* context) {
    return worker_->Register(context, request, &response);
  }));
  const absl::Duration interval =
      absl::Milliseconds(std::max<int64_t>(50, response.heartbeat_interval_ms()));
  if (!heartbeat_thread_.joinable()) {
    heartbeat_thread_ = std::thread([this, interval] { HeartbeatLoop(interval); });
  }
  return response;
}

void WorkerClient::HeartbeatLoop(absl::Duration interval) {
  absl::Time last_answer = absl::Now();
  bool reachable = true;
  for (;;) {
    {
      absl::MutexLock lock(&mu_);
      if (mu_.AwaitWithTimeout(absl::Condition(&closing_), interval)) return;
    }
    v1::HeartbeatRequest request;
    *request.mutable_worker() = options_.ref;
    request.set_step(step_);
    v1::HeartbeatResponse response;
    grpc::ClientContext context;
    PrepareContext(&context, options_.connection, std::max(interval, absl::Seconds(1)));
    // Sent the moment a connection is up again, rather than failing while
    // the channel waits to reconnect.
    context.set_wait_for_ready(true);
    const grpc::Status status = worker_->Heartbeat(&context, request, &response);
    // Worth a line when the coordinator goes away and when it is back.
    if (status.ok() != reachable) {
      reachable = status.ok();
      LOG(WARNING) << (reachable ? "the coordinator answers again"
                                 : "heartbeat failed: " + status.error_message());
    }
    if (status.ok()) {
      last_answer = absl::Now();
      if (response.stop()) RequestStop(response.reason());
    } else if (status.error_code() == grpc::StatusCode::ABORTED ||
               status.error_code() == grpc::StatusCode::NOT_FOUND) {
      RequestStop(status.error_message());
    } else if (absl::Now() - last_answer > options_.retry_for) {
      // An orphan: nobody will ever collect this worker's results.
      RequestStop(absl::StrCat("no answer from the coordinator for ",
                               absl::FormatDuration(options_.retry_for)));
    }
  }
}

void WorkerClient::ReportMetrics(std::vector<v1::MetricPoint> points) {
  absl::MutexLock lock(&mu_);
  for (v1::MetricPoint& p : points) queue_.push_back(std::move(p));
}

void WorkerClient::SendLoop() {
  auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return closing_ || !queue_.empty(); };
  for (;;) {
    v1::ReportMetricsRequest request;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(&ready));
      if (closing_) return;
      *request.mutable_worker() = options_.ref;
      for (size_t i = 0; i < queue_.size() && i < kMaxPointsPerCall; ++i) {
        *request.add_points() = queue_[i];
      }
      sending_ = true;
    }
    v1::ReportMetricsResponse response;
    absl::Status status = Call(kCallTimeout, [&](grpc::ClientContext* context) {
      return worker_->ReportMetrics(context, request, &response);
    });
    absl::MutexLock lock(&mu_);
    sending_ = false;
    // Delivered, or refused for good (stopped, or malformed): either way the
    // points leave the queue. Unreachable: they stay and are sent again.
    if (status.ok() || !absl::IsUnavailable(status)) {
      queue_.erase(queue_.begin(), queue_.begin() + request.points_size());
      if (!status.ok()) {
        LOG(WARNING) << "metrics not accepted: " << status;
        send_error_ = status;
      }
    } else {
      send_error_ = status;
      mu_.AwaitWithTimeout(absl::Condition(&closing_), absl::Seconds(1));
    }
  }
}

absl::Status WorkerClient::FlushMetrics(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto drained = [this]()
                     ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return queue_.empty() && !sending_; };
  if (!mu_.AwaitWithTimeout(absl::Condition(&drained), timeout)) {
    return absl::DeadlineExceededError(
        absl::StrCat(queue_.size(), " metric points not delivered: ", send_error_.ToString()));
  }
  return absl::OkStatus();
}

absl::Status WorkerClient::UploadFile(int64_t step, const std::string& local,
                                      const v1::CheckpointFile& file) {
  const absl::Time give_up = absl::Now() + options_.retry_for;
  absl::Duration backoff = absl::Milliseconds(100);
  std::string buffer(kChunkBytes, '\0');
  for (;;) {
    grpc::ClientContext context;
    PrepareContext(&context, options_.connection, absl::InfiniteDuration());
    v1::UploadResponse response;
    std::unique_ptr<grpc::ClientWriter<v1::UploadChunk>> writer =
        checkpoints_->Upload(&context, &response);
    v1::UploadChunk chunk;
    v1::UploadHeader* header = chunk.mutable_header();
    *header->mutable_worker() = options_.ref;
    header->set_step(step);
    *header->mutable_file() = file;
    bool open = writer->Write(chunk);
    std::unique_ptr<FILE, int (*)(FILE*)> in(fopen(local.c_str(), "rb"), fclose);
    if (in == nullptr) return IoError(absl::StrCat("cannot read ", local), errno);
    while (open) {
      const size_t n = fread(buffer.data(), 1, buffer.size(), in.get());
      if (n == 0) break;
      chunk.set_data(buffer.data(), n);
      open = writer->Write(chunk);
    }
    if (open) writer->WritesDone();
    const grpc::Status status = writer->Finish();
    // Already complete: a retry of an upload that made it before.
    if (status.ok() || status.error_code() == grpc::StatusCode::ALREADY_EXISTS) {
      return absl::OkStatus();
    }
    if (status.error_code() == grpc::StatusCode::ABORTED) RequestStop(status.error_message());
    if (status.error_code() != grpc::StatusCode::UNAVAILABLE || absl::Now() + backoff > give_up) {
      return absl::Status(FromGrpc(status).code(),
                          absl::StrCat("upload of ", file.path(), ": ", status.error_message()));
    }
    absl::SleepFor(backoff);
    backoff = std::min(backoff * 2, absl::Seconds(2));
  }
}

absl::StatusOr<v1::CheckpointInfo> WorkerClient::UploadCheckpoint(int64_t step, double flops,
                                                                  const std::string& dir,
                                                                  const std::string& prefix) {
  std::vector<std::pair<std::string, v1::CheckpointFile>> files;
  std::error_code error;
  for (fs::recursive_directory_iterator it(dir, error), end; !error && it != end;
       it.increment(error)) {
    if (!it->is_regular_file()) continue;
    v1::CheckpointFile file;
    file.set_path(prefix + fs::relative(it->path(), dir).string());
    file.set_size(static_cast<int64_t>(it->file_size()));
    ASSIGN_OR_RETURN(*file.mutable_sha256(), Sha256File(it->path().string()));
    files.emplace_back(it->path().string(), std::move(file));
  }
  if (error) return absl::NotFoundError(absl::StrCat("cannot list ", dir, ": ", error.message()));
  std::sort(files.begin(), files.end(),
            [](const auto& a, const auto& b) { return a.second.path() < b.second.path(); });
  v1::ReportCheckpointRequest request;
  *request.mutable_worker() = options_.ref;
  request.set_step(step);
  request.set_flops(flops);
  for (const auto& [local, file] : files) {
    RETURN_IF_ERROR(UploadFile(step, local, file));
    *request.add_files() = file;
  }
  v1::ReportCheckpointResponse response;
  RETURN_IF_ERROR(Call(kCallTimeout, [&](grpc::ClientContext* context) {
    return worker_->ReportCheckpoint(context, request, &response);
  }));
  return response.checkpoint();
}

absl::Status WorkerClient::DownloadCheckpoint(const v1::CheckpointInfo& checkpoint,
                                              const std::string& dir,
                                              const std::vector<std::string>& paths) {
  std::map<std::string, v1::CheckpointFile> expected;
  for (const v1::CheckpointFile& file : checkpoint.files()) {
    RETURN_IF_ERROR(CheckCheckpointPath(file.path()));
    if (paths.empty() || std::find(paths.begin(), paths.end(), file.path()) != paths.end()) {
      expected[file.path()] = file;
    }
  }
  if (expected.size() < paths.size()) {
    return absl::NotFoundError(
        absl::StrCat("checkpoint step ", checkpoint.step(), " lacks some of the files asked for"));
  }
  RETURN_IF_ERROR(MakeDirs(dir));
  const std::string temp = absl::StrCat(dir, "/.download-", getpid());
  const absl::Time give_up = absl::Now() + options_.retry_for;
  for (;;) {
    grpc::ClientContext context;
    PrepareContext(&context, options_.connection, absl::InfiniteDuration());
    v1::DownloadRequest request;
    request.set_job_id(checkpoint.job_id());
    request.set_step(checkpoint.step());
    for (const std::string& path : paths) request.add_paths(path);
    std::unique_ptr<grpc::ClientReader<v1::DownloadChunk>> reader =
        checkpoints_->Download(&context, request);
    // One file at a time: bytes go to `temp`, hashed as they come, and the
    // file is renamed into place when the next one starts or the stream ends.
    std::set<std::string> received;
    std::unique_ptr<Sha256> hash;
    FILE* out = nullptr;
    v1::CheckpointFile current;
    int64_t written = 0;
    absl::Status failed;
    auto finish_file = [&]() -> absl::Status {
      if (out == nullptr) return absl::OkStatus();
      const bool flushed = fclose(out) == 0;
      const int err = errno;
      out = nullptr;
      const std::string sha = hash->HexDigest();
      if (!flushed) return IoError(absl::StrCat("cannot write ", temp), err);
      if (written != current.size() || sha != expected[current.path()].sha256()) {
        return absl::DataLossError(
            absl::StrCat("downloaded '", current.path(), "' does not match its sha256"));
      }
      const std::string target = absl::StrCat(dir, "/", current.path());
      RETURN_IF_ERROR(MakeDirs(fs::path(target).parent_path().string()));
      if (rename(temp.c_str(), target.c_str()) != 0) {
        return IoError(absl::StrCat("cannot rename into ", target), errno);
      }
      received.insert(current.path());
      return absl::OkStatus();
    };
    v1::DownloadChunk chunk;
    while (failed.ok() && reader->Read(&chunk)) {
      if (chunk.has_file()) {
        failed = finish_file();
        if (!failed.ok()) break;
        current = chunk.file();
        auto it = expected.find(current.path());
        if (it == expected.end() || it->second.sha256() != current.sha256()) {
          failed = absl::DataLossError(absl::StrCat("unexpected file '", current.path(), "'"));
          break;
        }
        out = fopen(temp.c_str(), "wb");
        if (out == nullptr) failed = IoError(absl::StrCat("cannot create ", temp), errno);
        hash = std::make_unique<Sha256>();
        written = 0;
      } else if (out != nullptr) {
        if (fwrite(chunk.data().data(), 1, chunk.data().size(), out) != chunk.data().size()) {
          failed = IoError(absl::StrCat("cannot write ", temp), errno);
        }
        hash->Update(chunk.data());
        written += chunk.data().size();
      } else {
        failed = absl::DataLossError("checkpoint data before its file header");
      }
    }
    if (!failed.ok()) context.TryCancel();
    const grpc::Status status = reader->Finish();
    if (failed.ok() && status.ok()) failed = finish_file();
    if (out != nullptr) fclose(out);
    unlink(temp.c_str());
    if (!failed.ok()) return failed;
    if (status.ok()) {
      if (received.size() != expected.size()) {
        return absl::DataLossError(absl::StrCat("checkpoint step ", checkpoint.step(), ": got ",
                                                received.size(), " of ", expected.size(),
                                                " files"));
      }
      return absl::OkStatus();
    }
    if (status.error_code() != grpc::StatusCode::UNAVAILABLE || absl::Now() > give_up) {
      return FromGrpc(status);
    }
    absl::SleepFor(absl::Seconds(1));
  }
}

absl::StatusOr<v1::AwaitCheckpointResponse> WorkerClient::AwaitCheckpoint(int64_t finished_step,
                                                                          absl::Duration wait) {
  v1::AwaitCheckpointRequest request;
  *request.mutable_worker() = options_.ref;
  request.set_finished_step(finished_step);
  request.set_wait_ms(absl::ToInt64Milliseconds(wait));
  v1::AwaitCheckpointResponse response;
  RETURN_IF_ERROR(Call(wait + kCallTimeout, [&](grpc::ClientContext* context) {
    return worker_->AwaitCheckpoint(context, request, &response);
  }));
  return response;
}

absl::Status WorkerClient::Done(bool ok, const std::string& message, bool permanent) {
  absl::Status flushed = FlushMetrics(options_.retry_for);
  if (!flushed.ok()) LOG(WARNING) << flushed;
  v1::DoneRequest request;
  *request.mutable_worker() = options_.ref;
  request.set_ok(ok);
  request.set_message(message);
  request.set_permanent(permanent);
  v1::DoneResponse response;
  return Call(kCallTimeout, [&](grpc::ClientContext* context) {
    return worker_->Done(context, request, &response);
  });
}

}  // namespace modamba
