#include "tests/cluster.h"

#include <dirent.h>
#include <limits.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <filesystem>

#include "absl/random/random.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "coordinator/auth.h"
#include "core/file_util.h"
#include "core/status_macros.h"

extern char** environ;

namespace modamba {
namespace {

namespace fs = std::filesystem;

std::string TempRoot() {
  const char* tmp = getenv("TEST_TMPDIR");
  absl::BitGen random;
  return absl::StrCat(tmp != nullptr ? tmp : "/tmp", "/cluster-", getpid(), "-",
                      absl::Uniform<uint32_t>(random));
}

std::string OutputsDir() {
  const char* outputs = getenv("TEST_UNDECLARED_OUTPUTS_DIR");
  return outputs != nullptr ? outputs : "";
}

}  // namespace

std::string RunfilePath(const std::string& relative) {
  char resolved[PATH_MAX];
  if (realpath(relative.c_str(), resolved) != nullptr) return resolved;
  return relative;
}

bool IsFinished(const v1::Job& job) {
  return job.state() == v1::JOB_SUCCEEDED || job.state() == v1::JOB_FAILED ||
         job.state() == v1::JOB_CANCELLED;
}

absl::StatusOr<std::unique_ptr<Cluster>> Cluster::Start(ClusterOptions options) {
  std::unique_ptr<Cluster> cluster(new Cluster(std::move(options)));
  cluster->root_ = TempRoot();
  cluster->data_root_ = cluster->root_ + "/data";
  cluster->run_root_ = cluster->root_ + "/run";
  cluster->checkpoint_root_ = cluster->run_root_ + "/checkpoints";
  RETURN_IF_ERROR(MakeDirs(cluster->data_root_));
  RETURN_IF_ERROR(MakeDirs(cluster->run_root_));
  if (!cluster->options_.default_token_file) {
    cluster->token_ = absl::StrCat("test-token-", absl::Uniform<uint64_t>(absl::BitGen()));
    RETURN_IF_ERROR(WriteFileAtomic(cluster->root_ + "/token", cluster->token_ + "\n"));
  }
  if (!cluster->options_.more_users.empty()) {
    std::string users;
    for (const auto& [name, token] : cluster->options_.more_users) {
      absl::StrAppend(&users, name, " ", token, "\n");
    }
    RETURN_IF_ERROR(WriteFileAtomic(cluster->root_ + "/users", users));
    chmod((cluster->root_ + "/users").c_str(), 0600);
  }
  RETURN_IF_ERROR(cluster->Launch(0, 0));
  return cluster;
}

absl::Status Cluster::Launch(int grpc_port, int http_port) {
  const std::string port_file = root_ + "/ports";
  unlink(port_file.c_str());
  const std::string outputs = OutputsDir();
  log_path_ = absl::StrCat(outputs.empty() ? root_ : outputs, "/coordinator-", getpid(), "-",
                           ++launches_, ".log");
  std::vector<std::string> args = {
      RunfilePath("coordinator/modamba-coordinator"),
      absl::StrCat("--port=", grpc_port),
      absl::StrCat("--http_port=", http_port),
      "--port_file=" + port_file,
      "--run_root=" + run_root_,
      "--data_root=" + data_root_,
      "--trainer_binary=" + RunfilePath(options_.trainer_binary),
      "--evaluator_binary=" + RunfilePath(options_.evaluator_binary),
      absl::StrCat("--cpu_slots=", options_.cpu_slots),
      absl::StrCat("--gpus=", options_.gpus),
      "--heartbeat_timeout=" + absl::FormatDuration(options_.heartbeat_timeout),
      "--stop_grace=" + absl::FormatDuration(options_.stop_grace),
      "--register_timeout=30s",
  };
  if (!options_.default_token_file) args.push_back("--token_file=" + root_ + "/token");
  if (!options_.db_dir.empty()) args.push_back("--db=" + options_.db_dir + "/coordinator.db");
  if (!options_.more_users.empty()) args.push_back("--users_file=" + root_ + "/users");
  if (!options_.tls_cert.empty()) {
    args.push_back("--tls_cert=" + options_.tls_cert);
    args.push_back("--tls_key=" + options_.tls_key);
  }
  args.insert(args.end(), options_.extra_flags.begin(), options_.extra_flags.end());
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, log_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND,
                                   0644);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  const int rc = posix_spawn(&pid_, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) return absl::InternalError(absl::StrCat("cannot start ", args[0]));

  // Serving once the port file appears.
  const absl::Time give_up = absl::Now() + absl::Seconds(30);
  for (;;) {
    auto ports = ReadFile(port_file);
    if (ports.ok()) {
      for (absl::string_view line : absl::StrSplit(*ports, '\n', absl::SkipEmpty())) {
        std::pair<absl::string_view, absl::string_view> kv = absl::StrSplit(line, '=');
        if (kv.first == "grpc_port") (void)absl::SimpleAtoi(kv.second, &grpc_port_);
        if (kv.first == "http_port") (void)absl::SimpleAtoi(kv.second, &http_port_);
      }
      break;
    }
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return absl::InternalError(
          absl::StrCat("the coordinator exited at start:\n", ReadFile(log_path_).value_or("")));
    }
    if (absl::Now() > give_up) return absl::DeadlineExceededError("the coordinator did not start");
    absl::SleepFor(absl::Milliseconds(20));
  }
  return Connect();
}

absl::Status Cluster::Connect() {
  if (options_.default_token_file) {
    ASSIGN_OR_RETURN(token_, LoadToken(DefaultTokenPath()));
  }
  ClientOptions client;
  client.address = absl::StrCat("127.0.0.1:", grpc_port_);
  client.token = token_;
  client.tls_ca_file = options_.tls_cert;
  client_ = client;
  ASSIGN_OR_RETURN(std::shared_ptr<grpc::Channel> channel, MakeChannel(client_));
  jobs_ = v1::JobService::NewStub(channel);
  workers_ = v1::WorkerService::NewStub(channel);
  checkpoints_ = v1::CheckpointService::NewStub(channel);
  return absl::OkStatus();
}

Cluster::~Cluster() {
  if (pid_ > 0) {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
  for (pid_t pid : LiveWorkerPids()) kill(-pid, SIGKILL), kill(pid, SIGKILL);
}

absl::Status Cluster::KillCoordinator() {
  if (pid_ <= 0) return absl::FailedPreconditionError("no coordinator");
  kill(pid_, SIGKILL);
  waitpid(pid_, nullptr, 0);
  pid_ = -1;
  return absl::OkStatus();
}

absl::Status Cluster::RestartCoordinator() {
  if (pid_ > 0) return absl::FailedPreconditionError("the coordinator still runs");
  return Launch(grpc_port_, http_port_);
}

std::vector<pid_t> Cluster::LiveWorkerPids() const {
  // Workers are recognised by their --run_dir, which lies in this cluster's tree.
  std::vector<pid_t> pids;
  const std::string marker = "--run_dir=" + run_root_ + "/";
  DIR* proc = opendir("/proc");
  if (proc == nullptr) return pids;
  while (dirent* entry = readdir(proc)) {
    int pid = 0;
    if (!absl::SimpleAtoi(entry->d_name, &pid)) continue;
    auto cmdline = ReadFile(absl::StrCat("/proc/", pid, "/cmdline"));
    auto stat = ReadFile(absl::StrCat("/proc/", pid, "/stat"));
    if (!cmdline.ok() || !stat.ok() || !absl::StrContains(*cmdline, marker)) continue;
    const size_t close = stat->rfind(')');
    if (close != std::string::npos && stat->substr(close + 2, 1) == "Z") continue;  // a zombie
    pids.push_back(pid);
  }
  closedir(proc);
  return pids;
}

std::string Cluster::Logs() const {
  std::string out =
      absl::StrCat("--- coordinator (", log_path_, ")\n", ReadFile(log_path_).value_or(""));
  std::error_code error;
  for (fs::recursive_directory_iterator it(run_root_, error), end; !error && it != end;
       it.increment(error)) {
    if (it->path().extension() == ".log") {
      absl::StrAppend(&out, "--- ", it->path().string(), "\n",
                      ReadFile(it->path().string()).value_or(""));
    }
  }
  return out;
}

std::string Cluster::MakeDataset(const std::string& name, const std::string& behaviour) {
  const std::string dir = data_root_ + "/" + name;
  MakeDirs(dir).IgnoreError();
  WriteFileAtomic(dir + "/fake_worker.txt", behaviour).IgnoreError();
  return name;
}

std::string Cluster::Spec(const std::string& name, const std::string& dataset, int steps,
                          int world_size, int n_evaluators, int checkpoint_every,
                          const std::string& extra) {
  return absl::StrCat("world_size: ", world_size, "\n", "n_evaluators: ", n_evaluators, "\n",
                      "dataset_dir: \"", dataset, "\"\n",
                      "checkpoint_every_steps: ", checkpoint_every, "\n", extra,
                      "train {\n"
                      "  steps: ",
                      steps,
                      "\n"
                      "  batch_size: 1\n"
                      "  seq_len: 8\n"
                      "  eval_every: 5\n"
                      "  model { d_model: 8 n_layer: 1 vocab_size: 16 }\n"
                      "  optimizer { lr: 0.001 }\n"
                      "}\n"
                      "name: \"",
                      name, "\"\n");
}

void Cluster::Prepare(grpc::ClientContext* context, absl::Duration timeout) const {
  PrepareContext(context, client_, timeout);
}

void Cluster::PrepareAsWorker(grpc::ClientContext* context, const std::string& job_id,
                              const std::string& worker) const {
  ClientOptions as_worker = client_;
  as_worker.token = std::string(absl::StripAsciiWhitespace(
      ReadFile(absl::StrCat(run_root_, "/", job_id, "/", worker, "/worker.token")).value_or("")));
  PrepareContext(context, as_worker, absl::Seconds(30));
}

absl::StatusOr<v1::Job> Cluster::Submit(const std::string& spec_text) {
  grpc::ClientContext context;
  Prepare(&context);
  v1::SubmitJobRequest request;
  request.set_spec_textproto(spec_text);
  request.set_source("test.textproto");
  v1::Job job;
  RETURN_IF_ERROR(FromGrpc(jobs_->SubmitJob(&context, request, &job)));
  return job;
}

absl::StatusOr<v1::Job> Cluster::GetJob(const std::string& job_id) {
  grpc::ClientContext context;
  Prepare(&context);
  v1::GetJobRequest request;
  request.set_job_id(job_id);
  v1::Job job;
  RETURN_IF_ERROR(FromGrpc(jobs_->GetJob(&context, request, &job)));
  return job;
}

absl::StatusOr<v1::Job> Cluster::WaitJob(const std::string& job_id,
                                         const std::function<bool(const v1::Job&)>& done,
                                         absl::Duration timeout) {
  const absl::Time give_up = absl::Now() + timeout;
  v1::Job job;
  for (;;) {
    absl::StatusOr<v1::Job> current = GetJob(job_id);
    if (current.ok()) {
      job = *current;
      if (done(job)) return job;
    }
    if (absl::Now() > give_up) {
      return absl::DeadlineExceededError(
          absl::StrCat(job_id, " did not get there in time; last seen ",
                       v1::JobState_Name(job.state()), " at step ", job.step(), ": ", job.reason(),
                       current.ok() ? "" : absl::StrCat(" (", current.status().ToString(), ")")));
    }
    absl::SleepFor(absl::Milliseconds(100));
  }
}

absl::StatusOr<v1::Job> Cluster::WaitFinished(const std::string& job_id, absl::Duration timeout) {
  return WaitJob(job_id, IsFinished, timeout);
}

absl::StatusOr<std::vector<v1::MetricPoint>> Cluster::Metrics(const std::string& job_id) {
  std::vector<v1::MetricPoint> points;
  int64_t after = 0;
  for (;;) {
    grpc::ClientContext context;
    Prepare(&context);
    v1::GetMetricsRequest request;
    request.set_job_id(job_id);
    request.set_after_seq(after);
    v1::GetMetricsResponse response;
    RETURN_IF_ERROR(FromGrpc(jobs_->GetMetrics(&context, request, &response)));
    if (response.points().empty()) return points;
    points.insert(points.end(), response.points().begin(), response.points().end());
    after = response.last_seq();
  }
}

absl::StatusOr<std::vector<v1::CheckpointInfo>> Cluster::Checkpoints(const std::string& job_id) {
  grpc::ClientContext context;
  Prepare(&context);
  v1::ListCheckpointsRequest request;
  request.set_job_id(job_id);
  v1::ListCheckpointsResponse response;
  RETURN_IF_ERROR(FromGrpc(checkpoints_->List(&context, request, &response)));
  return std::vector<v1::CheckpointInfo>(response.checkpoints().begin(),
                                         response.checkpoints().end());
}

absl::StatusOr<HttpResult> Cluster::Http(const std::string& method, const std::string& target,
                                         bool with_token, const std::string& body) {
  namespace beast = boost::beast;
  namespace http = beast::http;
  boost::asio::io_context io;
  boost::asio::ip::tcp::socket socket(io);
  boost::system::error_code ec;
  socket.connect({boost::asio::ip::make_address("127.0.0.1"), static_cast<uint16_t>(http_port_)},
                 ec);
  if (ec) return absl::UnavailableError(ec.message());
  http::request<http::string_body> request(http::string_to_verb(method), target, 11);
  request.set(http::field::host, "127.0.0.1");
  if (with_token) request.set(http::field::authorization, "Bearer " + token_);
  request.body() = body;
  request.prepare_payload();
  boost::system::error_code write_error;
  http::write(socket, request, write_error);
  // A server may answer (and stop reading) before the whole request is sent.
  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(256 << 20);
  http::read(socket, buffer, parser, ec);
  if (ec) return absl::UnavailableError((write_error ? write_error : ec).message());
  HttpResult result;
  result.status = parser.get().result_int();
  result.body = parser.get().body();
  return result;
}

}  // namespace modamba
