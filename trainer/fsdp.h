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
//
// The schedule (FsdpOptions::overlap): a communication bucket is a run of
// consecutive layers whose collectives are issued together. While one
// bucket computes, the next one's all-gather is in flight (the bucket above
// it in the forward, below it in the backward); a bucket's reduce-scatter is
// issued as soon as its lowest layer's backward is done and is waited on
// only when its gradients are next needed (the next micro-batch, or Step).
// The collectives run on the communicator's own stream (NCCL) or thread
// (Gloo), ordered by Work handles. The serial schedule waits on every
// collective where it is issued and prefetches nothing; both do the same
// arithmetic in the same order, so they agree bit for bit.
//
// Hybrid sharding: `comm` is one shard group (a host's ranks); the ranks
// holding the same shard in the other groups all-reduce the reduce-scattered
// gradients before the update, so every group applies the same one.
//
// The schedule (FsdpOptions::overlap): a communication bucket is a run of
// consecutive layers whose collectives are issued together. While one
// bucket computes, the next one's all-gather is in flight (the bucket above
// it in the forward, below it in the backward); a bucket's reduce-scatter is
// issued as soon as its last layer's backward is done and is waited on only
// when the gradients are next needed (the next micro-batch, or Step). The
// collectives run on the communicator's own stream (NCCL) or thread (Gloo);
// Work handles order them. The serial schedule waits on every collective
// where it is issued; both do the same arithmetic in the same order, so
// they agree bit for bit.
//
// Hybrid sharding: `comm` is one shard group (a host's ranks); the ranks
// holding the same shard on the other hosts all-reduce the reduce-scattered
// gradients before the update, so every group applies the same one.
#ifndef MODAMBA_TRAINER_FSDP_H_
#define MODAMBA_TRAINER_FSDP_H_

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "core/layers.h"
#include "core/optimizer.h"
#include "proto/config.pb.h"
#include "trainer/collectives.h"
#include "trainer/flat_bucket.h"

namespace modamba {

// A gradient norm whose square overflows float32 (AdamW's second moment
// would become infinite): treated as non-finite.
inline constexpr double kMaxGradNorm = 1.8e19;

struct FsdpOptions {
  bool overlap = true;
  // Layers per communication bucket (bucket 0, the embedding and head, is
  // always alone).
  int layers_per_bucket = 1;
  // Hybrid sharding: the communicator over the ranks that hold this rank's
  // shard on the other groups, and the one over all ranks (the gradient
  // norm and the skip decision). Both null for plain FSDP over `comm`.
  Collectives* replicas = nullptr;
  Collectives* all = nullptr;
  // Called after each prefetch is issued, with its communication bucket
  // (fault injection in tests).
  std::function<void(int group)> on_prefetch;
};

// The options of a TrainConfig's FsdpConfig (the communicators left null).
absl::StatusOr<FsdpOptions> FsdpOptionsFrom(const v1::FsdpConfig& config);

// One rank's step, by where its time went (seconds). Exposed communication
// is waiting on FSDP's transfers (all-gathers, reduce-scatters, the hybrid
// replicas' all-reduce); idle is waiting on the step's small all-reduces
// (loss denominators, gradient norm), that is on slower ranks; compute is
// the rest. Gloo: the host thread's waits; NCCL: the compute stream's stalls.
struct StepProfile {
  double step_s = 0, compute_s = 0, exposed_comm_s = 0, idle_s = 0;
};

class Fsdp : public BucketHooks {
 public:
  // `params` must hold identical values on every rank (same seed); their
  // full-size storage is released once sharded.
  static absl::StatusOr<std::unique_ptr<Fsdp>> Create(ParamSet* params, Collectives* comm,
                                                      const v1::OptimizerConfig& optimizer,
                                                      const FsdpOptions& options = {});

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

  // Starts timing a step: the wait times so far are dropped.
  void StartProfile();
  // Every rank's profile of the step since StartProfile, indexed by rank
  // over all ranks (one small all-reduce).
  absl::StatusOr<std::vector<StepProfile>> EndProfile();

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
    // Gradients complete, waiting for the rest of their communication bucket.
    Tensor done_grad;
    // A gradient reduce-scatter in flight: keeps its buffers alive.
    std::unique_ptr<Work> reducing;
    Tensor reducing_full, reduced;
  };

  Fsdp(ParamSet* params, Collectives* comm, const v1::OptimizerConfig& optimizer,
       const FsdpOptions& options)
      : params_(params), comm_(comm), optimizer_(optimizer), options_(options) {}
  // Communication buckets: 0 is bucket 0; g >= 1 holds layer buckets
  // [First(g), Last(g)].
  int GroupOf(int b) const { return b == 0 ? 0 : 1 + (b - 1) / options_.layers_per_bucket; }
  int First(int g) const { return g == 0 ? 0 : 1 + (g - 1) * options_.layers_per_bucket; }
  int Last(int g) const;
  int num_groups() const { return GroupOf(num_buckets() - 1) + 1; }
  // The serial schedule waits for `work` at once.
  std::unique_ptr<Work> Issue(std::unique_ptr<Work> work);
  // Issues the all-gathers of buckets [first, last] not yet gathered.
  absl::Status StartGather(int first, int last);
  absl::Status Prefetch(int group);
  // Bucket b's parameters, gathered; when b is not yet gathered, [first,
  // last] (b and the rest of its communication bucket in the direction of
  // travel) are gathered with it.
  absl::Status Gather(int b, int first, int last);
  void Release(int b);
  absl::Status StartReduction(Bucket& bucket);
  // Waits for the bucket's reduction in flight and adds it to the shard.
  absl::Status FinishReduction(Bucket& bucket);
  absl::Status FinishReductions();
  // The communicator over all ranks.
  Collectives* all() const { return options_.all != nullptr ? options_.all : comm_; }
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
  FsdpOptions options_;
  std::vector<Bucket> buckets_;
  absl::Time profile_start_;
};

}  // namespace modamba

#endif  // MODAMBA_TRAINER_FSDP_H_
