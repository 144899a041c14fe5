#include "coordinator/slurm_launcher.h"

#include <fcntl.h>
#include <spawn.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "core/status_macros.h"
#include "glog/logging.h"

extern char** environ;

namespace modamba {
namespace {

struct CommandResult {
  int code = -1;
  std::string output;  // stdout and stderr together
};

// Runs `argv` (argv[0] looked up in PATH) to its end.
absl::StatusOr<CommandResult> RunCommand(const std::vector<std::string>& argv) {
  int pipe_fds[2];
  if (pipe2(pipe_fds, O_CLOEXEC) != 0) {
    return absl::InternalError(absl::StrCat("pipe: ", strerror(errno)));
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], 1);
  posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], 2);
  std::vector<std::string> args = argv;
  std::vector<char*> c_args;
  for (std::string& a : args) c_args.push_back(a.data());
  c_args.push_back(nullptr);
  pid_t pid = 0;
  const int rc = posix_spawnp(&pid, c_args[0], &actions, nullptr, c_args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  close(pipe_fds[1]);
  if (rc != 0) {
    close(pipe_fds[0]);
    return absl::FailedPreconditionError(
        absl::StrCat("cannot run ", argv[0], ": ", strerror(rc), " (is Slurm installed?)"));
  }
  CommandResult result;
  char buffer[4096];
  for (ssize_t n; (n = read(pipe_fds[0], buffer, sizeof(buffer))) != 0;) {
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) break;
    result.output.append(buffer, n);
  }
  close(pipe_fds[0]);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  result.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return result;
}

// Waits while the allocation ($0) is queued, then runs the step ("$@"); an
// allocation that ended meanwhile makes srun fail with Slurm's words.
constexpr char kWaitThenRun[] =
    "while :; do case \"$(squeue --noheader --jobs=\"$0\" --format=%T 2>/dev/null)\" in "
    "PENDING|CONFIGURING) sleep 1;; *) exec \"$@\";; esac; done";

// How long an exit waits for Slurm to say why the allocation ended.
constexpr absl::Duration kVerdictWait = absl::Seconds(10);

// States that end a job for a reason outside its program: its group restarts.
bool EndedFromOutside(const std::string& state) {
  for (const char* s : {"NODE_FAIL", "PREEMPTED", "TIMEOUT", "CANCELLED", "BOOT_FAIL", "DEADLINE",
                        "FAILED", "OUT_OF_MEMORY"}) {
    if (state == s) return true;
  }
  return false;
}

}  // namespace

bool SlurmJobQueued(const std::string& state) {
  return state == "PENDING" || state == "CONFIGURING";
}

bool SlurmJobAlive(const std::string& state) {
  return SlurmJobQueued(state) || state == "RUNNING" || state == "SUSPENDED";
}

std::vector<std::string> SbatchCommand(const Placement& placement, const std::string& name,
                                       const std::string& partition, const std::string& log_path) {
  std::vector<std::string> argv = {"sbatch",
                                   "--parsable",
                                   "--no-requeue",
                                   "--job-name=" + name,
                                   absl::StrCat("--nodes=", placement.nodes),
                                   absl::StrCat("--ntasks-per-node=", placement.tasks_per_node),
                                   "--output=" + log_path};
  if (placement.gpus_per_task > 0) {
    argv.push_back(absl::StrCat("--gpus-per-task=", placement.gpus_per_task));
  }
  if (placement.cpus_per_task > 0) {
    argv.push_back(absl::StrCat("--cpus-per-task=", placement.cpus_per_task));
  }
  const std::string& chosen = placement.partition.empty() ? partition : placement.partition;
  if (!chosen.empty()) argv.push_back("--partition=" + chosen);
  if (placement.time_limit_minutes > 0) {
    argv.push_back(absl::StrCat("--time=", placement.time_limit_minutes));
  }
  // The batch step only holds the allocation; the workers are its job steps.
  argv.push_back("--wrap=exec sleep infinity");
  return argv;
}

void SlurmLauncher::Refresh(bool force) {
  const absl::Time now = absl::Now();
  if (!force && now - refreshed_ < options_.refresh) return;
  absl::StatusOr<CommandResult> listed =
      RunCommand({"squeue", "--noheader", "--me", "--states=all", "--format=%i|%j|%T|%r"});
  if (!listed.ok() || listed->code != 0) {
    LOG(WARNING) << "squeue failed: "
                 << (listed.ok() ? absl::StripAsciiWhitespace(listed->output)
                                 : listed.status().message());
    return;  // the last answer stands
  }
  refreshed_ = now;
  std::map<std::string, SlurmJob> jobs;
  for (absl::string_view line : absl::StrSplit(listed->output, '\n', absl::SkipEmpty())) {
    std::vector<std::string> fields = absl::StrSplit(absl::StripAsciiWhitespace(line), '|');
    if (fields.size() == 4) jobs[fields[0]] = {fields[1], fields[2], fields[3]};
  }
  jobs_ = std::move(jobs);
}

absl::StatusOr<std::string> SlurmLauncher::Allocation(const ProcessSpec& spec) {
  const Placement& placement = spec.placement;
  const std::string name =
      absl::StrCat(options_.job_prefix, "-", placement.job_id, "-", placement.group);
  Refresh(/*force=*/true);
  for (const auto& [id, job] : jobs_) {
    if (job.name == name && SlurmJobAlive(job.state)) return id;
  }
  const std::string log_dir = spec.log_path.substr(0, spec.log_path.rfind('/') + 1);
  const std::vector<std::string> argv =
      SbatchCommand(placement, name, options_.partition, log_dir + "slurm-%j.log");
  ASSIGN_OR_RETURN(CommandResult submitted, RunCommand(argv));
  const std::string output(absl::StripAsciiWhitespace(submitted.output));
  // --parsable answers "ID" or "ID;CLUSTER".
  const std::string id = output.substr(0, output.find(';'));
  if (submitted.code != 0 || id.empty() ||
      !std::all_of(id.begin(), id.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return absl::FailedPreconditionError(absl::StrCat(
        "Slurm refused ", absl::StrJoin(argv.begin() + 2, argv.end() - 1, " "), ": ", output));
  }
  LOG(INFO) << "Slurm job " << id << " (" << name << "): " << placement.nodes << " node(s) x "
            << placement.tasks_per_node << " task(s)";
  jobs_[id] = {name, "PENDING", "None"};
  return id;
}

absl::StatusOr<ProcessHandle> SlurmLauncher::Start(const ProcessSpec& spec) {
  const Placement& placement = spec.placement;
  if (spec.argv.empty()) return absl::InvalidArgumentError("launcher: empty command");
  if (placement.job_id.empty() || placement.group.empty() || placement.name.empty() ||
      placement.node < 0 || placement.node >= placement.nodes) {
    return absl::InvalidArgumentError("slurm launcher: the process has no valid placement");
  }
  ASSIGN_OR_RETURN(std::string allocation, Allocation(spec));
  ProcessSpec client = spec;
  // Slurm gives every task the GPUs it allocated to it.
  client.env.erase(std::remove_if(client.env.begin(), client.env.end(),
                                  [](const auto& e) { return e.first == "CUDA_VISIBLE_DEVICES"; }),
                   client.env.end());
  client.unset_env.push_back("CUDA_VISIBLE_DEVICES");
  client.argv = {"/bin/sh",
                 "-c",
                 kWaitThenRun,
                 allocation,
                 "srun",
                 "--jobid=" + allocation,
                 "--job-name=" + placement.name,
                 "--nodes=1",
                 "--ntasks=1",
                 absl::StrCat("--relative=", placement.node),
                 "--overlap",
                 "--quiet"};
  if (placement.gpus_per_task > 0) {
    client.argv.push_back(absl::StrCat("--gpus-per-task=", placement.gpus_per_task));
  }
  if (placement.cpus_per_task > 0) {
    client.argv.push_back(absl::StrCat("--cpus-per-task=", placement.cpus_per_task));
  }
  client.argv.push_back("--");
  if (!placement.host_flag.empty()) {
    // Appends "FLAG=<the node's host name>", known only on the node.
    client.argv.insert(client.argv.end(),
                       {"/bin/sh", "-c", "exec \"$@\" \"$0=$(hostname)\"", placement.host_flag});
  }
  client.argv.insert(client.argv.end(), spec.argv.begin(), spec.argv.end());
  ASSIGN_OR_RETURN(ProcessHandle handle, local_.Start(client));
  handle.cluster_job = allocation;
  return handle;
}

void SlurmLauncher::Stop(const ProcessHandle& process, bool kill) {
  // srun cancels its step on SIGTERM; a step whose srun is killed is ended by Slurm.
  local_.Stop(process, kill);
}

std::optional<ProcessExit> SlurmLauncher::Poll(const ProcessHandle& process) {
  auto held = held_.find(process.pid);
  std::optional<ProcessExit> exit =
      held != held_.end() ? std::optional<ProcessExit>(held->second.first) : local_.Poll(process);
  if (!exit.has_value() || process.cluster_job.empty()) return exit;
  Refresh(/*force=*/held == held_.end());
  auto job = jobs_.find(process.cluster_job);
  const std::string state = job != jobs_.end() ? job->second.state : "";
  // Slurm kills the steps before it records why the job ended (COMPLETING
  // first, then NODE_FAIL): the exit waits for the verdict, a while at most.
  const absl::Time now = absl::Now();
  if (state == "COMPLETING" && (held == held_.end() || now < held->second.second)) {
    if (held == held_.end()) held_[process.pid] = {*exit, now + kVerdictWait};
    return std::nullopt;
  }
  held_.erase(process.pid);
  if (EndedFromOutside(state)) {
    exit->cause = absl::StrCat("ended with its Slurm job ", job->first, " (", state, ")");
  }
  return exit;
}

std::optional<ClusterJobState> SlurmLauncher::ClusterState(const ProcessHandle& process) {
  if (process.cluster_job.empty()) return std::nullopt;
  Refresh(/*force=*/false);
  auto job = jobs_.find(process.cluster_job);
  if (job == jobs_.end()) return std::nullopt;
  const SlurmJob& slurm = job->second;
  // Why a job waits ("Resources", "Priority", "PartitionNodeLimit") is worth showing.
  return ClusterJobState{
      slurm.state == "PENDING" ? absl::StrCat(slurm.state, " (", slurm.reason, ")") : slurm.state,
      SlurmJobQueued(slurm.state)};
}

void SlurmLauncher::Release(const std::string& job_id) {
  Refresh(/*force=*/true);
  const std::string prefix = absl::StrCat(options_.job_prefix, "-", job_id, "-");
  std::vector<std::string> argv = {"scancel"};
  for (const auto& [id, job] : jobs_) {
    if (absl::StartsWith(job.name, prefix) && SlurmJobAlive(job.state)) argv.push_back(id);
  }
  if (argv.size() == 1) return;
  absl::StatusOr<CommandResult> cancelled = RunCommand(argv);
  if (!cancelled.ok() || cancelled->code != 0) {
    LOG(WARNING) << absl::StrJoin(argv, " ") << " failed: "
                 << (cancelled.ok() ? cancelled->output : cancelled.status().message());
  }
}

}  // namespace modamba
