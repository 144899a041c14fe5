// Collectives over GPU memory through NCCL, one process per GPU.
//
// Rank 0 makes the NCCL unique id and publishes it in the KvStore; the others
// read it and the communicator is built non-blocking, so that a rank that
// never arrives fails the others after the timeout instead of hanging them.
// Operations run on the communicator's own CUDA stream, after the work
// already queued on the compute stream (an event orders them), so layer
// all-gathers and gradient reduce-scatters overlap compute; Work::Wait makes
// the compute stream wait for the operation without blocking the host.
//
// A watchdog thread times every operation from the moment it starts on the
// GPU. One that does not finish within the timeout, or an asynchronous NCCL
// error, aborts the communicator (which releases the stuck kernels), and
// RankHealth (trainer/rank_health.h) names the lost rank in the error.
//
// NVLink multicast (NVLS) stays off: NCCL_NVLS_ENABLE is set to 0 when unset,
// and any other value is refused.
#ifndef MODAMBA_TRAINER_NCCL_COLLECTIVES_H_
#define MODAMBA_TRAINER_NCCL_COLLECTIVES_H_

#include <memory>

#include "absl/status/statusor.h"
#include "rendezvous/kv_store.h"
#include "trainer/collectives.h"

namespace modamba {

struct NcclOptions {
  CollectivesOptions group;
  // This rank's CUDA device; -1: MODAMBA_LOCAL_RANK when set, else the rank
  // modulo the number of visible devices.
  int device = -1;
  // The cudaStream_t the compute runs on (nullptr: the legacy default
  // stream). Operations start after the work queued on it; Work::Wait makes
  // it wait for them.
  void* compute_stream = nullptr;
};

// Sums are F32, F64 or BF16; all-gather and broadcast move any dtype. Fails
// with FAILED_PRECONDITION when no GPU is visible. `store` must outlive the
// communicator, and every Work must be waited on or dropped before it.
absl::StatusOr<std::unique_ptr<Collectives>> NewNcclCollectives(KvStore* store,
                                                                const NcclOptions& options);

}  // namespace modamba

#endif  // MODAMBA_TRAINER_NCCL_COLLECTIVES_H_
