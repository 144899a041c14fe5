#include "trainer/gloo_collectives.h"

#include <signal.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <deque>
#include <exception>
#include <functional>
#include <future>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "glog/logging.h"
#include "gloo/common/error.h"
#include "gloo/rendezvous/context.h"
#include "gloo/rendezvous/store.h"
#include "gloo/transport/tcp/device.h"
#include "gloo/transport/unbound_buffer.h"
#include "trainer/rank_health.h"

namespace modamba {
namespace {

using gloo::transport::UnboundBuffer;

// Gloo's rendezvous store over a KvStore. Gloo's interface reports errors by
// throwing; the exceptions stay inside this file (NewGlooCollectives catches
// them).
class GlooStoreAdapter : public gloo::rendezvous::Store {
 public:
  GlooStoreAdapter(KvStore* store, std::string prefix, absl::Duration timeout)
      : store_(store), prefix_(std::move(prefix)), timeout_(timeout) {}

  void set(const std::string& key, const std::vector<char>& data) override {
    const absl::Status status = store_->Set(Key(key), absl::string_view(data.data(), data.size()));
    if (!status.ok()) throw gloo::IoException(status.ToString());
  }

  std::vector<char> get(const std::string& key) override {
    absl::StatusOr<std::string> value = store_->Get(Key(key), timeout_);
    if (!value.ok()) Throw(key, value.status(), timeout_);
    return std::vector<char>(value->begin(), value->end());
  }

  void wait(const std::vector<std::string>& keys) override { wait(keys, gloo::kNoTimeout); }

  void wait(const std::vector<std::string>& keys,
            const std::chrono::milliseconds& timeout) override {
    const absl::Duration total = timeout == gloo::kNoTimeout ? timeout_ : absl::FromChrono(timeout);
    const absl::Time deadline = absl::Now() + total;
    for (const std::string& key : keys) {
      absl::StatusOr<std::string> value = store_->Get(Key(key), deadline - absl::Now());
      if (!value.ok()) Throw(key, value.status(), total);
    }
  }

 private:
  [[noreturn]] void Throw(const std::string& key, const absl::Status& status,
                          absl::Duration waited) const {
    if (absl::IsDeadlineExceeded(status)) {
      throw gloo::IoException(
          absl::StrCat("key '", Key(key), "' not set within ", absl::FormatDuration(waited)));
    }
    throw gloo::IoException(status.ToString());
  }

  std::string Key(const std::string& key) const { return absl::StrCat(prefix_, "/gloo/", key); }

  KvStore* const store_;
  const std::string prefix_;
  const absl::Duration timeout_;
};

// Moves the bytes of one operation. Each transfer is tagged with a slot
// unique to (operation, step), and every call records the peer it involves,
// so that when Gloo throws the failure can be pinned on that peer.
class Exchange {
 public:
  // `scratch` points at two buffers kept across operations.
  Exchange(gloo::Context* context, uint64_t seq, absl::Time deadline, std::vector<char>* scratch)
      : context_(context), seq_(seq), deadline_(deadline), scratch_(scratch) {}

  // Scratch buffer i (0 or 1) of at least `bytes`; grows, never shrinks.
  char* Scratch(int i, size_t bytes) {
    if (scratch_[i].size() < bytes) scratch_[i].resize(bytes);
    return scratch_[i].data();
  }

  std::unique_ptr<UnboundBuffer> Buffer(void* data, size_t bytes) {
    return context_->createUnboundBuffer(data, bytes);
  }
  void Send(UnboundBuffer* buffer, int peer, int step, size_t offset, size_t bytes) {
    peer_ = peer;
    buffer->send(peer, Slot(step), offset, bytes);
  }
  void Recv(UnboundBuffer* buffer, int peer, int step, size_t offset, size_t bytes) {
    peer_ = peer;
    buffer->recv(peer, Slot(step), offset, bytes);
  }
  void WaitSend(UnboundBuffer* buffer, int peer) {
    peer_ = peer;
    if (!buffer->waitSend(nullptr, Remaining())) GLOO_THROW_IO_EXCEPTION("send aborted");
  }
  void WaitRecv(UnboundBuffer* buffer, int peer) {
    peer_ = peer;
    if (!buffer->waitRecv(nullptr, Remaining())) GLOO_THROW_IO_EXCEPTION("receive aborted");
  }

  int peer() const { return peer_; }
  absl::Time deadline() const { return deadline_; }

 private:
  static constexpr uint64_t kSlotsPerOp = uint64_t{1} << 20;
  uint64_t Slot(int step) const { return seq_ * kSlotsPerOp + step; }
  // Rounded up, so that Gloo gives up no earlier than the deadline.
  std::chrono::milliseconds Remaining() const {
    return std::max(
        std::chrono::milliseconds(1),
        absl::ToChronoMilliseconds(absl::Ceil(deadline_ - absl::Now(), absl::Milliseconds(1))));
  }

  gloo::Context* const context_;
  const uint64_t seq_;
  const absl::Time deadline_;
  std::vector<char>* const scratch_;
  int peer_ = -1;
};

bool Summable(DType dtype) { return dtype == DType::kF32 || dtype == DType::kF64; }

void AddInto(DType dtype, char* dst, const char* src, int64_t n) {
  if (dtype == DType::kF32) {
    float* d = reinterpret_cast<float*>(dst);
    const float* s = reinterpret_cast<const float*>(src);
    for (int64_t i = 0; i < n; ++i) d[i] += s[i];
  } else {
    double* d = reinterpret_cast<double*>(dst);
    const double* s = reinterpret_cast<const double*>(src);
    for (int64_t i = 0; i < n; ++i) d[i] += s[i];
  }
}

// Chunk c of a ring pass is elements [bounds[c], bounds[c + 1]).
using Bounds = std::vector<int64_t>;

Bounds EqualChunks(int n, int64_t chunk) {
  Bounds b(n + 1);
  for (int c = 0; c <= n; ++c) b[c] = c * chunk;
  return b;
}

// Sizes differ by at most one, for all-reduce of any count.
Bounds BalancedChunks(int n, int64_t count) {
  Bounds b(n + 1, 0);
  for (int c = 0; c < n; ++c) b[c + 1] = b[c] + count / n + (c < count % n ? 1 : 0);
  return b;
}

// One ring pass of reduce-scatter on steps [step0, step0 + n - 1). Leaves in
// `out` the sum over ranks of chunk `rank` of their `input`, which is read
// only. The running partial sums travel in two scratch chunks: one is sent
// on while the next arrives in the other.
void RingReduceScatter(Exchange& ex, int rank, int n, DType dtype, const char* input,
                       const Bounds& bounds, char* out, int step0) {
  const size_t es = DTypeSize(dtype);
  auto begin = [&](int c) { return bounds[(c % n + n) % n]; };
  auto size = [&](int c) {
    c = (c % n + n) % n;
    return bounds[c + 1] - bounds[c];
  };
  if (n == 1) {
    if (out != input) memmove(out, input, size(0) * es);
    return;
  }
  int64_t max_chunk = 0;
  for (int c = 0; c < n; ++c) max_chunk = std::max(max_chunk, size(c));
  char* scratch_a = ex.Scratch(0, max_chunk * es);
  char* scratch_b = ex.Scratch(1, max_chunk * es);
  std::unique_ptr<UnboundBuffer> in = ex.Buffer(const_cast<char*>(input), bounds[n] * es);
  std::unique_ptr<UnboundBuffer> a = ex.Buffer(scratch_a, max_chunk * es);
  std::unique_ptr<UnboundBuffer> b = ex.Buffer(scratch_b, max_chunk * es);
  const int right = (rank + 1) % n, left = (rank + n - 1) % n;
  char* received = nullptr;
  for (int s = 0; s < n - 1; ++s) {
    const int send_chunk = rank - s - 1, recv_chunk = rank - s - 2;
    // Step 0 sends this rank's own input; later steps pass on what arrived.
    UnboundBuffer* send = s == 0 ? in.get() : (s % 2 == 1 ? a.get() : b.get());
    const size_t send_offset = s == 0 ? begin(send_chunk) * es : 0;
    UnboundBuffer* recv = s % 2 == 0 ? a.get() : b.get();
    received = s % 2 == 0 ? scratch_a : scratch_b;
    if (size(send_chunk) > 0) ex.Send(send, right, step0 + s, send_offset, size(send_chunk) * es);
    if (size(recv_chunk) > 0) ex.Recv(recv, left, step0 + s, 0, size(recv_chunk) * es);
    if (size(send_chunk) > 0) ex.WaitSend(send, right);
    if (size(recv_chunk) > 0) ex.WaitRecv(recv, left);
    AddInto(dtype, received, input + begin(recv_chunk) * es, size(recv_chunk));
  }
  memcpy(out, received, size(rank) * es);
}

// One ring pass of all-gather on steps [step0, step0 + n - 1): chunk `rank`
// of `data` is this rank's; afterwards every chunk is filled.
void RingAllGather(Exchange& ex, int rank, int n, size_t es, char* data, const Bounds& bounds,
                   int step0) {
  if (n == 1) return;
  auto begin = [&](int c) { return bounds[(c % n + n) % n]; };
  auto size = [&](int c) {
    c = (c % n + n) % n;
    return bounds[c + 1] - bounds[c];
  };
  // Separate buffers for the outgoing and incoming halves of each step.
  std::unique_ptr<UnboundBuffer> send = ex.Buffer(data, bounds[n] * es);
  std::unique_ptr<UnboundBuffer> recv = ex.Buffer(data, bounds[n] * es);
  const int right = (rank + 1) % n, left = (rank + n - 1) % n;
  for (int s = 0; s < n - 1; ++s) {
    const int send_chunk = rank - s, recv_chunk = rank - s - 1;
    if (size(send_chunk) > 0) {
      ex.Send(send.get(), right, step0 + s, begin(send_chunk) * es, size(send_chunk) * es);
    }
    if (size(recv_chunk) > 0) {
      ex.Recv(recv.get(), left, step0 + s, begin(recv_chunk) * es, size(recv_chunk) * es);
    }
    if (size(send_chunk) > 0) ex.WaitSend(send.get(), right);
    if (size(recv_chunk) > 0) ex.WaitRecv(recv.get(), left);
  }
}

class GlooWork : public Work {
 public:
  // `counted` is empty for a wait that is not counted (Synchronize's).
  GlooWork(std::shared_future<absl::Status> done, std::optional<WaitKind> counted,
           std::shared_ptr<WaitClock> clock)
      : done_(std::move(done)), counted_(counted), clock_(std::move(clock)) {}
  absl::Status Wait() override {
    const absl::Time start = absl::Now();
    absl::Status status = done_.get();
    if (counted_) clock_->Add(*counted_, absl::ToDoubleSeconds(absl::Now() - start));
    return status;
  }

 private:
  std::shared_future<absl::Status> done_;
  const std::optional<WaitKind> counted_;
  // Shared, so that a Work may outlive its communicator.
  const std::shared_ptr<WaitClock> clock_;
};

class GlooCollectives : public Collectives {
 public:
  GlooCollectives(const GlooOptions& options, std::shared_ptr<gloo::Context> context,
                  std::unique_ptr<RankHealth> health)
      : options_(options), context_(std::move(context)), health_(std::move(health)) {
    worker_ = std::thread([this] { WorkerLoop(); });
  }

  ~GlooCollectives() override {
    {
      absl::MutexLock lock(&mu_);
      stopping_ = true;
    }
    worker_.join();
    context_.reset();  // closes the connections
    health_.reset();
  }

  int rank() const override { return options_.group.rank; }
  int world_size() const override { return options_.group.world_size; }
  Device device() const override { return Device::kCpu; }

  std::unique_ptr<Work> AllGatherAsync(BufferView input, BufferView output) override {
    if (absl::Status s = ValidateAllGather(*this, input, output); !s.ok()) return DoneWork(s);
    return Enqueue("AllGather", WaitKind::kTransfer, [=](Exchange& ex) {
      const size_t es = DTypeSize(input.dtype);
      char* out = static_cast<char*>(output.data);
      char* mine = out + rank() * input.count * es;
      if (mine != input.data) memmove(mine, input.data, input.bytes());
      RingAllGather(ex, rank(), world_size(), es, out, EqualChunks(world_size(), input.count), 0);
    });
  }

  std::unique_ptr<Work> ReduceScatterAsync(BufferView input, BufferView output) override {
    if (absl::Status s = ValidateReduceScatter(*this, input, output); !s.ok()) return DoneWork(s);
    if (!Summable(input.dtype)) return DoneWork(NotSummable("ReduceScatter", input.dtype));
    return Enqueue("ReduceScatter", WaitKind::kTransfer, [=](Exchange& ex) {
      RingReduceScatter(ex, rank(), world_size(), input.dtype, static_cast<const char*>(input.data),
                        EqualChunks(world_size(), output.count), static_cast<char*>(output.data),
                        0);
    });
  }

  std::unique_ptr<Work> AllReduceAsync(BufferView buffer) override {
    if (absl::Status s = ValidateBuffer(*this, "AllReduce", buffer); !s.ok()) return DoneWork(s);
    if (!Summable(buffer.dtype)) return DoneWork(NotSummable("AllReduce", buffer.dtype));
    return Enqueue("AllReduce", WaitKind::kSync, [=](Exchange& ex) {
      const int n = world_size();
      const size_t es = DTypeSize(buffer.dtype);
      const Bounds bounds = BalancedChunks(n, buffer.count);
      char* data = static_cast<char*>(buffer.data);
      // The reduced chunk overwrites this rank's input chunk only after the
      // pass has read it for the last time.
      RingReduceScatter(ex, rank(), n, buffer.dtype, data, bounds, data + bounds[rank()] * es, 0);
      RingAllGather(ex, rank(), n, es, data, bounds, n - 1);
    });
  }

  std::unique_ptr<Work> BroadcastAsync(BufferView buffer, int root) override {
    if (absl::Status s = ValidateBuffer(*this, "Broadcast", buffer); !s.ok()) return DoneWork(s);
    if (root < 0 || root >= world_size()) {
      return DoneWork(absl::InvalidArgumentError(
          absl::StrCat("Broadcast: root ", root, " is outside [0, ", world_size(), ")")));
    }
    return Enqueue("Broadcast", WaitKind::kSync, [=](Exchange& ex) {
      if (buffer.count == 0 || world_size() == 1) return;
      if (rank() != root) {
        std::unique_ptr<UnboundBuffer> in = ex.Buffer(buffer.data, buffer.bytes());
        ex.Recv(in.get(), root, rank(), 0, buffer.bytes());
        ex.WaitRecv(in.get(), root);
        return;
      }
      // One buffer per destination, so that the sends proceed together.
      std::vector<std::unique_ptr<UnboundBuffer>> out(world_size());
      for (int peer = 0; peer < world_size(); ++peer) {
        if (peer == root) continue;
        out[peer] = ex.Buffer(buffer.data, buffer.bytes());
        ex.Send(out[peer].get(), peer, peer, 0, buffer.bytes());
      }
      for (int peer = 0; peer < world_size(); ++peer) {
        if (peer != root) ex.WaitSend(out[peer].get(), peer);
      }
    });
  }

  absl::Status Barrier() override {
    return Enqueue("Barrier", WaitKind::kSync,
                   [this](Exchange& ex) {
                     // Dissemination: after round k every rank has heard, indirectly, from
                     // the 2^(k+1) ranks before it.
                     const int n = world_size();
                     for (int k = 0, d = 1; d < n; ++k, d *= 2) {
                       char token = 1, heard = 0;
                       std::unique_ptr<UnboundBuffer> send = ex.Buffer(&token, 1);
                       std::unique_ptr<UnboundBuffer> recv = ex.Buffer(&heard, 1);
                       const int to = (rank() + d) % n, from = (rank() + n - d) % n;
                       ex.Send(send.get(), to, k, 0, 1);
                       ex.Recv(recv.get(), from, k, 0, 1);
                       ex.WaitSend(send.get(), to);
                       ex.WaitRecv(recv.get(), from);
                     }
                   })
        ->Wait();
  }

  absl::Status Synchronize() override {
    return Enqueue("Synchronize", std::nullopt, [](Exchange&) {})->Wait();
  }

  WaitTimes TakeWaitTimes() override { return clock_->Take(); }

 private:
  struct Op {
    std::string name;
    std::function<void(Exchange&)> body;
    std::promise<absl::Status> done;
  };

  static absl::Status NotSummable(absl::string_view op, DType dtype) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": Gloo sums F32 and F64 buffers, not ", DTypeName(dtype)));
  }

  std::unique_ptr<Work> Enqueue(std::string name, std::optional<WaitKind> counted,
                                std::function<void(Exchange&)> body) {
    auto op = std::make_unique<Op>();
    op->name = std::move(name);
    op->body = std::move(body);
    std::shared_future<absl::Status> done = op->done.get_future().share();
    absl::MutexLock lock(&mu_);
    queue_.push_back(std::move(op));
    return std::make_unique<GlooWork>(std::move(done), counted, clock_);
  }

  void WorkerLoop() {
    while (true) {
      std::unique_ptr<Op> op;
      {
        absl::MutexLock lock(&mu_);
        mu_.Await(absl::Condition(
            +[](GlooCollectives* self) ABSL_EXCLUSIVE_LOCKS_REQUIRED(self->mu_) {
              return self->stopping_ || !self->queue_.empty();
            },
            this));
        if (queue_.empty()) return;  // stopping, and everything queued ran
        op = std::move(queue_.front());
        queue_.pop_front();
      }
      op->done.set_value(failure_.ok() ? Run(*op) : failure_);
    }
  }

  absl::Status Run(Op& op) {
    const uint64_t seq = next_seq_++;
    Exchange ex(context_.get(), seq, absl::Now() + options_.group.timeout, scratch_);
    try {
      op.body(ex);
      return absl::OkStatus();
    } catch (const std::exception& e) {
      // Gloo's clock and ours may differ by a hair.
      const bool timed_out = absl::Now() + absl::Milliseconds(1) >= ex.deadline();
      const CollectivesOptions& g = options_.group;
      const int peer = JobRank(g, ex.peer());
      health_->ReportFailure(peer);
      const int lost = health_->FindLost(peer);
      const std::string message = absl::StrCat(
          "Gloo ", op.name, " #", seq, " on rank ", JobRank(g, rank()), " of ", world_size(), ": ",
          lost >= 0 ? absl::StrCat("lost rank ", lost) : std::string("lost an unknown rank"), " (",
          timed_out ? absl::StrCat("rank ", peer, " did not answer within ",
                                   absl::FormatDuration(g.timeout))
                    : absl::StrCat("waiting on rank ", peer, ": ", e.what()),
          ")");
      LOG(ERROR) << message;
      failure_ = timed_out ? absl::DeadlineExceededError(message) : absl::UnavailableError(message);
      return failure_;
    }
  }

  const GlooOptions options_;
  std::shared_ptr<gloo::Context> context_;
  std::unique_ptr<RankHealth> health_;
  std::thread worker_;
  const std::shared_ptr<WaitClock> clock_ = std::make_shared<WaitClock>();
  // Touched by the worker thread only.
  uint64_t next_seq_ = 0;
  std::vector<char> scratch_[2];  // reduce-scatter partial sums
  absl::Status failure_;

  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::deque<std::unique_ptr<Op>> queue_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

absl::StatusOr<std::unique_ptr<Collectives>> NewGlooCollectives(KvStore* store,
                                                                const GlooOptions& options) {
  const CollectivesOptions& group = options.group;
  if (absl::Status s = ValidateOptions(group); !s.ok()) return s;
  signal(SIGPIPE, SIG_IGN);
  const HealthScope scope = HealthScopeOf(group);
  auto health = std::make_unique<RankHealth>(store, scope.prefix, scope.rank, scope.world_size,
                                             RankHealth::IntervalFor(group.timeout));
  auto context = std::make_shared<gloo::rendezvous::Context>(group.rank, group.world_size);
  context->setTimeout(absl::ToChronoMilliseconds(group.timeout));
  try {
    gloo::transport::tcp::attr attr;
    attr.hostname = options.hostname;
    std::shared_ptr<gloo::transport::Device> device = gloo::transport::tcp::CreateDevice(attr);
    GlooStoreAdapter adapter(store, group.prefix, group.timeout);
    context->connectFullMesh(adapter, device);
  } catch (const std::exception& e) {
    health->ReportFailure(-1);
    const int lost = health->FindLost(-1);
    return absl::UnavailableError(absl::StrCat(
        "Gloo rendezvous of rank ", JobRank(group, group.rank), " of ", group.world_size, " (",
        options.hostname, "): ",
        lost >= 0 ? absl::StrCat("lost rank ", lost) : std::string("no rank lost"),
        ": ",
        e.what()));
  }
  return std::unique_ptr<Collectives>(
      new GlooCollectives(options, std::move(context), std::move(health)));
}

}  // namespace modamba
