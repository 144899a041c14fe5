#include "coordinator/launcher.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include <cstdlib>
#include <set>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "core/file_util.h"

extern char** environ;

namespace modamba {
namespace {

// Field 22 of /proc/PID/stat (0 when unreadable); `zombie` says whether the
// process has exited but is not reaped yet.
int64_t StatStartTicks(int64_t pid, bool* zombie) {
  auto stat = ReadFile(absl::StrCat("/proc/", pid, "/stat"));
  if (!stat.ok()) return 0;
  // The command name (field 2) may hold spaces and parentheses: fields are
  // counted from the last ')'.
  const size_t close = stat->rfind(')');
  if (close == std::string::npos) return 0;
  std::vector<absl::string_view> fields =
      absl::StrSplit(absl::string_view(*stat).substr(close + 1), ' ', absl::SkipEmpty());
  int64_t ticks = 0;
  if (fields.size() < 20 || !absl::SimpleAtoi(fields[19], &ticks)) return 0;
  *zombie = fields[0] == "Z";
  return ticks;
}

// Whether `process` is still the process we started (not a recycled pid).
bool SameProcess(const ProcessHandle& process) {
  if (process.pid <= 0) return false;
  const int64_t ticks = ProcessStartTicks(process.pid);
  return ticks != 0 && (process.start_ticks == 0 || ticks == process.start_ticks);
}

}  // namespace

int64_t ProcessStartTicks(int64_t pid) {
  bool zombie = false;
  const int64_t ticks = StatStartTicks(pid, &zombie);
  // A zombie has exited: it only waits to be reaped.
  return zombie ? 0 : ticks;
}

absl::StatusOr<ProcessHandle> LocalLauncher::Start(const ProcessSpec& spec) {
  if (spec.argv.empty()) return absl::InvalidArgumentError("launcher: empty command");
  // Everything posix_spawn needs is prepared here, in the parent.
  std::set<std::string> drop(spec.unset_env.begin(), spec.unset_env.end());
  for (const auto& [name, value] : spec.env) drop.insert(name);
  std::vector<std::string> env_strings;
  for (char** e = environ; *e != nullptr; ++e) {
    absl::string_view entry(*e);
    if (drop.count(std::string(entry.substr(0, entry.find('=')))) == 0) {
      env_strings.emplace_back(entry);
    }
  }
  for (const auto& [name, value] : spec.env) env_strings.push_back(absl::StrCat(name, "=", value));
  std::vector<char*> envp, argv;
  for (std::string& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::vector<std::string> args = spec.argv;
  for (std::string& s : args) argv.push_back(s.data());
  argv.push_back(nullptr);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 1, spec.log_path.c_str(),
                                   O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  // The coordinator's sockets and database must not leak into workers: a
  // worker holding the listening socket would keep a restarted coordinator
  // from binding its port.
  posix_spawn_file_actions_addclosefrom_np(&actions, 3);

  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t empty, defaults;
  sigemptyset(&empty);
  sigemptyset(&defaults);
  for (int s : {SIGPIPE, SIGTERM, SIGINT, SIGHUP, SIGCHLD}) sigaddset(&defaults, s);
  posix_spawnattr_setsigmask(&attr, &empty);
  posix_spawnattr_setsigdefault(&attr, &defaults);
  posix_spawnattr_setflags(&attr,
                           POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);

  pid_t pid = 0;
  const int rc = posix_spawnp(&pid, argv[0], &actions, &attr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) {
    return absl::InternalError(absl::StrCat("cannot start ", spec.argv[0], ": ", strerror(rc)));
  }
  ProcessHandle handle;
  handle.pid = pid;
  oom_kills_at_start_[pid] = OomKillCount();
  bool zombie = false;  // a worker that failed at once is still the one started
  handle.start_ticks = StatStartTicks(pid, &zombie);
  return handle;
}

void LocalLauncher::Stop(const ProcessHandle& process, bool kill_now) {
  if (!SameProcess(process)) return;
  // The worker leads its own session, so its pid is its process group.
  if (kill(-static_cast<pid_t>(process.pid), kill_now ? SIGKILL : SIGTERM) != 0 && errno == ESRCH) {
    kill(static_cast<pid_t>(process.pid), kill_now ? SIGKILL : SIGTERM);
  }
}

int64_t OomKillCount() {
  auto vmstat = ReadFile("/proc/vmstat");
  if (!vmstat.ok()) return -1;
  for (absl::string_view line : absl::StrSplit(*vmstat, '\n')) {
    int64_t count;
    if (absl::ConsumePrefix(&line, "oom_kill ") && absl::SimpleAtoi(line, &count)) return count;
  }
  return -1;
}

std::optional<ProcessExit> LocalLauncher::Poll(const ProcessHandle& process) {
  if (process.pid <= 0) return ProcessExit();
  int status = 0;
  struct rusage usage = {};
  const pid_t r = wait4(static_cast<pid_t>(process.pid), &status, WNOHANG, &usage);
  if (r == process.pid) {
    if (!WIFEXITED(status) && !WIFSIGNALED(status)) return std::nullopt;
    ProcessExit exit;
    exit.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    exit.peak_rss_bytes = int64_t{usage.ru_maxrss} * 1024;  // Linux reports KiB
    auto start = oom_kills_at_start_.find(process.pid);
    if (start != oom_kills_at_start_.end()) {
      exit.oom_killed = exit.code == 128 + SIGKILL && start->second >= 0 &&
                        OomKillCount() > start->second;
      oom_kills_at_start_.erase(start);
    }
    return exit;
  }
  if (r == 0) return std::nullopt;
  // Not our child (adopted after a coordinator restart): it has ended when
  // its pid is gone or belongs to another process now.
  return SameProcess(process) ? std::nullopt : std::optional<ProcessExit>(ProcessExit());
}

}  // namespace modamba
