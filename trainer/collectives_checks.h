// The checks the multi-process tests run inside every rank: each collective
// against exact expected values, for any Collectives implementation. Test
// values are small integers, so sums are exact in every dtype (BF16 too).
#ifndef MODAMBA_TRAINER_COLLECTIVES_CHECKS_H_
#define MODAMBA_TRAINER_COLLECTIVES_CHECKS_H_

#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "core/tensor.h"
#include "trainer/collectives.h"

namespace modamba {

// Buffers where a communicator wants them (host or device), for tests.
class TestMemory {
 public:
  virtual ~TestMemory() = default;
  // Lives as long as this object.
  virtual BufferView Allocate(DType dtype, int64_t count) = 0;
  virtual void Upload(const void* host, BufferView dst) = 0;
  virtual void Download(BufferView src, void* host) = 0;
};

std::unique_ptr<TestMemory> NewHostMemory();

// All-reduce, all-gather and reduce-scatter (both also in place), broadcast
// from every root and the barrier, on sizes that do and do not divide by the
// world size, some enqueued together and waited on out of order; then that
// each kind of wait is counted as its kind (TakeWaitTimes). Returns the
// first mismatch.
absl::Status CheckCollectives(Collectives& collectives, TestMemory& memory,
                              absl::Span<const DType> dtypes);

// One FSDP round on flat buckets: every rank gathers the full bucket from the
// shards, then reduce-scatters a full gradient bucket into its shard.
absl::Status CheckFlatBuckets(Collectives& collectives, TestMemory& memory, DType dtype);

}  // namespace modamba

#endif  // MODAMBA_TRAINER_COLLECTIVES_CHECKS_H_
