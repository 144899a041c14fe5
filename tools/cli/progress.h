// A training progress line, shared by `modamba train` (its own steps) and
// `modamba watch` (a coordinator's job): bar, step, tokens/s, ms/step, ETA and
// per-modality losses. On a terminal it is redrawn in place; otherwise it is
// printed as a plain line every `line_every` steps (and at the end).
#ifndef MODAMBA_TOOLS_CLI_PROGRESS_H_
#define MODAMBA_TOOLS_CLI_PROGRESS_H_

#include <cstdint>
#include <map>
#include <ostream>
#include <string>

#include "absl/time/time.h"

namespace modamba::cli {

struct ProgressUpdate {
  std::string state;  // a prefix ("RUNNING"), or empty
  int64_t step = 0;
  int64_t total = 1;
  double tokens_per_s = 0;  // 0: not known
  std::map<std::string, double> losses;
  std::string extra;  // appended ("restarts 1")
};

class ProgressBar {
 public:
  ProgressBar(std::ostream& out, bool terminal, int64_t line_every);

  // ms/step and the ETA come from the wall-clock rate since the first step
  // this bar saw, so a resumed run or a late watcher still gets a fair rate.
  void Show(const ProgressUpdate& update);
  // A line printed above the bar (a validation result, a checkpoint).
  void Note(const std::string& line);
  // Ends the bar's line on a terminal.
  void Finish();

  // The line Show draws at the current rate (no bar state is changed).
  std::string Line(const ProgressUpdate& update) const;

 private:
  std::ostream& out_;
  const bool terminal_;
  const int64_t line_every_;
  int64_t first_step_ = -1;
  absl::Time first_time_;
  int64_t printed_step_ = -1;
  std::string printed_state_;
  size_t last_width_ = 0;
  std::string last_line_;  // the bar as last drawn (a terminal)
  bool drawn_ = false;
};

// "1:02:03" / "4:05"; "--:--" when unknown.
std::string FormatDuration(double seconds);
// "text 1.2345, image 2.3456"
std::string FormatLosses(const std::map<std::string, double>& losses);

}  // namespace modamba::cli

#endif  // MODAMBA_TOOLS_CLI_PROGRESS_H_
