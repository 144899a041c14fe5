#include "trainer/rank_health.h"

#include <algorithm>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "glog/logging.h"

namespace modamba {
namespace {

constexpr int kNoReport = -2;

// Every rank's heartbeat value ("" when never set) and failure report.
struct Snapshot {
  std::vector<std::string> alive;
  std::vector<int> reported;
};

}  // namespace

RankHealth::RankHealth(KvStore* store, std::string prefix, int rank, int world_size,
                       absl::Duration interval)
    : store_(store),
      prefix_(std::move(prefix)),
      rank_(rank),
      world_size_(world_size),
      interval_(interval) {
  thread_ = std::thread([this] {
    bool warned = false;
    for (int64_t beat = 0;; ++beat) {
      const absl::Status status = store_->Set(AliveKey(rank_), std::to_string(beat));
      if (!status.ok() && !warned) {
        LOG(WARNING) << "rank " << rank_ << ": heartbeat failed: " << status;
        warned = true;
      }
      if (stop_.WaitForNotificationWithTimeout(interval_)) return;
    }
  });
}

RankHealth::~RankHealth() {
  stop_.Notify();
  thread_.join();
}

absl::Duration RankHealth::IntervalFor(absl::Duration timeout) {
  return std::clamp(timeout / 10, absl::Milliseconds(50), absl::Seconds(2));
}

std::string RankHealth::AliveKey(int rank) const { return absl::StrCat(prefix_, "/alive/", rank); }

std::string RankHealth::FailedKey(int rank) const {
  return absl::StrCat(prefix_, "/failed/", rank);
}

void RankHealth::ReportFailure(int suspect) {
  const absl::Status status = store_->Set(FailedKey(rank_), std::to_string(suspect));
  if (!status.ok()) LOG(WARNING) << "rank " << rank_ << ": cannot report failure: " << status;
}

int RankHealth::FindLost(int suspect) {
  // False when the store cannot be read (a missing key is fine).
  auto read = [this](Snapshot* s) {
    s->alive.assign(world_size_, "");
    s->reported.assign(world_size_, kNoReport);
    for (int k = 0; k < world_size_; ++k) {
      absl::StatusOr<std::string> alive = store_->Get(AliveKey(k), absl::ZeroDuration());
      if (alive.ok()) {
        s->alive[k] = *alive;
      } else if (!absl::IsDeadlineExceeded(alive.status())) {
        return false;
      }
      absl::StatusOr<std::string> failed = store_->Get(FailedKey(k), absl::ZeroDuration());
      int suspected = -1;
      if (failed.ok()) {
        s->reported[k] = absl::SimpleAtoi(*failed, &suspected) ? suspected : -1;
      } else if (!absl::IsDeadlineExceeded(failed.status())) {
        return false;
      }
    }
    return true;
  };
  Snapshot before, after;
  if (!read(&before)) return suspect;
  // Three beats: a live rank bumps its key at least once in that time.
  absl::SleepFor(3 * interval_);
  if (!read(&after)) return suspect;

  auto lost = [&](int k) {
    return k != rank_ && after.reported[k] == kNoReport && before.alive[k] == after.alive[k];
  };
  // Follow the victims' reports to the rank that failed without one.
  int current = suspect;
  for (int hops = 0; hops < world_size_ && current >= 0 && current < world_size_; ++hops) {
    if (lost(current)) return current;
    current = after.reported[current];
  }
  for (int k = 0; k < world_size_; ++k) {
    if (lost(k)) return k;
  }
  return suspect;
}

}  // namespace modamba
