// Fully sharded data parallelism over a model's buckets (one per layer, plus
// bucket 0 for the embedding, head and final norm; see Param::bucket).
//
// Each rank keeps only its 1/N shard of every bucket's parameters, gradients
// and AdamW moments (flat, padded: trainer/flat_bucket.h). Around the model's
// use of a bucket (BucketHooks) it all-gathers the bucket into a full buffer
// and points the Params at it, prefetching the next bucket on the
// communication stream; after a bucket's backward it reduce-scatters the
// gradients into the shard and frees the full buffers. The optimizer then
// updates the local shards only.
#ifndef MODAMBA_TRAINER_FSDP_H_
#define MODAMBA_TRAINER_FSDP_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/layers.h"
#include "core/optimizer.h"
#include "proto/config.pb.h"
#include "trainer/collectives.h"
#include "trainer/flat_bucket.h"

namespace modamba {

// A gradient norm whose square overflows float32 (AdamW's second moment
// would become infinite): treated as non-finite.
inline constexpr double kMaxGradNorm = 1.8e19;

class Fsdp : public BucketHooks {
 public:
  // `params` must hold identical values on every rank (same seed); their
  // full-size storage is released once sharded.
  static absl::StatusOr<std::unique_ptr<Fsdp>> Create(ParamSet* params, Collectives* comm,
                                                      const v1::OptimizerConfig& optimizer);

  absl::Status BeforeForward(int bucket) override;
  absl::Status AfterForward(int bucket) override;
  absl::Status BeforeBackward(int bucket) override;
  absl::Status AfterBackward(int bucket) override;

  // Waits for the step's gradient reductions, then clips (by the global
  // norm) and applies AdamW to the local shards and zeroes their gradients.
  // `step` is 1-based. When any rank passes `skip` (its loss is not
  // finite), or the global norm is not finite, every rank only zeroes its
  // gradients (info.applied is false): a non-finite gradient never reaches
  // the parameters or the moments. So does a norm of kMaxGradNorm or more.
  absl::StatusOr<OptimizerStepInfo> Step(int64_t step, int64_t total_steps, bool skip = false);
  // Whether every rank's parameter and moment shards are finite (one
  // all-reduce; every rank gets the same answer).
  absl::StatusOr<bool> StateFinite();

  // Sharded checkpoint: this rank's shard file in `dir` (rank 0 also writes
  // layout.json, the bucket layout). `dir` must exist.
  absl::Status SaveShard(const std::string& dir) const;
  // Loads a sharded checkpoint written by any number of ranks, resharding.
  absl::Status LoadShards(const std::string& dir);
  // The consolidated parameters by name (gathered to every rank), e.g. to
  // export one safetensors file.
  absl::StatusOr<std::vector<std::pair<std::string, Tensor>>> Consolidated();

  int num_buckets() const { return static_cast<int>(buckets_.size()); }
  // Bytes of the persistent per-rank state (shards of params, grads, m, v).
  int64_t shard_bytes() const;

 private:
  struct Bucket {
    std::vector<Param*> params;
    std::unique_ptr<FlatLayout> layout;
    Tensor value, grad, m, v;  // this rank's shards
    Tensor full, full_grad;    // while gathered
    std::unique_ptr<Work> gathering;
    // A gradient reduce-scatter in flight: keeps its buffers alive.
    std::unique_ptr<Work> reducing;
    Tensor reducing_full, reduced;
  };

  Fsdp(ParamSet* params, Collectives* comm, const v1::OptimizerConfig& optimizer)
      : params_(params), comm_(comm), optimizer_(optimizer) {}
  absl::Status StartGather(int b);
  absl::Status Gather(int b);
  void Release(int b);
  absl::Status FinishReductions();
  // Sums `values` element-wise over the ranks.
  absl::Status SumOverRanks(std::vector<double>* values);
  // Points the bucket's parameter gradients into its full gradient buffer,
  // which it creates (zeroed) first.
  void MakeFullGrad(Bucket& bucket);
  // One rank holds every shard whole: the "gathered" bucket is the shard
  // itself and gradients accumulate straight into it (no copies).
  bool single() const { return comm_->world_size() == 1; }

  ParamSet* params_;
  Collectives* comm_;
  v1::OptimizerConfig optimizer_;
  std::vector<Bucket> buckets_;
};

}  // namespace modamba

#endif  // MODAMBA_TRAINER_FSDP_H_
