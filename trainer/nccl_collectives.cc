#include "trainer/nccl_collectives.h"

#include <cuda_runtime.h>
#include <nccl.h>
#include <stdlib.h>
#include <string.h>

#include <deque>
#include <functional>
#include <string>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "glog/logging.h"
#include "trainer/rank_health.h"

namespace modamba {
namespace {

absl::Status CudaError(cudaError_t error, absl::string_view what) {
  return absl::InternalError(absl::StrCat(what, ": ", cudaGetErrorString(error)));
}

absl::Status NcclError(ncclResult_t result, absl::string_view what) {
  return absl::InternalError(absl::StrCat(what, ": ", ncclGetErrorString(result)));
}

absl::StatusOr<ncclDataType_t> NcclType(DType dtype, bool sum, absl::string_view op) {
  switch (dtype) {
    case DType::kF32:
      return ncclFloat32;
    case DType::kF64:
      return ncclFloat64;
    case DType::kBF16:
      return ncclBfloat16;
    case DType::kI32:
      if (!sum) return ncclInt32;
      break;
    case DType::kU8:
      if (!sum) return ncclUint8;
      break;
  }
  return absl::InvalidArgumentError(
      absl::StrCat(op, ": NCCL sums F32, F64 and BF16 buffers, not ", DTypeName(dtype)));
}

using Event = std::shared_ptr<CUevent_st>;

// `timed`: for cudaEventElapsedTime (the wait times), else lighter.
absl::StatusOr<Event> NewEvent(bool timed = false) {
  cudaEvent_t event = nullptr;
  const cudaError_t error =
      cudaEventCreateWithFlags(&event, timed ? cudaEventDefault : cudaEventDisableTiming);
  if (error != cudaSuccess) return CudaError(error, "cudaEventCreate");
  return Event(event, [](cudaEvent_t e) { cudaEventDestroy(e); });
}

// NVLink multicast can take a host's GPUs out of service; it stays off.
absl::Status KeepNvlsOff() {
  const char* value = getenv("NCCL_NVLS_ENABLE");
  if (value == nullptr) {
    setenv("NCCL_NVLS_ENABLE", "0", /*overwrite=*/0);
    return absl::OkStatus();
  }
  if (strcmp(value, "0") != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "NCCL_NVLS_ENABLE=", value, ": NVLink multicast must stay off; set it to 0 or unset it"));
  }
  return absl::OkStatus();
}

class NcclCollectives;

class NcclWork : public Work {
 public:
  NcclWork(NcclCollectives* owner, Event done, WaitKind kind)
      : owner_(owner), done_(std::move(done)), kind_(kind) {}
  absl::Status Wait() override;

 private:
  NcclCollectives* const owner_;
  const Event done_;
  const WaitKind kind_;
};

class NcclCollectives : public Collectives {
 public:
  NcclCollectives(const NcclOptions& options, int device, cudaStream_t compute_stream,
                  std::unique_ptr<RankHealth> health)
      : options_(options),
        device_(device),
        compute_stream_(compute_stream),
        health_(std::move(health)) {}

  ~NcclCollectives() override {
    const absl::Status status = Synchronize();
    if (!status.ok()) LOG(WARNING) << "NCCL communicator closing after: " << status;
    stop_.Notify();
    if (watchdog_.joinable()) watchdog_.join();
    cudaSetDevice(device_);
    if (comm_ != nullptr) {
      // Finalize flushes the communicator; past the timeout it is aborted.
      ncclResult_t state = ncclCommFinalize(comm_);
      const absl::Time deadline = absl::Now() + options_.group.timeout;
      while (state == ncclInProgress && absl::Now() < deadline) {
        absl::SleepFor(absl::Milliseconds(1));
        ncclCommGetAsyncError(comm_, &state);
      }
      if (state == ncclSuccess) {
        ncclCommDestroy(comm_);
      } else {
        ncclCommAbort(comm_);
      }
    }
    if (scratch_ != nullptr) cudaFree(scratch_);
    if (comm_stream_ != nullptr) cudaStreamDestroy(comm_stream_);
  }

  // Builds the communicator; on failure the object is discarded.
  absl::Status Init(KvStore* store) {
    const CollectivesOptions& group = options_.group;
    if (cudaError_t e = cudaSetDevice(device_); e != cudaSuccess) {
      return CudaError(e, absl::StrCat("cudaSetDevice(", device_, ")"));
    }
    if (cudaError_t e = cudaStreamCreateWithFlags(&comm_stream_, cudaStreamNonBlocking);
        e != cudaSuccess) {
      return CudaError(e, "cudaStreamCreate");
    }
    if (cudaError_t e = cudaMalloc(&scratch_, sizeof(float)); e != cudaSuccess) {
      return CudaError(e, "cudaMalloc");
    }
    if (cudaError_t e = cudaMemset(scratch_, 0, sizeof(float)); e != cudaSuccess) {
      return CudaError(e, "cudaMemset");
    }
    ncclUniqueId id;
    const std::string key = absl::StrCat(group.prefix, "/nccl_id");
    if (group.rank == 0) {
      if (ncclResult_t r = ncclGetUniqueId(&id); r != ncclSuccess) {
        return NcclError(r, "ncclGetUniqueId");
      }
      if (absl::Status s = store->Set(key, absl::string_view(id.internal, sizeof(id.internal)));
          !s.ok()) {
        return s;
      }
    } else {
      absl::StatusOr<std::string> value = store->Get(key, group.timeout);
      if (!value.ok() || value->size() != sizeof(id.internal)) {
        const std::string why = value.ok() ? "malformed NCCL id" : value.status().ToString();
        return Lost("rendezvous", 0, why);
      }
      memcpy(id.internal, value->data(), sizeof(id.internal));
    }
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;  // so that a missing rank cannot hang the others
    ncclResult_t state = ncclCommInitRankConfig(&comm_, group.world_size, id, group.rank, &config);
    const absl::Time deadline = absl::Now() + group.timeout;
    while (state == ncclInProgress) {
      if (absl::Now() >= deadline) {
        ncclCommAbort(comm_);
        comm_ = nullptr;
        return Lost("ncclCommInitRank", -1,
                    absl::StrCat("not done within ", absl::FormatDuration(group.timeout)));
      }
      absl::SleepFor(absl::Milliseconds(1));
      ncclCommGetAsyncError(comm_, &state);
    }
    if (state != ncclSuccess) {
      if (comm_ != nullptr) ncclCommAbort(comm_);
      comm_ = nullptr;
      return Lost("ncclCommInitRank", -1, ncclGetErrorString(state));
    }
    watchdog_ = std::thread([this] { Watch(); });
    return absl::OkStatus();
  }

  int rank() const override { return options_.group.rank; }
  int world_size() const override { return options_.group.world_size; }
  Device device() const override { return Device::kCuda; }

  std::unique_ptr<Work> AllGatherAsync(BufferView input, BufferView output) override {
    if (absl::Status s = ValidateAllGather(*this, input, output); !s.ok()) return DoneWork(s);
    absl::StatusOr<ncclDataType_t> type = NcclType(input.dtype, false, "AllGather");
    if (!type.ok()) return DoneWork(type.status());
    return Enqueue("AllGather", WaitKind::kTransfer, [=](cudaStream_t stream) {
      return ncclAllGather(input.data, output.data, input.count, *type, comm_, stream);
    });
  }

  std::unique_ptr<Work> ReduceScatterAsync(BufferView input, BufferView output) override {
    if (absl::Status s = ValidateReduceScatter(*this, input, output); !s.ok()) return DoneWork(s);
    absl::StatusOr<ncclDataType_t> type = NcclType(input.dtype, true, "ReduceScatter");
    if (!type.ok()) return DoneWork(type.status());
    return Enqueue("ReduceScatter", WaitKind::kTransfer, [=](cudaStream_t stream) {
      return ncclReduceScatter(input.data, output.data, output.count, *type, ncclSum, comm_,
                               stream);
    });
  }

  std::unique_ptr<Work> AllReduceAsync(BufferView buffer) override {
    if (absl::Status s = ValidateBuffer(*this, "AllReduce", buffer); !s.ok()) return DoneWork(s);
    absl::StatusOr<ncclDataType_t> type = NcclType(buffer.dtype, true, "AllReduce");
    if (!type.ok()) return DoneWork(type.status());
    return Enqueue("AllReduce", WaitKind::kSync, [=](cudaStream_t stream) {
      return ncclAllReduce(buffer.data, buffer.data, buffer.count, *type, ncclSum, comm_, stream);
    });
  }

  std::unique_ptr<Work> BroadcastAsync(BufferView buffer, int root) override {
    if (absl::Status s = ValidateBuffer(*this, "Broadcast", buffer); !s.ok()) return DoneWork(s);
    if (root < 0 || root >= world_size()) {
      return DoneWork(absl::InvalidArgumentError(
          absl::StrCat("Broadcast: root ", root, " is outside [0, ", world_size(), ")")));
    }
    absl::StatusOr<ncclDataType_t> type = NcclType(buffer.dtype, false, "Broadcast");
    if (!type.ok()) return DoneWork(type.status());
    return Enqueue("Broadcast", WaitKind::kSync, [=](cudaStream_t stream) {
      return ncclBroadcast(buffer.data, buffer.data, buffer.count, *type, root, comm_, stream);
    });
  }

  absl::Status Barrier() override {
    const absl::Status status = AllReduceAsync({scratch_, DType::kF32, Device::kCuda, 1})->Wait();
    if (!status.ok()) return status;
    return Synchronize();
  }

  absl::Status Synchronize() override {
    while (true) {
      Event last;
      {
        absl::MutexLock lock(&mu_);
        if (!failure_.ok() || pending_.empty()) return failure_;
        last = pending_.back().done;
      }
      // Ops run in order on one stream: the last one done means all are.
      const cudaError_t state = cudaEventQuery(last.get());
      if (state == cudaSuccess) {
        absl::MutexLock lock(&mu_);
        while (!pending_.empty() && cudaEventQuery(pending_.front().done.get()) == cudaSuccess) {
          pending_.pop_front();
        }
        return failure_;
      }
      if (state != cudaErrorNotReady) return CudaError(state, "NCCL Synchronize");
      absl::SleepFor(absl::Microseconds(50));
    }
  }

  // Called by NcclWork::Wait. Events just before and after the wait on the
  // compute stream time its stall.
  absl::Status StreamWait(cudaEvent_t done, WaitKind kind) {
    cudaSetDevice(device_);
    absl::StatusOr<Event> before = NewEvent(/*timed=*/true), after = NewEvent(/*timed=*/true);
    for (const auto* e : {&before, &after}) {
      if (!e->ok()) return e->status();
    }
    cudaEventRecord(before->get(), compute_stream_);
    if (cudaError_t e = cudaStreamWaitEvent(compute_stream_, done, 0); e != cudaSuccess) {
      return CudaError(e, "cudaStreamWaitEvent");
    }
    cudaEventRecord(after->get(), compute_stream_);
    absl::MutexLock lock(&mu_);
    waits_.push_back({kind, *before, *after});
    // A caller that never takes the times keeps at most this many events.
    constexpr size_t kMaxTimedWaits = 1024;
    while (waits_.size() > kMaxTimedWaits && cudaEventQuery(waits_.front().after.get()) == cudaSuccess) {
      AddElapsed(waits_.front(), &taken_);
      waits_.pop_front();
    }
    return failure_;
  }

  WaitTimes TakeWaitTimes() override {
    std::deque<TimedWait> waits;
    WaitTimes times;
    {
      absl::MutexLock lock(&mu_);
      waits.swap(waits_);
      times = std::exchange(taken_, WaitTimes());
    }
    cudaSetDevice(device_);
    for (const TimedWait& w : waits) {
      cudaEventSynchronize(w.after.get());
      AddElapsed(w, &times);
    }
    return times;
  }

 private:
  struct Pending {
    uint64_t seq;
    std::string name;
    Event start, done;
    absl::Time started = absl::InfiniteFuture();  // when the GPU reached it
  };
  struct TimedWait {
    WaitKind kind;
    Event before, after;
  };

  std::unique_ptr<Work> Enqueue(const char* name, WaitKind kind,
                                std::function<ncclResult_t(cudaStream_t)> call) {
    absl::MutexLock lock(&mu_);
    if (!failure_.ok()) return DoneWork(failure_);
    const uint64_t seq = next_seq_++;
    cudaSetDevice(device_);
    absl::StatusOr<Event> ready = NewEvent(), start = NewEvent(), done = NewEvent();
    for (const auto* e : {&ready, &start, &done}) {
      if (!e->ok()) return DoneWork(e->status());
    }
    // The op reads what the compute stream has queued so far.
    cudaEventRecord(ready->get(), compute_stream_);
    cudaStreamWaitEvent(comm_stream_, ready->get(), 0);
    cudaEventRecord(start->get(), comm_stream_);
    ncclResult_t result = call(comm_stream_);
    // A non-blocking communicator answers ncclInProgress while it queues
    // the op, usually for microseconds (longer when it first connects to
    // its peers): spin a little, then poll at leisure, within the timeout.
    const absl::Time deadline = absl::Now() + options_.group.timeout;
    for (int polls = 0; result == ncclInProgress && absl::Now() < deadline; ++polls) {
      if (polls < 10000) {
        std::this_thread::yield();
      } else {
        absl::SleepFor(absl::Microseconds(100));
      }
      ncclCommGetAsyncError(comm_, &result);
    }
    if (result != ncclSuccess) {
      const std::string why =
          result == ncclInProgress
              ? absl::StrCat("not queued within ", absl::FormatDuration(options_.group.timeout))
              : std::string(ncclGetErrorString(result));
      mu_.Unlock();
      const absl::Status failure = Lost(absl::StrCat(name, " #", seq), -1, why);
      mu_.Lock();
      SetFailureLocked(failure);
      return DoneWork(failure_);
    }
    cudaEventRecord(done->get(), comm_stream_);
    pending_.push_back({seq, name, *start, *done});
    return std::make_unique<NcclWork>(this, *done, kind);
  }

  // Polls the queued ops: each must finish within the timeout of starting.
  void Watch() {
    cudaSetDevice(device_);
    while (!stop_.WaitForNotificationWithTimeout(absl::Milliseconds(10))) {
      std::string what, why;
      {
        absl::MutexLock lock(&mu_);
        if (!failure_.ok()) return;
        ncclResult_t async = ncclSuccess;
        ncclCommGetAsyncError(comm_, &async);
        if (async != ncclSuccess && async != ncclInProgress) {
          what = pending_.empty() ? "communicator" : Name(pending_.front());
          why = ncclGetErrorString(async);
        }
        const absl::Time now = absl::Now();
        while (why.empty() && !pending_.empty()) {
          Pending& op = pending_.front();
          if (op.started == absl::InfiniteFuture()) {
            if (cudaEventQuery(op.start.get()) != cudaSuccess) break;  // not begun
            op.started = now;
          }
          const cudaError_t state = cudaEventQuery(op.done.get());
          if (state == cudaSuccess) {
            pending_.pop_front();
          } else if (state != cudaErrorNotReady) {
            what = Name(op);
            why = cudaGetErrorString(state);
          } else {
            if (now - op.started > options_.group.timeout) {
              what = Name(op);
              why = absl::StrCat("not finished within ",
                                 absl::FormatDuration(options_.group.timeout));
            }
            break;
          }
        }
      }
      if (why.empty()) continue;
      const absl::Status failure = Lost(what, -1, why);  // slow: outside the lock
      absl::MutexLock lock(&mu_);
      SetFailureLocked(failure);
      return;
    }
  }

  static std::string Name(const Pending& op) { return absl::StrCat(op.name, " #", op.seq); }

  // Adds a finished wait's stall; one whose stream failed adds nothing.
  static void AddElapsed(const TimedWait& w, WaitTimes* times) {
    float ms = 0;
    if (cudaEventElapsedTime(&ms, w.before.get(), w.after.get()) != cudaSuccess) {
      cudaGetLastError();
      return;
    }
    (w.kind == WaitKind::kTransfer ? times->transfer_s : times->sync_s) += ms / 1e3;
  }

  // Reports this rank's failure and returns the error naming the lost rank.
  absl::Status Lost(absl::string_view what, int suspect, absl::string_view why) {
    const CollectivesOptions& g = options_.group;
    suspect = JobRank(g, suspect);
    health_->ReportFailure(suspect);
    const int lost = health_->FindLost(suspect);
    const std::string message = absl::StrCat(
        "NCCL ", what, " on rank ", JobRank(g, rank()), " of ", world_size(), ": ",
        lost >= 0 ? absl::StrCat("lost rank ", lost) : std::string("lost an unknown rank"), " (",
        why, ")");
    LOG(ERROR) << message;
    return absl::UnavailableError(message);
  }

  // Aborting releases kernels stuck waiting on a lost peer, so the streams
  // drain and Synchronize returns.
  void SetFailureLocked(absl::Status failure) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (!failure_.ok()) return;
    failure_ = std::move(failure);
    if (comm_ != nullptr) {
      ncclCommAbort(comm_);
      comm_ = nullptr;
    }
  }

  const NcclOptions options_;
  const int device_;
  cudaStream_t compute_stream_;
  cudaStream_t comm_stream_ = nullptr;
  float* scratch_ = nullptr;  // the barrier's all-reduce
  std::unique_ptr<RankHealth> health_;
  std::thread watchdog_;
  absl::Notification stop_;

  absl::Mutex mu_;
  ncclComm_t comm_ ABSL_GUARDED_BY(mu_) = nullptr;
  uint64_t next_seq_ ABSL_GUARDED_BY(mu_) = 0;
  std::deque<Pending> pending_ ABSL_GUARDED_BY(mu_);
  absl::Status failure_ ABSL_GUARDED_BY(mu_);
  std::deque<TimedWait> waits_ ABSL_GUARDED_BY(mu_);
  WaitTimes taken_ ABSL_GUARDED_BY(mu_);  // of the waits already dropped from waits_
};

absl::Status NcclWork::Wait() { return owner_->StreamWait(done_.get(), kind_); }

int VisibleDevices() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver" error
    return 0;
  }
  return count;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Collectives>> NewNcclCollectives(KvStore* store,
                                                                const NcclOptions& options) {
  const CollectivesOptions& group = options.group;
  if (absl::Status s = ValidateOptions(group); !s.ok()) return s;
  if (absl::Status s = KeepNvlsOff(); !s.ok()) return s;
  const int count = VisibleDevices();
  if (count == 0) return absl::FailedPreconditionError("NCCL: no CUDA device is visible");
  int device = options.device;
  if (device < 0) {
    const char* local = getenv("MODAMBA_LOCAL_RANK");
    if (local == nullptr || !absl::SimpleAtoi(local, &device)) device = group.rank % count;
  }
  if (device >= count) {
    return absl::InvalidArgumentError(absl::StrCat("NCCL: CUDA device ", device, " of rank ",
                                                   group.rank, " but only ", count, " visible"));
  }
  const HealthScope scope = HealthScopeOf(group);
  auto health = std::make_unique<RankHealth>(store, scope.prefix, scope.rank, scope.world_size,
                                             RankHealth::IntervalFor(group.timeout));
  auto collectives = std::make_unique<NcclCollectives>(
      options, device, static_cast<cudaStream_t>(options.compute_stream), std::move(health));
  if (absl::Status s = collectives->Init(store); !s.ok()) return s;
  return std::unique_ptr<Collectives>(std::move(collectives));
}

}  // namespace modamba
