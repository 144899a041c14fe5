#include "trainer/collectives.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "glog/logging.h"

namespace modamba {
namespace {

class DoneWorkImpl : public Work {
 public:
  explicit DoneWorkImpl(absl::Status status) : status_(std::move(status)) {}
  absl::Status Wait() override { return status_; }

 private:
  const absl::Status status_;
};

std::string Describe(BufferView b) {
  return absl::StrCat(b.count, " ", DTypeName(b.dtype), " on ", DeviceName(b.device));
}

}  // namespace

BufferView BufferView::Slice(int64_t offset, int64_t n) const {
  CHECK(offset >= 0 && n >= 0 && offset + n <= count)
      << "slice [" << offset << ", " << offset + n << ") of a buffer of " << count;
  return {static_cast<char*>(data) + offset * DTypeSize(dtype), dtype, device, n};
}

void WaitClock::Add(WaitKind kind, double seconds) {
  absl::MutexLock lock(&mu_);
  (kind == WaitKind::kTransfer ? total_.transfer_s : total_.sync_s) += seconds;
}

WaitTimes WaitClock::Take() {
  absl::MutexLock lock(&mu_);
  return std::exchange(total_, WaitTimes());
}

std::unique_ptr<Work> DoneWork(absl::Status status) {
  return std::make_unique<DoneWorkImpl>(std::move(status));
}

absl::Status ValidateBuffer(const Collectives& c, absl::string_view op, BufferView buffer) {
  if (buffer.device != c.device()) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": buffer of ", Describe(buffer),
                                                   ", the communicator works on ",
                                                   DeviceName(c.device())));
  }
  if (buffer.count < 0 || (buffer.count > 0 && buffer.data == nullptr)) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": invalid buffer of ", buffer.count, " elements with no data"));
  }
  return absl::OkStatus();
}

absl::Status ValidateAllGather(const Collectives& c, BufferView input, BufferView output) {
  if (auto s = ValidateBuffer(c, "AllGather input", input); !s.ok()) return s;
  if (auto s = ValidateBuffer(c, "AllGather output", output); !s.ok()) return s;
  if (input.dtype != output.dtype || output.count != input.count * c.world_size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "AllGather: input of ", Describe(input), " needs an output of ",
        input.count * c.world_size(), " ", DTypeName(input.dtype), ", got ", Describe(output)));
  }
  return absl::OkStatus();
}

absl::Status ValidateReduceScatter(const Collectives& c, BufferView input, BufferView output) {
  if (auto s = ValidateBuffer(c, "ReduceScatter input", input); !s.ok()) return s;
  if (auto s = ValidateBuffer(c, "ReduceScatter output", output); !s.ok()) return s;
  if (input.dtype != output.dtype || input.count != output.count * c.world_size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "ReduceScatter: output of ", Describe(output), " needs an input of ",
        output.count * c.world_size(), " ", DTypeName(output.dtype), ", got ", Describe(input)));
  }
  return absl::OkStatus();
}

int JobRank(const CollectivesOptions& options, int rank) {
  return rank < 0 || options.job_ranks.empty() ? rank : options.job_ranks[rank];
}

HealthScope HealthScopeOf(const CollectivesOptions& options) {
  if (options.job_ranks.empty()) return {options.prefix, options.rank, options.world_size};
  return {options.job_prefix, JobRank(options, options.rank), options.job_world_size};
}

absl::Status ValidateOptions(const CollectivesOptions& options) {
  if (options.world_size < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("world size ", options.world_size, " must be at least 1"));
  }
  if (options.rank < 0 || options.rank >= options.world_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("rank ", options.rank, " is outside [0, ", options.world_size, ")"));
  }
  if (options.timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("collectives timeout must be positive");
  }
  if (options.prefix.empty()) return absl::InvalidArgumentError("empty store key prefix");
  if (options.job_ranks.empty()) return absl::OkStatus();
  if (static_cast<int>(options.job_ranks.size()) != options.world_size) {
    return absl::InvalidArgumentError(absl::StrCat(options.job_ranks.size(),
                                                   " job ranks for a group of ", options.world_size));
  }
  for (int r : options.job_ranks) {
    if (r < 0 || r >= options.job_world_size) {
      return absl::InvalidArgumentError(absl::StrCat("job rank ", r, " is outside [0, ",
                                                     options.job_world_size, ")"));
    }
  }
  if (options.job_prefix.empty()) return absl::InvalidArgumentError("empty job key prefix");
  return absl::OkStatus();
}

}  // namespace modamba
