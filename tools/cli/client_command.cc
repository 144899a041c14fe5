#include "tools/cli/client_command.h"

#include <unistd.h>

#include <cstdlib>
#include <iostream>
#include <optional>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "core/file_util.h"
#include "core/status_macros.h"
#include "proto/service.grpc.pb.h"
#include "tools/cli/flags.h"
#include "tools/cli/progress.h"

namespace modamba {
namespace {

constexpr absl::Duration kCallTimeout = absl::Seconds(30);

std::string EnvOr(const char* name, const std::string& fallback) {
  const char* value = std::getenv(name);
  return value != nullptr && *value != '\0' ? value : fallback;
}

// Every command's flags, and those of one.
struct Args {
  std::vector<std::string> positional;
  std::string coordinator = EnvOr("MODAMBA_COORDINATOR", "127.0.0.1:7077");
  std::string token_file = EnvOr("MODAMBA_TOKEN_FILE", "");
  std::string tls_ca = EnvOr("MODAMBA_TLS_CA", "");
  bool watch = false;             // submit
  std::string worker = "trainer-0";  // logs
  int64_t bytes = 65536;          // logs
  bool follow = false;            // logs
};

absl::StatusOr<ClientOptions> OptionsFrom(const Args& args) {
  ASSIGN_OR_RETURN(ClientOptions options,
                   MakeClientOptions(args.coordinator, args.token_file, args.tls_ca));
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
  for (const std::string& note : job.notes()) std::cout << "  note:        " << note << "\n";
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
    // On a cluster: the Slurm job the worker runs in, its state there and the node.
    const std::string cluster =
        w.cluster_job_id().empty()
            ? ""
            : absl::StrCat("slurm ", w.cluster_job_id(), " ", w.cluster_job_state(), " on ",
                           w.host(), "  ");
    std::cout << absl::StrFormat(
        "  %-12s gen %-3d %-10s pid %-8d step %-8d %s%s\n",
        absl::StrCat(w.ref().role() == v1::ROLE_TRAINER ? "trainer-" : "evaluator-",
                     w.ref().rank()),
        w.ref().generation(), WorkerStateName(w.state()), w.pid(), w.step(), cluster, w.reason());
  }
}

int Fail(const std::string& command, const absl::Status& status) {
  std::cerr << "modamba " << command << ": " << status.message() << "\n";
  return 1;
}

int Submit(const ClientOptions& options, const Args& args) {
  auto text = ReadFile(args.positional[0]);
  if (!text.ok()) return Fail("submit", text.status());
  auto job = SubmitJobText(options, *text, args.positional[0]);
  if (!job.ok()) return Fail("submit", job.status());
  std::cout << "submitted " << job->id() << " (" << job->spec().name()
            << "): " << StateName(job->state()) << "\n";
  if (!args.watch) return 0;
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
  auto stubs = Connect(options);
  if (!stubs.ok()) return Fail("logs", stubs.status());
  int64_t offset = -args.bytes;
  for (;;) {
    grpc::ClientContext context;
    PrepareContext(&context, options, kCallTimeout);
    v1::GetLogsRequest request;
    request.set_job_id(args.positional[0]);
    request.set_worker(args.worker);
    request.set_offset(offset);
    v1::GetLogsResponse response;
    absl::Status status = FromGrpc(stubs->jobs->GetLogs(&context, request, &response));
    if (!status.ok()) return Fail("logs", status);
    std::cout << response.data() << std::flush;
    offset = response.next_offset();
    if (offset < response.size()) continue;  // more than one answer's worth
    if (!args.follow) return 0;
    auto job = GetJob(options, stubs->jobs.get(), args.positional[0]);
    if (!job.ok()) return Fail("logs", job.status());
    if (Finished(*job) && !job->has_allocation()) return 0;
    absl::SleepFor(absl::Seconds(1));
  }
}

int Checkpoints(const ClientOptions& options, const Args& args) {
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
  auto job = WatchJobToEnd(options, args.positional[0], std::cout, isatty(STDOUT_FILENO));
  if (!job.ok()) return Fail("watch", job.status());
  return job->state() == v1::JOB_SUCCEEDED ? 0 : 1;
}

// A job's progress on the shared bar (a line every 5% when not a terminal).
class Progress {
 public:
  Progress(std::ostream& out, bool terminal) : out_(out), terminal_(terminal) {}

  void Show(const v1::Job& job) {
    if (!bar_) bar_.emplace(out_, terminal_, std::max<int64_t>(1, job.spec().train().steps() / 20));
    cli::ProgressUpdate u;
    u.state = StateName(job.state());
    u.step = job.step();
    u.total = job.spec().train().steps();
    auto tps = job.last_train().scalars().find("tokens_per_s");
    if (tps != job.last_train().scalars().end()) u.tokens_per_s = tps->second;
    u.losses = {job.last_train().losses().begin(), job.last_train().losses().end()};
    if (job.restarts() > 0) u.extra = absl::StrCat("restarts ", job.restarts());
    bar_->Show(u);
  }

  void End(const v1::Job& job) {
    if (bar_) bar_->Finish();
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
  std::optional<cli::ProgressBar> bar_;
};

}  // namespace

std::string LossSummary(const v1::MetricPoint& point) {
  return cli::FormatLosses({point.losses().begin(), point.losses().end()});
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
  for (const std::string& note : job.notes()) out << "note: " << note << "\n";
  return job;
}

namespace {

struct CommandInfo {
  const char* name;
  const char* usage;
  const char* summary;
  const char* example;
  int positional;  // how many positional arguments: 1, or -1 for 0 or 1
};

constexpr CommandInfo kCommands[] = {
    {"submit", "SPEC.textproto [flags]", "Submits a JobSpec to the coordinator.",
     "modamba submit tools/experiments/specs/job.textproto --watch", 1},
    {"status", "[JOB] [flags]", "Lists the jobs, or shows one job and its workers.",
     "modamba status job-1", -1},
    {"watch", "JOB [flags]", "Follows a job to its end: a progress bar with ETA and losses.",
     "modamba watch job-1", 1},
    {"cancel", "JOB [flags]", "Cancels a job.", "modamba cancel job-1", 1},
    {"logs", "JOB [flags]", "Prints the tail of a worker's log.",
     "modamba logs job-1 --worker=evaluator-0 --follow", 1},
    {"checkpoints", "JOB [flags]", "Lists a job's checkpoints.", "modamba checkpoints job-1", 1},
};

}  // namespace

std::vector<std::string> ClientCommands() {
  std::vector<std::string> names;
  for (const CommandInfo& c : kCommands) names.push_back(c.name);
  return names;
}

bool IsClientCommand(const std::string& command) {
  for (const CommandInfo& c : kCommands) {
    if (command == c.name) return true;
  }
  return false;
}

int RunClientCommand(int argc, char** argv) {
  const std::string command = argc >= 1 ? argv[0] : "";
  const CommandInfo* info = nullptr;
  for (const CommandInfo& c : kCommands) {
    if (command == c.name) info = &c;
  }
  if (info == nullptr) {
    std::cerr << "modamba: " << cli::UnknownName("command", command, ClientCommands()).message()
              << "\n";
    return 2;
  }
  Args args;
  cli::FlagSet flags(absl::StrCat("modamba ", command), info->usage, info->summary, info->example);
  flags.String("coordinator", &args.coordinator, "HOST:PORT",
               "the coordinator's gRPC address ($MODAMBA_COORDINATOR)");
  flags.String("token_file", &args.token_file, "FILE",
               "file holding the bearer token ($MODAMBA_TOKEN_FILE; else $MODAMBA_TOKEN)");
  flags.String("tls_ca", &args.tls_ca, "PEM", "gRPC over TLS, trusting this CA ($MODAMBA_TLS_CA)");
  if (command == "submit") flags.Bool("watch", &args.watch, "follow the job to its end");
  if (command == "logs") {
    flags.String("worker", &args.worker, "NAME", "trainer-R or evaluator-R");
    flags.Int("bytes", &args.bytes, "how many bytes of the log's tail");
    flags.Bool("follow", &args.follow, "keep printing until the job's workers end");
  }
  if (std::optional<int> exit = flags.Parse(argc, argv, 1, &args.positional)) return *exit;
  const size_t n = args.positional.size();
  if (info->positional == 1 ? n != 1 : n > 1) {
    return flags.UsageError(absl::StrCat(n == 0 ? "missing" : "too many", " arguments"));
  }
  if (args.bytes <= 0) return flags.UsageError("--bytes must be positive");
  auto options = OptionsFrom(args);
  if (!options.ok()) return Fail(command, options.status());
  if (command == "submit") return Submit(*options, args);
  if (command == "status") return Status(*options, args);
  if (command == "watch") return Watch(*options, args);
  if (command == "cancel") return Cancel(*options, args);
  if (command == "logs") return Logs(*options, args);
  return Checkpoints(*options, args);
}

}  // namespace modamba
