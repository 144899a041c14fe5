// The collectives the FSDP trainer needs, behind one small interface with two
// implementations: GlooCollectives (host buffers, TCP) and NcclCollectives
// (GPU buffers). Ranks meet through a KvStore (rendezvous/kv_store.h).
//
// Ordering: every rank must issue the same collectives in the same order
// (so issue them from one thread).
// Each *Async call enqueues the operation on the communicator's own
// communication stream (NCCL: a CUDA stream; Gloo: a worker thread) in call
// order and returns at once, so communication overlaps compute; Work::Wait
// orders what follows after it. Buffers must stay alive and unmodified until
// the operation is waited on.
//
// Wait time: each communicator adds up how long its caller waited on its
// operations (TakeWaitTimes): the exposed communication of a step, which
// the trainer's per-step profile reports.
//
// Failure: an operation that cannot finish within the communicator's timeout,
// or whose peer went away, fails with an error naming the lost rank, of the
// form "... lost rank 3 ...". The failure is sticky: every later operation on
// the communicator fails with the same error, since the ranks are no longer
// in step. Nothing hangs. The bound: a rank notices the loss within the
// timeout of the operation it is in (Gloo notices a dead process at once,
// by its closed connections), then takes three heartbeat intervals
// (timeout / 10, at most 2 s) to agree with the others on who was lost; so
// within 36 s of the loss with the default 30 s timeout.
#ifndef MODAMBA_TRAINER_COLLECTIVES_H_
#define MODAMBA_TRAINER_COLLECTIVES_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "core/tensor.h"

namespace modamba {

// A contiguous run of `count` elements of `dtype` on `device`; not owning.
struct BufferView {
  void* data = nullptr;
  DType dtype = DType::kF32;
  Device device = Device::kCpu;
  int64_t count = 0;

  static BufferView Of(const Tensor& t) { return {t.raw(), t.dtype(), t.device(), t.numel()}; }
  // Elements [offset, offset + n).
  BufferView Slice(int64_t offset, int64_t n) const;
  size_t bytes() const { return count * DTypeSize(dtype); }
};

// A handle on one enqueued operation.
class Work {
 public:
  virtual ~Work() = default;
  // Orders what follows after the operation: Gloo blocks the calling thread
  // until it is done; NCCL makes the compute stream wait for it (the host
  // does not block). Returns the operation's error, or the communicator's
  // sticky error, when already known.
  virtual absl::Status Wait() = 0;
};

// How long a communicator's caller waited on its operations (Work::Wait and
// the blocking forms, Synchronize excepted): with Gloo the host thread was
// blocked; with NCCL the compute stream stalled (timed by events).
struct WaitTimes {
  double transfer_s = 0;  // all-gathers and reduce-scatters
  double sync_s = 0;      // all-reduces, broadcasts and barriers
};

// What a wait is counted as.
enum class WaitKind { kTransfer, kSync };

// A thread-safe WaitTimes total (for the implementations).
class WaitClock {
 public:
  void Add(WaitKind kind, double seconds);
  WaitTimes Take();

 private:
  absl::Mutex mu_;
  WaitTimes total_ ABSL_GUARDED_BY(mu_);
};

class Collectives {
 public:
  virtual ~Collectives() = default;

  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  // Where the buffers must live.
  virtual Device device() const = 0;

  // output[r * n, (r + 1) * n) = rank r's input, n = input.count, for every r;
  // output.count must be world_size * n. In place when input is exactly that
  // slice of output on this rank.
  virtual std::unique_ptr<Work> AllGatherAsync(BufferView input, BufferView output) = 0;

  // output = sum over ranks of their input[rank * n, (rank + 1) * n),
  // n = output.count; input.count must be world_size * n. The input is left
  // as it was, except in place, where output is exactly that slice of input.
  virtual std::unique_ptr<Work> ReduceScatterAsync(BufferView input, BufferView output) = 0;

  // buffer = sum over ranks of buffer, in place; any count.
  virtual std::unique_ptr<Work> AllReduceAsync(BufferView buffer) = 0;

  // buffer = root's buffer on every rank.
  virtual std::unique_ptr<Work> BroadcastAsync(BufferView buffer, int root) = 0;

  // Blocks until every rank has called Barrier and all enqueued work is done.
  virtual absl::Status Barrier() = 0;

  // Blocks the host until every enqueued operation has finished; returns the
  // first error. NCCL ops are watched with the timeout, so this never hangs.
  virtual absl::Status Synchronize() = 0;

  // The wait times since the last call (or the start), then starts afresh.
  // NCCL reads its events: call it after the compute stream is synchronized.
  virtual WaitTimes TakeWaitTimes() = 0;

  // Blocking forms: enqueue, then Wait.
  absl::Status AllGather(BufferView input, BufferView output) {
    return AllGatherAsync(input, output)->Wait();
  }
  absl::Status ReduceScatter(BufferView input, BufferView output) {
    return ReduceScatterAsync(input, output)->Wait();
  }
  absl::Status AllReduce(BufferView buffer) { return AllReduceAsync(buffer)->Wait(); }
  absl::Status Broadcast(BufferView buffer, int root) {
    return BroadcastAsync(buffer, root)->Wait();
  }
};

// What both implementations share.
struct CollectivesOptions {
  int rank = 0;
  int world_size = 1;
  // Keys in the store start with this, so several groups (or restarts of one
  // group) can share a store: give every attempt its own prefix.
  std::string prefix = "collectives";
  // How long one operation, or the rendezvous, may wait on a peer before the
  // peer counts as lost.
  absl::Duration timeout = absl::Seconds(30);
  // For a group of some of a job's ranks (trainer/process_groups.h): each
  // member's rank in the job, and the job's store prefix and size. A
  // failure is then settled among the job's ranks (trainer/rank_health.h)
  // and named by its rank in the job, since the lost rank may be outside
  // this group. Empty job_ranks: the group is the job.
  std::vector<int> job_ranks;
  std::string job_prefix;
  int job_world_size = 0;
};

// The job's rank of group rank `rank` (-1 stays -1).
int JobRank(const CollectivesOptions& options, int rank);

// Where a group settles failures (RankHealth's arguments): the job's prefix,
// this rank's place in the job and the job's size.
struct HealthScope {
  std::string prefix;
  int rank = 0, world_size = 1;
};
HealthScope HealthScopeOf(const CollectivesOptions& options);

// A Work that is already finished, with `status`.
std::unique_ptr<Work> DoneWork(absl::Status status);

// Checks the shapes and the device of a collective's buffers; `op` names the
// operation in the error.
absl::Status ValidateAllGather(const Collectives& c, BufferView input, BufferView output);
absl::Status ValidateReduceScatter(const Collectives& c, BufferView input, BufferView output);
absl::Status ValidateBuffer(const Collectives& c, absl::string_view op, BufferView buffer);
absl::Status ValidateOptions(const CollectivesOptions& options);

}  // namespace modamba

#endif  // MODAMBA_TRAINER_COLLECTIVES_H_
