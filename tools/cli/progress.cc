#include "tools/cli/progress.h"

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"

namespace modamba::cli {

std::string FormatDuration(double seconds) {
  if (!(seconds >= 0) || seconds > 1e8) return "--:--";
  const int64_t s = static_cast<int64_t>(seconds + 0.5);
  if (s >= 3600) return absl::StrFormat("%d:%02d:%02d", s / 3600, s / 60 % 60, s % 60);
  return absl::StrFormat("%d:%02d", s / 60, s % 60);
}

std::string FormatLosses(const std::map<std::string, double>& losses) {
  std::vector<std::string> parts;
  for (const auto& [name, loss] : losses) parts.push_back(absl::StrFormat("%s %.4f", name, loss));
  return absl::StrJoin(parts, ", ");
}

ProgressBar::ProgressBar(std::ostream& out, bool terminal, int64_t line_every)
    : out_(out), terminal_(terminal), line_every_(std::max<int64_t>(1, line_every)) {}

std::string ProgressBar::Line(const ProgressUpdate& u) const {
  const int64_t total = std::max<int64_t>(1, u.total);
  const int64_t step = std::clamp<int64_t>(u.step, 0, total);
  double ms_per_step = -1;
  if (first_step_ >= 0 && step > first_step_) {
    ms_per_step = absl::ToDoubleMilliseconds(absl::Now() - first_time_) / (step - first_step_);
  }
  constexpr int kWidth = 30;
  const int filled = static_cast<int>(kWidth * step / total);
  std::string line = absl::StrFormat("%s%s[%s%s] %3d%%  step %d/%d", u.state, u.state.empty() ? "" : " ",
                                     std::string(filled, '#'), std::string(kWidth - filled, '.'),
                                     static_cast<int>(100 * step / total), step, total);
  if (u.tokens_per_s > 0) absl::StrAppendFormat(&line, "  %.0f tok/s", u.tokens_per_s);
  if (ms_per_step > 0) absl::StrAppendFormat(&line, "  %.1f ms/step", ms_per_step);
  absl::StrAppend(&line, "  ETA ",
                  FormatDuration(ms_per_step > 0 ? (total - step) * ms_per_step / 1000 : -1));
  if (!u.losses.empty()) absl::StrAppend(&line, "  ", FormatLosses(u.losses));
  if (!u.extra.empty()) absl::StrAppend(&line, "  ", u.extra);
  return line;
}

void ProgressBar::Show(const ProgressUpdate& u) {
  if (first_step_ < 0 && u.step > 0) {
    first_step_ = u.step;
    first_time_ = absl::Now();
  }
  const std::string line = Line(u);
  if (terminal_) {
    // Redrawn in place; padded so a shorter line covers a longer one.
    out_ << "\r" << line << std::string(last_width_ > line.size() ? last_width_ - line.size() : 0, ' ')
         << std::flush;
    last_width_ = line.size();
    last_line_ = line;
    drawn_ = true;
    return;
  }
  if (printed_step_ < 0 || u.step - printed_step_ >= line_every_ || u.step >= u.total ||
      u.state != printed_state_) {
    out_ << line << "\n" << std::flush;
    printed_step_ = u.step;
    printed_state_ = u.state;
  }
}

void ProgressBar::Note(const std::string& line) {
  if (terminal_ && drawn_) {  // the note takes the bar's line; the bar goes below it
    out_ << "\r" << line << std::string(last_width_ > line.size() ? last_width_ - line.size() : 0, ' ')
         << "\n" << last_line_ << std::flush;
    last_width_ = last_line_.size();
    return;
  }
  out_ << line << "\n" << std::flush;
}

void ProgressBar::Finish() {
  if (terminal_ && drawn_) out_ << "\n" << std::flush;
  drawn_ = false;
  last_width_ = 0;
}

}  // namespace modamba::cli
