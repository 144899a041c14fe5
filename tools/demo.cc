#include "tools/demo.h"

#include <fcntl.h>
#include <libgen.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "coordinator/auth.h"
#include "core/file_util.h"
#include "core/status_macros.h"
#include "evaluator/calibration.h"
#include "grpcpp/grpcpp.h"
#include "kernels/cuda_backend.h"
#include "proto/service.grpc.pb.h"
#include "tools/cli/client_command.h"
#include "tools/cli/flags.h"
#include "tools/data/data_command.h"
#include "worker/connection.h"

namespace modamba {
namespace {

struct DemoFlags {
  std::string dir = "/tmp/modamba-demo";
  std::string coordinator = "127.0.0.1:7077";
  int http_port = 7078;
  int steps = 200;
  std::string device = CudaDeviceCount() > 0 ? "gpu" : "cpu";
};

// The flags `demo` and `coordinator start|stop` share.
void DeclareFlags(cli::FlagSet* flags, DemoFlags* f) {
  flags->String("dir", &f->dir, "DIR", "the demo's data, runs, token, pid file and coordinator log");
  flags->String("coordinator", &f->coordinator, "HOST:PORT", "the coordinator to use or start");
  flags->Int("http_port", &f->http_port, "the dashboard's port of a coordinator started here");
  flags->String("device", &f->device, "gpu|cpu", "where the job trains (gpu when this machine has one)");
  flags->Int("steps", &f->steps, "training steps of the job");
}

// Sibling binaries: bazel-bin/tools/modamba -> bazel-bin/<package>/<name>.
std::string SiblingBinary(const std::string& package, const std::string& name) {
  char self[4096];
  ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  if (n <= 0) return name;
  self[n] = '\0';
  std::string tools_dir = dirname(self);
  std::string root = tools_dir.substr(0, tools_dir.rfind('/'));
  return absl::StrCat(root, "/", package, "/", name);
}

bool Reachable(const ClientOptions& options) {
  auto channel = MakeChannel(options);
  if (!channel.ok()) return false;
  auto stub = v1::JobService::NewStub(*channel);
  grpc::ClientContext context;
  PrepareContext(&context, options, absl::Seconds(2));
  v1::ListJobsResponse response;
  return stub->ListJobs(&context, v1::ListJobsRequest(), &response).ok();
}

std::string PidFile(const std::string& dir) { return dir + "/coordinator.pid"; }

// The pid in DIR/coordinator.pid if that process is still the coordinator the
// demo started for DIR (its --port_file names DIR), else 0: a stale file or a
// reused pid never gets a signal.
pid_t OwnCoordinator(const std::string& dir) {
  auto text = ReadFile(PidFile(dir));
  int pid = 0;
  if (!text.ok() || !absl::SimpleAtoi(absl::StripAsciiWhitespace(*text), &pid) || pid <= 0) return 0;
  auto cmdline = ReadFile(absl::StrCat("/proc/", pid, "/cmdline"));
  if (!cmdline.ok()) return 0;
  std::vector<std::string> args = absl::StrSplit(*cmdline, '\0');
  const bool ours = !args.empty() && absl::EndsWith(args[0], "modamba-coordinator") &&
                    std::find(args.begin(), args.end(), "--port_file=" + dir + "/coordinator.ports") !=
                        args.end();
  return ours ? pid : 0;
}

// Starts the coordinator in its own session, so it outlives the demo, and
// records its pid for `modamba coordinator stop`.
absl::Status StartCoordinator(const DemoFlags& f, const std::string& token_file, int gpus) {
  const std::string port_file = f.dir + "/coordinator.ports";
  std::remove(port_file.c_str());
  std::string host = f.coordinator.substr(0, f.coordinator.rfind(':'));
  std::vector<std::string> argv = {
      SiblingBinary("coordinator", "modamba-coordinator"),
      "--host=" + host,
      "--port=" + f.coordinator.substr(f.coordinator.rfind(':') + 1),
      absl::StrCat("--http_port=", f.http_port),
      "--port_file=" + port_file,
      "--run_root=" + f.dir + "/run",
      "--data_root=" + f.dir + "/data",
      "--token_file=" + token_file,
      "--trainer_binary=" + SiblingBinary("trainer", "modamba-trainer"),
      "--evaluator_binary=" + SiblingBinary("evaluator", "modamba-evaluator"),
      "--cpu_slots=4",
      absl::StrCat("--gpus=", gpus)};
  const std::string log = f.dir + "/coordinator.log";
  pid_t pid = fork();
  if (pid < 0) return absl::InternalError(absl::StrCat("fork: ", std::strerror(errno)));
  if (pid == 0) {
    setsid();
    int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
    }
    std::vector<char*> args;
    for (std::string& a : argv) args.push_back(a.data());
    args.push_back(nullptr);
    execv(args[0], args.data());
    _exit(127);
  }
  RETURN_IF_ERROR(WriteFileAtomic(PidFile(f.dir), absl::StrCat(pid, "\n")));
  for (int i = 0; i < 300; ++i) {  // up to 30 s
    if (FileExists(port_file)) return absl::OkStatus();
    int status;
    if (waitpid(pid, &status, WNOHANG) == pid) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return absl::UnavailableError(absl::StrCat("the coordinator did not start; see ", log));
}

// Starts a coordinator for f.dir unless one answers at f.coordinator.
absl::Status EnsureCoordinator(const DemoFlags& f, const std::string& token_file,
                               const ClientOptions& options) {
  if (Reachable(options)) {
    std::cout << "using the coordinator at " << f.coordinator << std::endl;
    return absl::OkStatus();
  }
  std::cout << "starting a coordinator at " << f.coordinator << " (log: " << f.dir
            << "/coordinator.log)" << std::endl;
  return StartCoordinator(f, token_file, CudaDeviceCount());
}

// SIGTERM to the coordinator started for f.dir, and only to it.
absl::Status StopCoordinator(const DemoFlags& f) {
  const pid_t pid = OwnCoordinator(f.dir);
  if (pid == 0) {
    std::cout << "no coordinator started by modamba for " << f.dir << " is running\n";
    std::remove(PidFile(f.dir).c_str());
    return absl::OkStatus();
  }
  if (kill(pid, SIGTERM) != 0) {
    return absl::InternalError(absl::StrCat("kill ", pid, ": ", std::strerror(errno)));
  }
  for (int i = 0; i < 300 && OwnCoordinator(f.dir) != 0; ++i) {  // up to 30 s
    int status;
    waitpid(pid, &status, WNOHANG);  // reaps it when this process started it
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  if (OwnCoordinator(f.dir) != 0) {
    return absl::DeadlineExceededError(
        absl::StrCat("the coordinator (pid ", pid, ") did not stop within 30 s of SIGTERM"));
  }
  std::remove(PidFile(f.dir).c_str());
  std::cout << "stopped the coordinator (pid " << pid << ") of " << f.dir << "\n";
  return absl::OkStatus();
}

std::string Spec(const DemoFlags& f, bool with_evaluator) {
  const bool gpu = f.device == "gpu";
  return absl::StrFormat(R"pb(
name: "demo-trimodal-mom"
dataset_dir: "trimodal"
device: "%s"
world_size: %d
n_evaluators: %d
max_restarts: 2
checkpoint_every_steps: %d
train {
  model {
    d_model: %d n_layer: %d vocab_size: 1031 n_modalities: 3
    route_in: true route_x: true route_dt: true route_out: true
  }
  optimizer { lr: 3e-3 warmup_steps: 20 }
  steps: %d
  batch_size: 8
  seq_len: 256
  seed: 1
  log_every: 10
  eval_every: %d
  eval_batches: 2
}
)pb",
                         f.device, gpu ? 1 : 2, with_evaluator ? 1 : 0, std::max(1, f.steps / 4),
                         gpu ? 256 : 64, gpu ? 4 : 2, f.steps, std::max(1, f.steps / 4));
}

absl::Status Demo(const DemoFlags& f) {
  RETURN_IF_ERROR(MakeDirs(f.dir + "/data"));
  if (!FileExists(f.dir + "/data/trimodal/manifest.json")) {
    std::cout << "building the tri-modal dataset into " << f.dir << "/data (once)" << std::endl;
    std::string out = "--out=" + f.dir + "/data";
    std::vector<std::string> args = {"data", "build", out, "--setting=trimodal", "--seq_len=256"};
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    if (RunDataCommand(argv.size(), argv.data()) != 0) {
      return absl::InternalError("the dataset build failed");
    }
  }
  // Where `modamba status`, `watch` and `logs` find it without being told.
  const std::string token_file = DefaultTokenPath();
  RETURN_IF_ERROR(LoadOrCreateToken(token_file).status());
  ASSIGN_OR_RETURN(ClientOptions options, MakeClientOptions(f.coordinator, token_file, ""));
  RETURN_IF_ERROR(EnsureCoordinator(f, token_file, options));
  // Every worker of a GPU job takes a GPU: the evaluator comes along only when
  // there is one to spare.
  const bool with_evaluator = FileExists(SiblingBinary("evaluator", "modamba-evaluator")) &&
                              (f.device == "cpu" || CudaDeviceCount() >= 2);
  ASSIGN_OR_RETURN(v1::Job job, SubmitJobText(options, Spec(f, with_evaluator), "demo spec"));
  std::cout << "submitted " << job.id() << ": tri-modal Mixture-of-Mamba on " << f.device
            << "; dashboard: http://127.0.0.1:" << f.http_port << "/?token=" << *ReadFile(token_file);
  ASSIGN_OR_RETURN(v1::Job done, WatchJobToEnd(options, job.id(), std::cout, isatty(1)));

  // The last training and validation points, per modality.
  ASSIGN_OR_RETURN(auto channel, MakeChannel(options));
  auto stub = v1::JobService::NewStub(channel);
  std::map<std::string, v1::MetricPoint> last;
  v1::GetMetricsRequest request;
  request.set_job_id(job.id());
  for (;;) {
    grpc::ClientContext context;
    PrepareContext(&context, options, absl::Seconds(10));
    v1::GetMetricsResponse response;
    RETURN_IF_ERROR(FromGrpc(stub->GetMetrics(&context, request, &response)));
    for (const v1::MetricPoint& p : response.points()) last[p.kind()] = p;
    if (response.points().empty()) break;
    request.set_after_seq(response.last_seq());
  }
  std::cout << "\njob " << job.id() << " " << v1::JobState_Name(done.state()) << "\n";
  for (const auto& [kind, point] : last) {
    std::cout << absl::StrFormat("  %-5s step %d: %s\n", kind, point.step(), LossSummary(point));
    // The evaluator's sample metrics beside its judges' accuracy on real data.
    const std::string calibration = eval::CalibrationTable(
        std::map<std::string, double>(point.scalars().begin(), point.scalars().end()));
    for (absl::string_view line : absl::StrSplit(calibration, '\n', absl::SkipEmpty())) {
      std::cout << "        " << line << "\n";
    }
  }
  std::cout << "dashboard: http://127.0.0.1:" << f.http_port << "/ (token in " << token_file
            << "); the coordinator keeps running: modamba coordinator stop"
            << (f.dir == DemoFlags().dir ? "" : " --dir=" + f.dir) << " stops it\n";
  return done.state() == v1::JOB_SUCCEEDED
             ? absl::OkStatus()
             : absl::AbortedError(absl::StrCat("the job ended ", v1::JobState_Name(done.state()), ": ",
                                               done.reason()));
}

}  // namespace

int RunCoordinatorCommand(int argc, char** argv) {
  const std::string verb = argc >= 2 ? argv[1] : "";
  DemoFlags f;
  cli::FlagSet flags(absl::StrCat("modamba coordinator ", verb.empty() ? "start|stop" : verb),
                     "[flags]",
                     "start: starts the demo's coordinator for --dir unless one answers at "
                     "--coordinator; stop: ends the coordinator started for --dir, and nothing else.",
                     "modamba coordinator stop --dir=/tmp/modamba-demo");
  DeclareFlags(&flags, &f);
  if (verb != "start" && verb != "stop") {
    if (verb == "--help" || verb == "-h") {
      std::cout << flags.Help();
      return 0;
    }
    return flags.UsageError(verb.empty() ? "start or stop?"
                                         : cli::UnknownName("subcommand", verb, {"start", "stop"}).message());
  }
  if (std::optional<int> exit = flags.Parse(argc, argv, 2, nullptr)) return *exit;
  absl::Status status;
  if (verb == "stop") {
    status = StopCoordinator(f);
  } else {
    const std::string token_file = DefaultTokenPath();
    status = MakeDirs(f.dir);
    if (status.ok()) status = LoadOrCreateToken(token_file).status();
    auto options = MakeClientOptions(f.coordinator, token_file, "");
    if (status.ok()) status = options.status();
    if (status.ok()) status = EnsureCoordinator(f, token_file, *options);
  }
  if (!status.ok()) {
    std::cerr << "modamba coordinator " << verb << ": " << status.message() << "\n";
    return 1;
  }
  return 0;
}

int RunDemo(int argc, char** argv) {
  DemoFlags f;
  cli::FlagSet flags("modamba demo", "[flags]",
                     "Starts a coordinator (or uses the running one), builds the tri-modal dataset "
                     "once and runs a small Mixture-of-Mamba job, watched to the end.",
                     "modamba demo --steps=100 --device=cpu");
  DeclareFlags(&flags, &f);
  if (std::optional<int> exit = flags.Parse(argc, argv, 1, nullptr)) return *exit;
  if (f.device != "cpu" && f.device != "gpu") return flags.UsageError("--device: must be cpu or gpu");
  if (f.steps <= 0) return flags.UsageError("--steps: must be positive");
  absl::Status status = Demo(f);
  if (!status.ok()) {
    std::cerr << "modamba demo: " << status.message() << "\n";
    return 1;
  }
  return 0;
}

}  // namespace modamba
