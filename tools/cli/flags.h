// The one command-line convention of every `modamba` command:
//
//   * flags are --name=value; a boolean flag alone (--watch) means true;
//   * --help (or -h) prints a usage line, every flag with its default and its
//     help, and an example, then exits 0;
//   * an unknown flag, a bad value or a misspelt command is a usage error
//     (exit 2) that names the nearest valid name ("did you mean --steps?").
//
// A command declares its flags on a FlagSet, each bound to a variable whose
// value at declaration time is the default --help shows:
//
//   FlagSet flags("modamba train", "--config=FILE [flags]", "Trains ...",
//                 "modamba train --config=c.textproto");
//   flags.String("config", &config, "FILE", "TrainConfig textproto");
//   if (std::optional<int> exit = flags.Parse(argc, argv, 1, &positional)) return *exit;
#ifndef MODAMBA_TOOLS_CLI_FLAGS_H_
#define MODAMBA_TOOLS_CLI_FLAGS_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/string_view.h"

namespace modamba::cli {

class FlagSet {
 public:
  // `command` as the user types it ("modamba data build"); `usage` follows
  // it on the usage line; `summary` is one sentence; `example` one command.
  FlagSet(std::string command, std::string usage, std::string summary, std::string example);

  // `value` names the value in --help (--out=FILE); `help` says what it does.
  void String(const std::string& name, std::string* target, const std::string& value,
              const std::string& help);
  template <typename T>  // any integer type
  void Int(const std::string& name, T* target, const std::string& help) {
    Add({name, "N", help, std::to_string(*target), false,
         [target](absl::string_view v) { return absl::SimpleAtoi(v, target); }});
  }
  void Double(const std::string& name, double* target, const std::string& help);
  void Bool(const std::string& name, bool* target, const std::string& help);
  // A flag that must be given: --help says "(required)", Parse refuses its absence.
  void Require(const std::string& name);

  // Parses argv[first..]: flags into their targets, the rest into
  // `positional` (null: positional arguments are an error). Returns nullopt
  // to go on, or the exit code after --help (0) or a usage error (2, printed
  // to stderr with the usage line).
  std::optional<int> Parse(int argc, char** argv, int first,
                           std::vector<std::string>* positional);

  // Prints "COMMAND: message", the usage line and a pointer to --help to
  // stderr; returns 2. For usage errors found after parsing.
  int UsageError(absl::string_view message) const;

  std::string Help() const;
  const std::string& command() const { return command_; }

 private:
  struct Flag {
    std::string name, value, help, default_text;
    bool is_bool = false;
    std::function<bool(absl::string_view)> set;
    bool required = false;
  };
  void Add(Flag flag);

  std::string command_, usage_, summary_, example_;
  std::vector<Flag> flags_;
};

// Levenshtein distance.
int EditDistance(absl::string_view a, absl::string_view b);
// The candidate nearest to `word`, when it is near enough to be a plausible
// typo (distance at most a third of the longer name, at least 2); else "".
std::string Nearest(absl::string_view word, const std::vector<std::string>& candidates);
// "unknown WHAT 'word'; did you mean 'nearest'?" (or the list of valid names).
absl::Status UnknownName(absl::string_view what, absl::string_view word,
                         const std::vector<std::string>& candidates);

}  // namespace modamba::cli

#endif  // MODAMBA_TOOLS_CLI_FLAGS_H_
