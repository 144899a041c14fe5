// One rank of the NCCL tests, started by the launcher; one GPU per rank.
//
//   --mode=collectives  every collective against exact values (F32, F64,
//                       BF16) and an FSDP round on flat buckets
//   --mode=kill         rank --victim dies by SIGKILL after a barrier; the
//                       others print "COLLECTIVE ERROR: ..." and exit 3
#include <cuda_runtime.h>
#include <signal.h>
#include <stdlib.h>

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/time/time.h"
#include "glog/logging.h"
#include "rendezvous/open_store.h"
#include "trainer/collectives.h"
#include "trainer/collectives_checks.h"
#include "trainer/nccl_collectives.h"

ABSL_FLAG(std::string, mode, "collectives", "What to check; see the file comment.");
ABSL_FLAG(absl::Duration, timeout, absl::Seconds(60), "Collectives timeout.");
ABSL_FLAG(int, victim, 1, "The rank that dies in --mode=kill.");

namespace modamba {
namespace {

class CudaMemory : public TestMemory {
 public:
  ~CudaMemory() override {
    for (void* p : buffers_) cudaFree(p);
  }
  BufferView Allocate(DType dtype, int64_t count) override {
    void* p = nullptr;
    CHECK_EQ(cudaMalloc(&p, std::max<size_t>(1, count * DTypeSize(dtype))), cudaSuccess);
    buffers_.push_back(p);
    return {p, dtype, Device::kCuda, count};
  }
  // Synchronous copies on the legacy default stream, the compute stream here.
  void Upload(const void* host, BufferView dst) override {
    CHECK_EQ(cudaMemcpy(dst.data, host, dst.bytes(), cudaMemcpyHostToDevice), cudaSuccess);
  }
  void Download(BufferView src, void* host) override {
    CHECK_EQ(cudaMemcpy(host, src.data, src.bytes(), cudaMemcpyDeviceToHost), cudaSuccess);
  }

 private:
  std::vector<void*> buffers_;
};

int EnvInt(const char* name) {
  const char* value = getenv(name);
  int n = -1;
  if (value == nullptr || !absl::SimpleAtoi(value, &n)) {
    fprintf(stderr, "%s is not set\n", name);
    exit(2);
  }
  return n;
}

int Fail(const absl::Status& status) {
  fprintf(stderr, "CHECK FAILED: %s\n", status.ToString().c_str());
  return 1;
}

int Main() {
  const std::string mode = absl::GetFlag(FLAGS_mode);
  const char* address = getenv("MODAMBA_STORE");
  absl::StatusOr<std::unique_ptr<KvStore>> store = OpenKvStore(address == nullptr ? "" : address);
  if (!store.ok()) return Fail(store.status());
  NcclOptions options;
  options.group.rank = EnvInt("MODAMBA_RANK");
  options.group.world_size = EnvInt("MODAMBA_WORLD_SIZE");
  options.group.timeout = absl::GetFlag(FLAGS_timeout);
  absl::StatusOr<std::unique_ptr<Collectives>> collectives =
      NewNcclCollectives(store->get(), options);
  if (!collectives.ok()) {
    fprintf(stderr, "COLLECTIVE ERROR: %s\n", collectives.status().ToString().c_str());
    return 3;
  }
  Collectives& c = **collectives;
  CudaMemory memory;
  if (mode == "collectives") {
    absl::Status s = CheckCollectives(c, memory, {DType::kF32, DType::kF64, DType::kBF16});
    if (s.ok()) s = CheckFlatBuckets(c, memory, DType::kF32);
    if (s.ok()) fprintf(stderr, "rank %d: all checks passed\n", c.rank());
    return s.ok() ? 0 : Fail(s);
  }
  if (mode != "kill") return Fail(absl::InvalidArgumentError("unknown --mode"));
  BufferView buffer = memory.Allocate(DType::kF32, 1 << 20);
  if (absl::Status s = c.Barrier(); !s.ok()) return Fail(s);
  if (c.rank() == absl::GetFlag(FLAGS_victim)) raise(SIGKILL);
  for (int i = 0; i < 1000000; ++i) {
    absl::Status s = c.AllReduce(buffer);
    if (s.ok()) s = c.Synchronize();
    if (!s.ok()) {
      fprintf(stderr, "COLLECTIVE ERROR: %s\n", s.ToString().c_str());
      return 3;
    }
  }
  fprintf(stderr, "no error after the victim's loss\n");
  return 4;
}

}  // namespace
}  // namespace modamba

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  FLAGS_logtostderr = true;
  google::InitGoogleLogging(argv[0]);
  return modamba::Main();
}
