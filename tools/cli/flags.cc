#include "tools/cli/flags.h"

#include <algorithm>
#include <iostream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"

namespace modamba::cli {

FlagSet::FlagSet(std::string command, std::string usage, std::string summary,
                 std::string example)
    : command_(std::move(command)),
      usage_(std::move(usage)),
      summary_(std::move(summary)),
      example_(std::move(example)) {}

void FlagSet::Add(Flag flag) {
  for (Flag& f : flags_) {
    if (f.name == flag.name) {  // a later declaration replaces an earlier one
      f = std::move(flag);
      return;
    }
  }
  flags_.push_back(std::move(flag));
}

void FlagSet::String(const std::string& name, std::string* target, const std::string& value,
                     const std::string& help) {
  Add({name, value, help, target->empty() ? "none" : absl::StrCat("\"", *target, "\""), false,
       [target](absl::string_view v) {
         *target = std::string(v);
         return true;
       }});
}

void FlagSet::Double(const std::string& name, double* target, const std::string& help) {
  Add({name, "X", help, absl::StrCat(*target), false,
       [target](absl::string_view v) { return absl::SimpleAtod(v, target); }});
}

void FlagSet::Bool(const std::string& name, bool* target, const std::string& help) {
  Add({name, "true|false", help, *target ? "true" : "false", true,
       [target](absl::string_view v) { return absl::SimpleAtob(v, target); }});
}

void FlagSet::Require(const std::string& name) {
  for (Flag& f : flags_) {
    if (f.name == name) f.required = true;
  }
}

std::string FlagSet::Help() const {
  std::string out = absl::StrCat("usage: ", command_, " ", usage_, "\n", summary_, "\n");
  if (!flags_.empty()) out.append("\nflags:\n");
  std::vector<std::string> heads;
  size_t width = 0;
  for (const Flag& f : flags_) {
    heads.push_back(absl::StrCat("--", f.name, "=", f.value));
    width = std::max(width, heads.back().size());
  }
  width = std::min<size_t>(width, 34);
  for (size_t i = 0; i < flags_.size(); ++i) {
    const std::string& head = heads[i];
    // A head longer than the column gets its help on the next line.
    const std::string pad = head.size() <= width ? std::string(width - head.size(), ' ')
                                                 : absl::StrCat("\n", std::string(width + 2, ' '));
    absl::StrAppend(&out, "  ", head, pad, "  ", flags_[i].help,
                    flags_[i].required ? " (required)"
                                       : absl::StrCat(" (default: ", flags_[i].default_text, ")"),
                    "\n");
  }
  absl::StrAppend(&out, "\nexample:\n  ", example_, "\n");
  return out;
}

int FlagSet::UsageError(absl::string_view message) const {
  std::cerr << command_ << ": " << message << "\nusage: " << command_ << " " << usage_
            << "\n(" << command_ << " --help lists every flag)\n";
  return 2;
}

std::optional<int> FlagSet::Parse(int argc, char** argv, int first,
                                  std::vector<std::string>* positional) {
  std::vector<std::string> names;
  for (const Flag& f : flags_) names.push_back(f.name);
  std::vector<bool> given(flags_.size(), false);
  for (int i = first; i < argc; ++i) {
    absl::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h" || arg == "-help") {
      std::cout << Help();
      return 0;
    }
    if (!absl::ConsumePrefix(&arg, "--")) {
      if (positional == nullptr) {
        return UsageError(absl::StrCat("unexpected argument '", arg, "'"));
      }
      positional->emplace_back(arg);
      continue;
    }
    const size_t eq = arg.find('=');
    const absl::string_view name = arg.substr(0, eq);
    auto it = std::find_if(flags_.begin(), flags_.end(),
                           [&](const Flag& f) { return f.name == name; });
    if (it == flags_.end()) {
      std::vector<std::string> dashed;
      for (const std::string& n : names) dashed.push_back("--" + n);
      return UsageError(UnknownName("flag", absl::StrCat("--", name), dashed).message());
    }
    given[it - flags_.begin()] = true;
    if (eq == absl::string_view::npos) {
      if (!it->is_bool) {
        return UsageError(absl::StrCat("--", name, " needs a value (--", name, "=", it->value, ")"));
      }
      it->set("true");
      continue;
    }
    const absl::string_view value = arg.substr(eq + 1);
    if (!it->set(value)) {
      return UsageError(absl::StrCat("--", name, "=", value, ": expected ", it->value));
    }
  }
  for (size_t i = 0; i < flags_.size(); ++i) {
    if (flags_[i].required && !given[i]) {
      return UsageError(absl::StrCat("--", flags_[i].name, "=", flags_[i].value, " is required"));
    }
  }
  return std::nullopt;
}

int EditDistance(absl::string_view a, absl::string_view b) {
  std::vector<int> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    int diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const int up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] != b[j - 1])});
      diagonal = up;
    }
  }
  return row[b.size()];
}

std::string Nearest(absl::string_view word, const std::vector<std::string>& candidates) {
  std::string best;
  int best_distance = 0;
  for (const std::string& c : candidates) {
    const int d = EditDistance(word, c);
    const int allowed = std::max<int>(2, std::max(word.size(), c.size()) / 3);
    if (d <= allowed && (best.empty() || d < best_distance)) {
      best = c;
      best_distance = d;
    }
  }
  return best;
}

absl::Status UnknownName(absl::string_view what, absl::string_view word,
                         const std::vector<std::string>& candidates) {
  const std::string nearest = Nearest(word, candidates);
  if (!nearest.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown ", what, " '", word, "'; did you mean '", nearest, "'?"));
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown ", what, " '", word, "' (one of: ",
                                                 absl::StrJoin(candidates, " "), ")"));
}

}  // namespace modamba::cli
