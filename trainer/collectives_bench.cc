// Collectives bandwidth, one table per backend, printed by rank 0:
//
//   launch --nproc=4 -- collectives_bench --backend=gloo
//   launch --nproc=2 -- collectives_bench --backend=nccl
//
// For each operation and size (the bytes of the full buffer: the all-reduce
// buffer, the all-gather output, the reduce-scatter input) it reports the
// mean time of --iters runs after --warmup runs, the algorithm bandwidth
// (bytes / time) and the bus bandwidth, which scales that by what each rank
// must move: 2(n-1)/n for all-reduce, (n-1)/n for all-gather and
// reduce-scatter (as nccl-tests defines them).
#include <cuda_runtime.h>
#include <stdlib.h>

#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "glog/logging.h"
#include "rendezvous/open_store.h"
#include "trainer/collectives.h"
#include "trainer/gloo_collectives.h"
#include "trainer/nccl_collectives.h"

ABSL_FLAG(std::string, backend, "gloo", "gloo (host buffers) or nccl (GPU buffers).");
ABSL_FLAG(int64_t, min_bytes, 4096, "Smallest buffer.");
ABSL_FLAG(int64_t, max_bytes, 16 << 20, "Largest buffer.");
ABSL_FLAG(int, warmup, 2, "Untimed runs per size.");
ABSL_FLAG(int, iters, 5, "Timed runs per size.");

namespace modamba {
namespace {

void Must(const absl::Status& status) { CHECK(status.ok()) << status; }

int EnvInt(const char* name) {
  const char* value = getenv(name);
  int n = -1;
  CHECK(value != nullptr && absl::SimpleAtoi(value, &n)) << name << " is not set";
  return n;
}

// One F32 buffer of `bytes` on the communicator's device.
class Buffer {
 public:
  Buffer(Device device, int64_t bytes) : device_(device) {
    if (device == Device::kCuda) {
      CHECK_EQ(cudaMalloc(&data_, bytes), cudaSuccess);
      CHECK_EQ(cudaMemset(data_, 0, bytes), cudaSuccess);
    } else {
      host_.assign(bytes, 0);
      data_ = host_.data();
    }
    view_ = {data_, DType::kF32, device, bytes / 4};
  }
  ~Buffer() {
    if (device_ == Device::kCuda) cudaFree(data_);
  }
  BufferView view() const { return view_; }

 private:
  const Device device_;
  void* data_ = nullptr;
  std::vector<char> host_;
  BufferView view_;
};

int Main() {
  const std::string backend = absl::GetFlag(FLAGS_backend);
  const int rank = EnvInt("MODAMBA_RANK"), n = EnvInt("MODAMBA_WORLD_SIZE");
  std::unique_ptr<KvStore> store = *OpenKvStore(getenv("MODAMBA_STORE"));
  CollectivesOptions group;
  group.rank = rank;
  group.world_size = n;
  absl::StatusOr<std::unique_ptr<Collectives>> made;
  if (backend == "nccl") {
    NcclOptions options;
    options.group = group;
    made = NewNcclCollectives(store.get(), options);
  } else {
    GlooOptions options;
    options.group = group;
    made = NewGlooCollectives(store.get(), options);
  }
  CHECK(made.ok()) << made.status();
  Collectives& c = **made;

  struct Op {
    const char* name;
    double bus_factor;
    std::function<std::unique_ptr<Work>(BufferView full, BufferView part)> run;
  };
  const std::vector<Op> ops = {
      {"all_reduce", 2.0 * (n - 1) / n,
       [&](BufferView full, BufferView) { return c.AllReduceAsync(full); }},
      {"all_gather", 1.0 * (n - 1) / n,
       [&](BufferView full, BufferView part) { return c.AllGatherAsync(part, full); }},
      {"reduce_scatter", 1.0 * (n - 1) / n,
       [&](BufferView full, BufferView part) { return c.ReduceScatterAsync(full, part); }},
  };
  if (rank == 0) {
    printf("%s, %d ranks, F32\n", backend.c_str(), n);
    printf("%-15s %12s %12s %12s %12s\n", "op", "bytes", "time_us", "algbw_GB/s", "busbw_GB/s");
  }
  for (const Op& op : ops) {
    for (int64_t bytes = absl::GetFlag(FLAGS_min_bytes); bytes <= absl::GetFlag(FLAGS_max_bytes);
         bytes *= 4) {
      const int64_t full_bytes = bytes / (4 * n) * 4 * n;  // whole F32 shards
      Buffer full(c.device(), full_bytes), part(c.device(), full_bytes / n);
      for (int i = 0; i < absl::GetFlag(FLAGS_warmup); ++i) {
        Must(op.run(full.view(), part.view())->Wait());
      }
      Must(c.Barrier());
      const absl::Time start = absl::Now();
      const int iters = absl::GetFlag(FLAGS_iters);
      std::vector<std::unique_ptr<Work>> works;
      for (int i = 0; i < iters; ++i) works.push_back(op.run(full.view(), part.view()));
      for (auto& w : works) Must(w->Wait());
      Must(c.Synchronize());
      const double seconds = absl::ToDoubleSeconds(absl::Now() - start) / iters;
      const double algbw = full_bytes / seconds / 1e9;
      if (rank == 0) {
        printf("%-15s %12lld %12.1f %12.3f %12.3f\n", op.name, static_cast<long long>(full_bytes),
               seconds * 1e6, algbw, algbw * op.bus_factor);
        fflush(stdout);
      }
    }
  }
  return 0;
}

}  // namespace
}  // namespace modamba

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  FLAGS_logtostderr = true;
  google::InitGoogleLogging(argv[0]);
  return modamba::Main();
}
