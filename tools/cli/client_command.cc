#include "tools/cli/client_command.h"

#include <unistd.h>

#include <cstdlib>
#include <iomanip>
#include <iostream>
#include <map>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "core/file_util.h"
#include "core/status_macros.h"
#include "proto/service.grpc.pb.h"

namespace modamba {
namespace {

constexpr char kUsage[] =
    "usage: modamba <command> [flags]\n"
    "  submit SPEC.textproto [--watch]\n"
    "  status [JOB]\n"
    "  watch JOB\n"
    "  cancel JOB\n"
    "  logs JOB [--worker=trainer-0] [--bytes=65536] [--follow]\n"
    "  checkpoints JOB\n"
    "flags: --coordinator=HOST:PORT  --token_file=FILE  --tls_ca=PEM\n";

constexpr absl::Duration kCallTimeout = absl::Seconds(30);

// "--name=value" flags and positional arguments.
struct Args {
  std::vector<std::string> positional;
  std::map<std::string, std::string> flags;

  std::string Flag(const std::string& name, const std::string& fallback = "") const {
    auto it = flags.find(name);
    return it == flags.end() ? fallback : it->second;
  }
};

absl::StatusOr<Args> ParseArgs(int argc, char** argv, const std::vector<std::string>& known) {
  Args args;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (!absl::StartsWith(arg, "--")) {
      args.positional.push_back(arg);
      continue;
    }
    const size_t eq = arg.find('=');
    const std::string name = arg.substr(2, eq == std::string::npos ? std::string::npos : eq - 2);
    if (std::find(known.begin(), known.end(), name) == known.end()) {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag --", name));
    }
    args.flags[name] = eq == std::string::npos ? "true" : arg.substr(eq + 1);
  }
  return args;
}

std::string EnvOr(const char* name, const std::string& fallback) {
  const char* value = std::getenv(name);
  return value != nullptr && *value != '\0' ? value : fallback;
}

absl::StatusOr<ClientOptions> OptionsFrom(const Args& args) {
  ASSIGN_OR_RETURN(
      ClientOptions options,
      MakeClientOptions(args.Flag("coordinator", EnvOr("MODAMBA_COORDINATOR", "127.0.0.1:7077")),
                        args.Flag("token_file", EnvOr("MODAMBA_TOKEN_FILE", "")),
                        args.Flag("tls_ca", EnvOr("MODAMBA_TLS_CA", ""))));
  options.wait_for_ready = true;  // a coordinator that is (re)starting is waited for
  return options;
}

struct Stubs {
  std::unique_ptr<v1::JobService::Stub> jobs;
  std::unique_ptr<v1::CheckpointService::Stub> checkpoints;
};

absl::StatusOr<Stubs> Connect(const ClientOptions& options) {
  ASSIGN_OR_RETURN(std::shared_ptr<grpc::Channel> channel, MakeChannel(options));
  return Stubs{v1::JobService::NewStub(channel), v1::CheckpointService::NewStub(channel)};
}

std::string StateName(v1::JobState state) {
  std::string name = v1::JobState_Name(state);
  return absl::StartsWith(name, "JOB_") ? name.substr(4) : name;
}

std::string WorkerStateName(v1::WorkerState state) {
  std::string name = v1::WorkerState_Name(state);
  return absl::StartsWith(name, "WORKER_") ? name.substr(7) : name;
}

bool Finished(const v1::Job& job) {
  return job.state() == v1::JOB_SUCCEEDED || job.state() == v1::JOB_FAILED ||
         job.state() == v1::JOB_CANCELLED;
}

std::string Duration(double seconds) {
  if (seconds < 0 || seconds > 1e8) return "--:--";
  const int64_t s = static_cast<int64_t>(seconds + 0.5);
  if (s >= 3600) return absl::StrFormat("%d:%02d:%02d", s / 3600, s / 60 % 60, s % 60);
  return absl::StrFormat("%d:%02d", s / 60, s % 60);
}

absl::StatusOr<v1::Job> GetJob(const ClientOptions& options, v1::JobService::Stub* stub,
                               const std::string& id) {
  grpc::ClientContext context;
  PrepareContext(&context, options, kCallTimeout);
  v1::GetJobRequest request;
  request.set_job_id(id);
  v1::Job job;
  RETURN_IF_ERROR(FromGrpc(stub->GetJob(&context, request, &job)));
  return job;
}

void PrintJobTable(const std::vector<v1::Job>& jobs) {
  std::cout << absl::StrFormat("%-10s %-20s %-10s %-15s %-8s %-10s %s\n", "JOB", "NAME", "STATE",
                               "STEP", "RESTARTS", "CHECKPOINT", "LOSS");
  for (const v1::Job& job : jobs) {
    std::cout << absl::StrFormat(
        "%-10s %-20s %-10s %-15s %-8d %-10s %s\n", job.id(), job.spec().name(),
        StateName(job.state()), absl::StrCat(job.step(), "/", job.spec().train().steps()),
        job.restarts(),
        job.latest_checkpoint_step() >= 0 ? absl::StrCat(job.latest_checkpoint_step()) : "-",
        LossSummary(job.last_train()));
  }
}

void PrintJob(const v1::Job& job) {
  std::cout << job.id() << " (" << job.spec().name() << "): " << StateName(job.state()) << "\n";
  if (!job.reason().empty()) std::cout << "  reason:      " << job.reason() << "\n";
  std::cout << "  step:        " << job.step() << " / " << job.spec().train().steps()
            << absl::StrFormat("   (%.3g training FLOPs)", job.flops()) << "\n";
  std::cout << "  workers:     " << job.spec().world_size() << " trainers, "
            << job.spec().n_evaluators() << " evaluators on " << job.spec().device()
            << ", restarts " << job.restarts() << " of " << job.spec().max_restarts() << "\n";
  if (job.has_last_train()) std::cout << "  train loss:  " << LossSummary(job.last_train()) << "\n";
  if (job.has_last_val()) {
    std::cout << "  val loss:    " << LossSummary(job.last_val()) << " (step "
              << job.last_val().step() << ")\n";
  }
  std::cout << "  checkpoint:  "
            << (job.latest_checkpoint_step() >= 0
                    ? absl::StrCat("step ", job.latest_checkpoint_step())
                    : "none yet")
            << "\n";
  for (const v1::WorkerInfo& w : job.workers()) {
    std::cout << absl::StrFormat(
        "  %-12s gen %-3d %-10s pid %-8d step %-8d %s\n",
        absl::StrCat(w.ref().role() == v1::ROLE_TRAINER ? "trainer-" : "evaluator-",
                     w.ref().rank()),
        w.ref().generation(), WorkerStateName(w.state()), w.pid(), w.step(), w.reason());
  }
}

int Fail(const std::string& command, const absl::Status& status) {
  std::cerr << "modamba " << command << ": " << status.message() << "\n";
  return 1;
}

int Submit(const ClientOptions& options, const Args& args) {
  if (args.positional.size() != 1) {
    std::cerr << "usage: modamba submit SPEC.textproto [--watch]\n";
    return 2;
  }
  auto text = ReadFile(args.positional[0]);
  if (!text.ok()) return Fail("submit", text.status());
  auto job = SubmitJobText(options, *text, args.positional[0]);
  if (!job.ok()) return Fail("submit", job.status());
  std::cout << "submitted " << job->id() << " (" << job->spec().name()
            << "): " << StateName(job->state()) << "\n";
  if (args.Flag("watch") != "true") return 0;
  auto watched = WatchJobToEnd(options, job->id(), std::cout, isatty(STDOUT_FILENO));
  if (!watched.ok()) return Fail("submit", watched.status());
  return watched->state() == v1::JOB_SUCCEEDED ? 0 : 1;
}

int Status(const ClientOptions& options, const Args& args) {
  auto stubs = Connect(options);
  if (!stubs.ok()) return Fail("status", stubs.status());
  if (args.positional.empty()) {
    grpc::ClientContext context;
    PrepareContext(&context, options, kCallTimeout);
    v1::ListJobsResponse response;
    absl::Status status =
        FromGrpc(stubs->jobs->ListJobs(&context, v1::ListJobsRequest(), &response));
    if (!status.ok()) return Fail("status", status);
    PrintJobTable({response.jobs().begin(), response.jobs().end()});
    return 0;
  }
  auto job = GetJob(options, stubs->jobs.get(), args.positional[0]);
  if (!job.ok()) return Fail("status", job.status());
  PrintJob(*job);
  return 0;
}

int Cancel(const ClientOptions& options, const Args& args) {
  if (args.positional.size() != 1) {
    std::cerr << "usage: modamba cancel JOB\n";
    return 2;
  }
  auto stubs = Connect(options);
  if (!stubs.ok()) return Fail("cancel", stubs.status());
  grpc::ClientContext context;
  PrepareContext(&context, options, kCallTimeout);
  v1::CancelJobRequest request;
  request.set_job_id(args.positional[0]);
  v1::Job job;
  absl::Status status = FromGrpc(stubs->jobs->CancelJob(&context, request, &job));
  if (!status.ok()) return Fail("cancel", status);
  std::cout << job.id() << ": " << StateName(job.state()) << "\n";
  return 0;
}

int Logs(const ClientOptions& options, const Args& args) {
  if (args.positional.size() != 1) {
    std::cerr << "usage: modamba logs JOB [--worker=trainer-0] [--bytes=N] [--follow]\n";
    return 2;
  }
  int64_t bytes = 65536;
  if (!absl::SimpleAtoi(args.Flag("bytes", "65536"), &bytes) || bytes <= 0) {
    std::cerr << "modamba logs: --bytes must be a positive number\n";
    return 2;
  }
  auto stubs = Connect(options);
  if (!stubs.ok()) return Fail("logs", stubs.status());
  const bool follow = args.Flag("follow") == "true";
  int64_t offset = -bytes;
  for (;;) {
    grpc::ClientContext context;
    PrepareContext(&context, options, kCallTimeout);
    v1::GetLogsRequest request;
    request.set_job_id(args.positional[0]);
    request.set_worker(args.Flag("worker", "trainer-0"));
    request.set_offset(offset);
    v1::GetLogsResponse response;
    absl::Status status = FromGrpc(stubs->jobs->GetLogs(&context, request, &response));
    if (!status.ok()) return Fail("logs", status);
    std::cout << response.data() << std::flush;
    offset = response.next_offset();
    if (offset < response.size()) continue;  // more than one answer's worth
    if (!follow) return 0;
    auto job = GetJob(options, stubs->jobs.get(), args.positional[0]);
    if (!job.ok()) return Fail("logs", job.status());
    if (Finished(*job) && !job->has_allocation()) return 0;
    absl::SleepFor(absl::Seconds(1));
  }
}

int Checkpoints(const ClientOptions& options, const Args& args) {
  if (args.positional.size() != 1) {
    std::cerr << "usage: modamba checkpoints JOB\n";
    return 2;
  }
  auto stubs = Connect(options);
  if (!stubs.ok()) return Fail("checkpoints", stubs.status());
  grpc::ClientContext context;
  PrepareContext(&context, options, kCallTimeout);
  v1::ListCheckpointsRequest request;
  request.set_job_id(args.positional[0]);
  v1::ListCheckpointsResponse response;
  absl::Status status = FromGrpc(stubs->checkpoints->List(&context, request, &response));
  if (!status.ok()) return Fail("checkpoints", status);
  std::cout << absl::StrFormat("%-10s %-12s %-6s %-12s %-10s %s\n", "STEP", "FLOPS", "FILES",
                               "BYTES", "STATE", "EVALUATED");
  for (const v1::CheckpointInfo& c : response.checkpoints()) {
    int64_t size = 0;
    for (const v1::CheckpointFile& f : c.files()) size += f.size();
    const std::string state = c.corrupt()    ? "corrupt"
                              : c.deleted()  ? "deleted"
                              : c.complete() ? "complete"
                                             : absl::StrCat("partial ", c.reported_ranks_size());
    std::cout << absl::StrFormat("%-10d %-12.4g %-6d %-12d %-10s %s\n", c.step(), c.flops(),
                                 c.files_size(), size, state, c.evaluated() ? "yes" : "");
  }
  return 0;
}

int Watch(const ClientOptions& options, const Args& args) {
  if (args.positional.size() != 1) {
    std::cerr << "usage: modamba watch JOB\n";
    return 2;
  }
  auto job = WatchJobToEnd(options, args.positional[0], std::cout, isatty(STDOUT_FILENO));
  if (!job.ok()) return Fail("watch", job.status());
  return job->state() == v1::JOB_SUCCEEDED ? 0 : 1;
}

// One progress line: bar, percentage, step, ETA, losses.
class Progress {
 public:
  Progress(std::ostream& out, bool terminal) : out_(out), terminal_(terminal) {}

  void Show(const v1::Job& job) {
    const int64_t total = std::max<int64_t>(1, job.spec().train().steps());
    const int64_t step = std::min(job.step(), total);
    const absl::Time now = absl::Now();
    if (job.state() == v1::JOB_RUNNING && step > 0 && first_step_ < 0) {
      first_step_ = step;
      first_time_ = now;
    }
    double eta = -1;
    if (first_step_ >= 0 && step > first_step_) {
      const double rate = (step - first_step_) / absl::ToDoubleSeconds(now - first_time_);
      eta = (total - step) / rate;
    }
    constexpr int kWidth = 30;
    const int filled = static_cast<int>(kWidth * step / total);
    const std::string line =
        absl::StrFormat("%s [%s%s] %3d%%  step %d/%d  ETA %s  %s%s", StateName(job.state()),
                        std::string(filled, '#'), std::string(kWidth - filled, '.'),
                        static_cast<int>(100 * step / total), step, total, Duration(eta),
                        LossSummary(job.last_train()),
                        job.restarts() > 0 ? absl::StrCat("  restarts ", job.restarts()) : "");
    if (terminal_) {
      // Redrawn in place; padded so a shorter line covers a longer one.
      out_ << "\r" << line << std::string(std::max<int>(0, last_width_ - line.size()), ' ')
           << std::flush;
      last_width_ = line.size();
    } else if (step - printed_step_ >= std::max<int64_t>(1, total / 20) || Finished(job) ||
               job.state() != printed_state_) {
      out_ << line << "\n" << std::flush;
      printed_step_ = step;
      printed_state_ = job.state();
    }
  }

  void End(const v1::Job& job) {
    if (terminal_) out_ << "\n";
    out_ << job.id() << " " << StateName(job.state());
    if (!job.reason().empty()) out_ << ": " << job.reason();
    out_ << "\n";
    if (job.has_last_train())
      out_ << "  final train loss: " << LossSummary(job.last_train()) << "\n";
    if (job.has_last_val()) out_ << "  final val loss:   " << LossSummary(job.last_val()) << "\n";
  }

 private:
  std::ostream& out_;
  const bool terminal_;
  int64_t first_step_ = -1;
  absl::Time first_time_;
  int64_t printed_step_ = -1;
  v1::JobState printed_state_ = v1::JOB_STATE_UNSPECIFIED;
  int last_width_ = 0;
};

}  // namespace

std::string LossSummary(const v1::MetricPoint& point) {
  std::vector<std::string> parts;
  for (const auto& [modality, loss] :
       std::map<std::string, double>(point.losses().begin(), point.losses().end())) {
    parts.push_back(absl::StrFormat("%s %.4f", modality, loss));
  }
  return absl::StrJoin(parts, ", ");
}

absl::StatusOr<v1::Job> SubmitJobText(const ClientOptions& options, const std::string& spec_text,
                                      const std::string& source) {
  ASSIGN_OR_RETURN(Stubs stubs, Connect(options));
  grpc::ClientContext context;
  PrepareContext(&context, options, kCallTimeout);
  v1::SubmitJobRequest request;
  request.set_spec_textproto(spec_text);
  request.set_source(source);
  v1::Job job;
  RETURN_IF_ERROR(FromGrpc(stubs.jobs->SubmitJob(&context, request, &job)));
  return job;
}

absl::StatusOr<v1::Job> WatchJobToEnd(const ClientOptions& options, const std::string& job_id,
                                      std::ostream& out, bool terminal) {
  ASSIGN_OR_RETURN(Stubs stubs, Connect(options));
  Progress progress(out, terminal);
  v1::Job job;
  // The stream ends with the job; a coordinator restart breaks it, and then
  // watching resumes for as long as the coordinator takes to come back.
  absl::Time give_up = absl::Now() + absl::Minutes(2);
  for (;;) {
    grpc::ClientContext context;
    PrepareContext(&context, options, absl::InfiniteDuration());
    v1::WatchJobRequest request;
    request.set_job_id(job_id);
    request.set_metrics_after_seq(-1);  // the job's own summary is enough here
    auto reader = stubs.jobs->WatchJob(&context, request);
    v1::JobEvent event;
    while (reader->Read(&event)) {
      job = event.job();
      progress.Show(job);
      give_up = absl::Now() + absl::Minutes(2);
    }
    const absl::Status status = FromGrpc(reader->Finish());
    if (status.ok() && Finished(job)) break;
    if (!status.ok() && !absl::IsUnavailable(status)) return status;
    if (absl::Now() > give_up)
      return absl::UnavailableError("lost the coordinator: " + status.ToString());
    absl::SleepFor(absl::Seconds(1));
  }
  progress.End(job);
  return job;
}

bool IsClientCommand(const std::string& command) {
  for (const char* c : {"submit", "status", "watch", "cancel", "logs", "checkpoints"}) {
    if (command == c) return true;
  }
  return false;
}

int RunClientCommand(int argc, char** argv) {
  if (argc < 1 || !IsClientCommand(argv[0])) {
    std::cerr << kUsage;
    return 2;
  }
  const std::string command = argv[0];
  auto args = ParseArgs(
      argc, argv, {"coordinator", "token_file", "tls_ca", "watch", "worker", "bytes", "follow"});
  if (!args.ok()) {
    std::cerr << "modamba " << command << ": " << args.status().message() << "\n" << kUsage;
    return 2;
  }
  auto options = OptionsFrom(*args);
  if (!options.ok()) return Fail(command, options.status());
  if (command == "submit") return Submit(*options, *args);
  if (command == "status") return Status(*options, *args);
  if (command == "watch") return Watch(*options, *args);
  if (command == "cancel") return Cancel(*options, *args);
  if (command == "logs") return Logs(*options, *args);
  return Checkpoints(*options, *args);
}

}  // namespace modamba
