// modamba-coordinator: schedules Modamba jobs, launches their trainer and
// evaluator workers (on this host, or on a Slurm cluster with
// --launcher=slurm), keeps their state in SQLite and serves the gRPC services
// of proto/service.proto and the HTTP status API and dashboard.
//
//   modamba-coordinator --run_root=DIR --data_root=DIR --trainer_binary=PATH
//       [--evaluator_binary=PATH] [--port=7077] [--http_port=7078] [--gpus=N]
//
// Restarting it with the same --db and ports re-adopts the running workers.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <map>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/match.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "coordinator/auth.h"
#include "coordinator/checkpoint_store.h"
#include "coordinator/db.h"
#include "coordinator/grpc_services.h"
#include "coordinator/http_server.h"
#include "coordinator/job_manager.h"
#include "coordinator/launcher.h"
#include "coordinator/slurm_launcher.h"
#include "core/file_util.h"
#include "core/status_macros.h"
#include "glog/logging.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server_builder.h"
#include "rendezvous/kv_store.h"

ABSL_FLAG(std::string, host, "127.0.0.1",
          "address the gRPC server binds (0.0.0.0: every interface)");
ABSL_FLAG(int, port, 7077, "gRPC port; 0: the OS picks one (see --port_file)");
ABSL_FLAG(std::string, http_host, "127.0.0.1", "address the HTTP status API binds");
ABSL_FLAG(int, http_port, 7078, "HTTP port; 0: the OS picks one; -1: no HTTP server");
ABSL_FLAG(std::string, port_file, "",
          "once serving, write \"grpc_port=N\\nhttp_port=M\\n\" here (for scripts and tests)");
ABSL_FLAG(std::string, run_root, "", "required: jobs' working directories and logs go here");
ABSL_FLAG(std::string, db, "", "SQLite database; default RUN_ROOT/coordinator.db");
ABSL_FLAG(std::string, checkpoint_root, "", "checkpoint store; default RUN_ROOT/checkpoints");
ABSL_FLAG(std::string, data_root, "", "job specs' dataset_dir must lie inside this directory");
ABSL_FLAG(std::string, trainer_binary, "", "the trainer worker program");
ABSL_FLAG(std::string, evaluator_binary, "", "the evaluator worker program (jobs with evaluators)");
ABSL_FLAG(std::string, token_file, "",
          "the token of the user who starts the coordinator; created (mode 0600) when missing; "
          "default: $MODAMBA_TOKEN, else ~/.config/modamba/token, where the CLI looks");
ABSL_FLAG(std::string, user, "", "that user's name (default: $USER)");
ABSL_FLAG(std::string, users_file, "",
          "more users sharing this coordinator: \"NAME TOKEN\" lines; the file must be mode 0600");
ABSL_FLAG(std::string, tls_cert, "", "PEM certificate: serve gRPC over TLS (with --tls_key)");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert");
ABSL_FLAG(int, gpus, 0, "GPUs of this host that jobs may use (0..N-1)");
ABSL_FLAG(int, cpu_slots, static_cast<int>(std::max(1u, std::thread::hardware_concurrency())),
          "CPU workers this host runs at once");
ABSL_FLAG(double, worker_memory_gib, 0,
          "host memory one CPU worker may use; jobs estimated to need more are refused "
          "(default: the host's memory / --cpu_slots)");
ABSL_FLAG(double, gpu_memory_gib, 80, "device memory of one GPU, for the same check on GPU jobs");
ABSL_FLAG(absl::Duration, heartbeat_timeout, absl::Seconds(30),
          "a worker silent this long is declared lost");
ABSL_FLAG(absl::Duration, register_timeout, absl::Minutes(5),
          "a launched worker must register within this");
ABSL_FLAG(absl::Duration, stop_grace, absl::Seconds(10), "SIGTERM to SIGKILL grace period");
ABSL_FLAG(std::string, launcher, "local",
          "how workers start: \"local\" (processes on this host) or \"slurm\" (Slurm jobs "
          "through sbatch and srun; --gpus and --cpu_slots then bound what the coordinator's "
          "jobs hold on the cluster at once)");
ABSL_FLAG(std::string, slurm_partition, "",
          "Slurm partition of jobs whose spec names none; default: the cluster's default");
ABSL_FLAG(std::string, slurm_job_prefix, "modamba",
          "Slurm job names are PREFIX-<job>-<group>; distinct per coordinator sharing a cluster");
ABSL_FLAG(std::string, advertise_host, "",
          "the address workers dial (default: --host, or loopback for a wildcard --host); "
          "on a cluster, a name of this host the nodes reach");

namespace modamba {
namespace {

std::string HostPort(const std::string& host, int port) {
  return absl::StrContains(host, ':') ? absl::StrCat("[", host, "]:", port)
                                      : absl::StrCat(host, ":", port);
}

// The users and their tokens: the one who starts the coordinator, and those
// of --users_file.
absl::StatusOr<std::map<std::string, std::string>> SetUpUsers() {
  std::string name = absl::GetFlag(FLAGS_user);
  if (name.empty()) name = std::getenv("USER") != nullptr ? std::getenv("USER") : "local";
  std::string token;
  if (!absl::GetFlag(FLAGS_token_file).empty()) {
    ASSIGN_OR_RETURN(token, LoadOrCreateToken(absl::GetFlag(FLAGS_token_file)));
  } else if (std::getenv("MODAMBA_TOKEN") != nullptr) {
    ASSIGN_OR_RETURN(token, LoadToken(""));
  } else {
    ASSIGN_OR_RETURN(token, LoadOrCreateToken(DefaultTokenPath()));
    LOG(INFO) << "user " << name << ": token in " << DefaultTokenPath();
  }
  std::map<std::string, std::string> users = {{name, token}};
  const std::string users_file = absl::GetFlag(FLAGS_users_file);
  if (users_file.empty()) return users;
  struct stat st;
  if (stat(users_file.c_str(), &st) != 0 || (st.st_mode & 077) != 0) {
    return absl::PermissionDeniedError(
        absl::StrCat(users_file, ": must exist and be readable by its owner only (mode 0600)"));
  }
  ASSIGN_OR_RETURN(std::string text, ReadFile(users_file));
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_number;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line[0] == '#') continue;
    std::vector<std::string> fields = absl::StrSplit(line, ' ', absl::SkipEmpty());
    if (fields.size() != 2 || !users.emplace(fields[0], fields[1]).second) {
      return absl::InvalidArgumentError(absl::StrCat(
          users_file, ":", line_number, ": want \"NAME TOKEN\", each name once"));
    }
  }
  return users;
}

// Workers may change directory: every path they are given is absolute.
std::string Absolute(const std::string& path) {
  return path.empty() ? path : std::filesystem::absolute(path).lexically_normal().string();
}

// A program named by a path (not looked up in PATH) made absolute.
std::string Program(const std::string& program) {
  return absl::StrContains(program, '/') ? Absolute(program) : program;
}

absl::Status Run() {
  if (absl::GetFlag(FLAGS_run_root).empty())
    return absl::InvalidArgumentError("--run_root is required");
  const std::string run_root = Absolute(absl::GetFlag(FLAGS_run_root));
  RETURN_IF_ERROR(MakeDirs(run_root));
  ASSIGN_OR_RETURN(auto users, SetUpUsers());
  // Workers' tokens are derived from it: a restarted coordinator keeps it,
  // so the workers it adopts keep theirs.
  ASSIGN_OR_RETURN(std::string worker_secret, LoadOrCreateToken(run_root + "/worker.secret"));
  const TokenAuth auth(users, worker_secret);

  const std::string db_path =
      absl::GetFlag(FLAGS_db).empty() ? run_root + "/coordinator.db" : absl::GetFlag(FLAGS_db);
  ASSIGN_OR_RETURN(std::unique_ptr<Db> db, Db::Open(db_path));
  const std::string checkpoint_root = absl::GetFlag(FLAGS_checkpoint_root).empty()
                                          ? run_root + "/checkpoints"
                                          : absl::GetFlag(FLAGS_checkpoint_root);
  ASSIGN_OR_RETURN(std::unique_ptr<CheckpointStore> store, CheckpointStore::Open(checkpoint_root));
  std::unique_ptr<Launcher> launcher;
  if (absl::GetFlag(FLAGS_launcher) == "local") {
    launcher = std::make_unique<LocalLauncher>();
  } else if (absl::GetFlag(FLAGS_launcher) == "slurm") {
    SlurmOptions slurm;
    slurm.partition = absl::GetFlag(FLAGS_slurm_partition);
    slurm.job_prefix = absl::GetFlag(FLAGS_slurm_job_prefix);
    launcher = std::make_unique<SlurmLauncher>(slurm);
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "--launcher: \"", absl::GetFlag(FLAGS_launcher), "\" is neither \"local\" nor \"slurm\""));
  }

  std::shared_ptr<grpc::ServerCredentials> credentials = grpc::InsecureServerCredentials();
  const bool tls = !absl::GetFlag(FLAGS_tls_cert).empty();
  if (tls != !absl::GetFlag(FLAGS_tls_key).empty()) {
    return absl::InvalidArgumentError("--tls_cert and --tls_key go together");
  }
  if (tls) {
    grpc::SslServerCredentialsOptions ssl;
    ASSIGN_OR_RETURN(std::string cert, ReadFile(absl::GetFlag(FLAGS_tls_cert)));
    ASSIGN_OR_RETURN(std::string key, ReadFile(absl::GetFlag(FLAGS_tls_key)));
    ssl.pem_key_cert_pairs.push_back({key, cert});
    credentials = grpc::SslServerCredentials(ssl);
  }

  ManagerOptions options;
  options.run_root = run_root;
  options.trainer_binary = Program(absl::GetFlag(FLAGS_trainer_binary));
  options.evaluator_binary = Program(absl::GetFlag(FLAGS_evaluator_binary));
  options.worker_token = [&auth](const v1::WorkerRef& ref) { return auth.WorkerToken(ref); };
  options.worker_tls_ca_file = tls ? Absolute(absl::GetFlag(FLAGS_tls_cert)) : "";
  options.spec_context.data_root = absl::GetFlag(FLAGS_data_root);
  options.spec_context.has_evaluator_binary = !options.evaluator_binary.empty();
  options.spec_context.gpus = absl::GetFlag(FLAGS_gpus);
  options.spec_context.cpu_slots = absl::GetFlag(FLAGS_cpu_slots);
  const double host_bytes = static_cast<double>(sysconf(_SC_PHYS_PAGES)) * sysconf(_SC_PAGESIZE);
  const double worker_gib = absl::GetFlag(FLAGS_worker_memory_gib);
  options.spec_context.worker_memory_bytes = static_cast<int64_t>(
      worker_gib > 0 ? worker_gib * 1073741824.0
                     : host_bytes / std::max(1, options.spec_context.cpu_slots));
  options.spec_context.gpu_memory_bytes =
      static_cast<int64_t>(absl::GetFlag(FLAGS_gpu_memory_gib) * 1073741824.0);
  options.heartbeat_timeout = absl::GetFlag(FLAGS_heartbeat_timeout);
  options.register_timeout = absl::GetFlag(FLAGS_register_timeout);
  options.stop_grace = absl::GetFlag(FLAGS_stop_grace);
  if (options.trainer_binary.empty())
    return absl::InvalidArgumentError("--trainer_binary is required");
  ASSIGN_OR_RETURN(std::unique_ptr<JobManager> manager,
                   JobManager::Create(options, db.get(), store.get(), launcher.get()));

  JobServiceImpl job_service(manager.get(), &auth);
  WorkerServiceImpl worker_service(manager.get(), &auth);
  CheckpointServiceImpl checkpoint_service(manager.get(), store.get(), &auth);
  const std::string host = absl::GetFlag(FLAGS_host);
  grpc::ServerBuilder builder;
  int grpc_port = 0;
  builder.AddListeningPort(HostPort(host, absl::GetFlag(FLAGS_port)), credentials, &grpc_port);
  // Requests are bounded: a rendezvous value or a checkpoint chunk, plus framing.
  builder.SetMaxReceiveMessageSize(static_cast<int>(kMaxKvValueBytes + (64 << 10)));
  builder.RegisterService(&job_service);
  builder.RegisterService(&worker_service);
  builder.RegisterService(&checkpoint_service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || grpc_port == 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot serve gRPC on ", HostPort(host, absl::GetFlag(FLAGS_port))));
  }
  // Local workers dial a wildcard bind on loopback.
  const bool wildcard = host == "0.0.0.0" || host == "::";
  std::string advertised = absl::GetFlag(FLAGS_advertise_host);
  if (advertised.empty()) advertised = wildcard ? "127.0.0.1" : host;
  manager->Start(HostPort(advertised, grpc_port));

  std::unique_ptr<HttpServer> http;
  if (absl::GetFlag(FLAGS_http_port) >= 0) {
    HttpOptions http_options;
    http_options.host = absl::GetFlag(FLAGS_http_host);
    http_options.port = absl::GetFlag(FLAGS_http_port);
    ASSIGN_OR_RETURN(http, HttpServer::Start(http_options, manager.get(), &auth));
  }
  const int http_port = http != nullptr ? http->port() : -1;
  LOG(INFO) << "serving gRPC on " << HostPort(host, grpc_port) << (tls ? " (TLS)" : "")
            << (http != nullptr
                    ? absl::StrCat(", HTTP on http://",
                                   HostPort(absl::GetFlag(FLAGS_http_host), http_port), "/")
                    : "");
  if (!absl::GetFlag(FLAGS_port_file).empty()) {
    RETURN_IF_ERROR(
        WriteFileAtomic(absl::GetFlag(FLAGS_port_file),
                        absl::StrCat("grpc_port=", grpc_port, "\nhttp_port=", http_port, "\n")));
  }

  // Serve until SIGINT or SIGTERM (blocked in every thread, taken here).
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  int received = 0;
  sigwait(&signals, &received);
  LOG(INFO) << "signal " << received << ": stopping (workers keep running)";
  http.reset();
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  manager.reset();
  return absl::OkStatus();
}

}  // namespace
}  // namespace modamba

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "modamba-coordinator --run_root=DIR --data_root=DIR --trainer_binary=PATH [flags]");
  absl::ParseCommandLine(argc, argv);
  google::InitGoogleLogging(argv[0]);
  FLAGS_logtostderr = true;
  // Blocked before any thread starts, so every thread inherits the mask and
  // the main thread alone takes these signals.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);
  absl::Status status = modamba::Run();
  if (!status.ok()) {
    LOG(ERROR) << status;
    return 1;
  }
  return 0;
}
