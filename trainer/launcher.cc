#include "trainer/launcher.h"

#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <map>
#include <memory>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/file_util.h"
#include "core/status_macros.h"
#include "rendezvous/tcp_store.h"

extern char** environ;

namespace modamba {
namespace {

// argv or envp as the NUL-terminated char* array exec wants, built before
// fork so the child only calls async-signal-safe functions.
class CStrings {
 public:
  explicit CStrings(std::vector<std::string> strings) : strings_(std::move(strings)) {
    for (std::string& s : strings_) pointers_.push_back(s.data());
    pointers_.push_back(nullptr);
  }
  char** get() { return pointers_.data(); }

 private:
  std::vector<std::string> strings_;
  std::vector<char*> pointers_;
};

std::vector<std::string> RankEnvironment(const LaunchOptions& options, int rank,
                                         const std::string& store) {
  std::vector<std::pair<std::string, std::string>> set = {
      {"MODAMBA_RANK", std::to_string(rank)},
      {"MODAMBA_WORLD_SIZE", std::to_string(options.nproc)},
      {"MODAMBA_STORE", store},
      {"MODAMBA_LOCAL_RANK", std::to_string(rank)},
  };
  set.insert(set.end(), options.env.begin(), options.env.end());
  // Later settings win: options.env may override the MODAMBA_* defaults.
  std::map<std::string, std::string> values;
  for (const auto& [name, value] : set) values[name] = value;
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    const absl::string_view entry(*e);
    if (values.count(std::string(entry.substr(0, entry.find('=')))) == 0) env.emplace_back(entry);
  }
  for (const auto& [name, value] : values) env.push_back(absl::StrCat(name, "=", value));
  return env;
}

std::string DescribeExit(int status) {
  if (WIFSIGNALED(status)) {
    return absl::StrCat("was killed by signal ", WTERMSIG(status), " (",
                        strsignal(WTERMSIG(status)), ")");
  }
  return absl::StrCat("exited with code ", WEXITSTATUS(status));
}

int ExitCode(int status) {
  return WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status);
}

struct Rank {
  pid_t pid = -1;  // also its process group
  bool running = false;
};

}  // namespace

absl::StatusOr<LaunchResult> Launch(const LaunchOptions& options) {
  if (options.nproc < 1) {
    return absl::InvalidArgumentError(absl::StrCat("--nproc=", options.nproc, " must be >= 1"));
  }
  if (options.command.empty()) return absl::InvalidArgumentError("no command to launch");
  if (options.log_dir.empty()) return absl::InvalidArgumentError("no log directory");
  if (options.store != "tcp" && options.store != "file") {
    return absl::InvalidArgumentError(
        absl::StrCat("store '", options.store, "' is neither 'tcp' nor 'file'"));
  }
  RETURN_IF_ERROR(MakeDirs(options.log_dir));

  // Blocked before anything else starts: a thread (the TCP store's) or a
  // child that began with them unblocked could take a SIGTERM meant for the
  // launcher, which would then die of it without forwarding it. They are
  // taken with sigtimedwait below; the caller's mask comes back on return.
  sigset_t handled, saved;
  sigemptyset(&handled);
  sigaddset(&handled, SIGINT);
  sigaddset(&handled, SIGTERM);
  sigaddset(&handled, SIGCHLD);
  pthread_sigmask(SIG_BLOCK, &handled, &saved);
  absl::Cleanup restore_mask = [&saved] {
    // Drop the SIGCHLDs still pending first.
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    const timespec zero = {0, 0};
    while (sigtimedwait(&chld, nullptr, &zero) > 0) {
    }
    pthread_sigmask(SIG_SETMASK, &saved, nullptr);
  };

  std::unique_ptr<TcpStoreServer> server;
  std::string store;
  if (options.store == "tcp") {
    ASSIGN_OR_RETURN(server, TcpStoreServer::Start("127.0.0.1", 0));
    store = absl::StrCat("tcp://127.0.0.1:", server->port());
  } else {
    // A fresh directory per launch: stale keys of an earlier run must not
    // satisfy this run's rendezvous. Absolute, in case a rank changes directory.
    std::string pattern = absl::StrCat(options.log_dir, "/store.XXXXXX");
    char resolved[PATH_MAX];
    if (mkdtemp(pattern.data()) == nullptr || realpath(pattern.c_str(), resolved) == nullptr) {
      return absl::InternalError(absl::StrCat("cannot create a store directory in ",
                                              options.log_dir, ": ", strerror(errno)));
    }
    store = resolved;
  }

  LaunchResult result;
  result.ranks.resize(options.nproc);
  std::vector<Rank> ranks(options.nproc);
  auto event = [&](std::string line) {
    if (options.on_event) options.on_event(line);
    result.events.push_back(std::move(line));
  };
  auto signal_all = [&](int sig) {
    for (int r = 0; r < options.nproc; ++r) {
      if (!ranks[r].running) continue;
      kill(-ranks[r].pid, sig);
      result.ranks[r].stopped_by_launcher = true;
    }
  };

  absl::Status start_error;
  for (int r = 0; r < options.nproc && start_error.ok(); ++r) {
    const std::string log = absl::StrCat(options.log_dir, "/rank_", r, ".log");
    CStrings argv(options.command);
    CStrings envp(RankEnvironment(options, r, store));
    const int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
      start_error = absl::InternalError(absl::StrCat("cannot open ", log, ": ", strerror(errno)));
      break;
    }
    const pid_t pid = fork();
    if (pid == 0) {
      setpgid(0, 0);
      dup2(fd, STDOUT_FILENO);
      dup2(fd, STDERR_FILENO);
      struct sigaction dfl {};
      dfl.sa_handler = SIG_DFL;
      for (int sig : {SIGINT, SIGTERM, SIGCHLD, SIGPIPE}) sigaction(sig, &dfl, nullptr);
      sigprocmask(SIG_SETMASK, &saved, nullptr);
      execvpe(argv.get()[0], argv.get(), envp.get());
      const char* reason = strerror(errno);
      (void)!write(STDERR_FILENO, "launch: exec failed: ", 21);
      (void)!write(STDERR_FILENO, reason, strlen(reason));
      (void)!write(STDERR_FILENO, "\n", 1);
      _exit(127);
    }
    close(fd);
    if (pid < 0) {
      start_error = absl::InternalError(absl::StrCat("fork: ", strerror(errno)));
      break;
    }
    setpgid(pid, pid);  // also in the parent, so signals reach the group at once
    ranks[r] = {pid, true};
  }
  if (!start_error.ok()) {
    signal_all(SIGKILL);
    for (Rank& rank : ranks) {
      if (rank.running) waitpid(rank.pid, nullptr, 0);
    }
    return start_error;
  }
  event(absl::StrCat("started ", options.nproc, " ranks of ", options.command[0], "; store ", store,
                     "; logs in ", options.log_dir));

  // Once stopping, SIGTERM at term_at and SIGKILL at kill_at.
  absl::Time term_at = absl::InfiniteFuture(), kill_at = absl::InfiniteFuture();
  bool termed = false;
  int running = options.nproc;
  while (running > 0) {
    const timespec tick = {0, 50 * 1000 * 1000};
    const int sig = sigtimedwait(&handled, nullptr, &tick);
    if (sig == SIGINT || sig == SIGTERM) {
      event(absl::StrCat("launcher got signal ", sig, " (", strsignal(sig),
                         "); passing it on to the ranks"));
      signal_all(sig);
      termed = true;
      kill_at = std::min(kill_at, absl::Now() + options.grace_period);
    }
    for (int r = 0; r < options.nproc; ++r) {
      int status = 0;
      if (!ranks[r].running || waitpid(ranks[r].pid, &status, WNOHANG) != ranks[r].pid) continue;
      ranks[r].running = false;
      --running;
      result.ranks[r].code = ExitCode(status);
      if (result.ranks[r].code == 0) continue;
      if (result.first_failed_rank < 0) {
        result.first_failed_rank = r;
        result.exit_code = result.ranks[r].code;
        event(absl::StrCat("rank ", r, " ", DescribeExit(status), " (log: ", options.log_dir,
                           "/rank_", r, ".log)"));
        if (running > 0) {
          event(absl::StrCat("stopping the other ranks in ",
                             absl::FormatDuration(options.grace_period)));
          term_at = std::min(term_at, absl::Now() + options.grace_period);
        }
      } else if (!result.ranks[r].stopped_by_launcher) {
        event(absl::StrCat("rank ", r, " ", DescribeExit(status)));
      }
    }
    const absl::Time now = absl::Now();
    if (running > 0 && !termed && now >= term_at) {
      signal_all(SIGTERM);
      termed = true;
      kill_at = now + options.grace_period;
    }
    if (running > 0 && now >= kill_at) {
      event("ranks still running after the grace period; killing them");
      signal_all(SIGKILL);
      kill_at = absl::InfiniteFuture();
    }
  }
  return result;
}

}  // namespace modamba
