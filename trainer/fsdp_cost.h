// A small cost model of one FSDP step, to size communication buckets
// (FsdpConfig.layers_per_bucket) and to state the floor a model and a GPU
// count can reach.
//
// A collective over N ranks moving a bucket of S bytes (all-gather's output,
// reduce-scatter's input) takes
//
//     T(S) = latency + S (N - 1) / N / bus_bandwidth
//
// (bus bandwidth as nccl-tests and collectives_bench report it; latency is
// the fixed cost of one collective: launch, events, stream waits). All
// collectives share one communication stream, so they run one at a time.
// With layers grouped k to a bucket (G = ceil(L / k) buckets) and the
// schedule of trainer/fsdp.h (the next bucket's gather in flight while one
// computes), the exposed communication of a step is
//
//   forward:  T(head) + T(bucket 1), then for each next bucket
//             max(0, T(next) - compute of this bucket's layers' forward);
//   backward: the top bucket is still gathered from the forward; then for
//             each bucket max(0, T(reduce-scatter of the one above)
//             + T(gather of the one below) - its layers' backward);
//   tail:     the last bucket's and the head's reduce-scatters (Step waits).
//
// Larger buckets pay the latency fewer times but expose a longer first
// gather and tail, and hold k layers' full parameters and gradients at once.
// The step is compute plus exposed communication; the strong-scaling
// efficiency against one GPU is single_gpu_step / (N x step).
#ifndef MODAMBA_TRAINER_FSDP_COST_H_
#define MODAMBA_TRAINER_FSDP_COST_H_

#include <vector>

#include "absl/status/statusor.h"

namespace modamba {

struct FsdpCostInputs {
  int ranks = 1;                 // N, the ranks sharing the buckets
  int layers = 1;                // L
  double layer_bytes = 0;        // one layer's parameters, full size
  double head_bytes = 0;         // bucket 0: embedding, head, final norm
  double bus_bandwidth = 1;      // bytes per second
  double latency_s = 0;          // per collective
  double layer_forward_s = 0;    // one layer's forward on this rank's share of the batch
  double layer_backward_s = 0;   // its backward
  double other_compute_s = 0;    // the rest of the step (embedding, head, loss, optimizer)
  double single_gpu_step_s = 0;  // one GPU's step on the whole batch (0: no efficiency)
};

struct FsdpCostPoint {
  int layers_per_bucket = 1;
  double collective_s = 0;  // one full bucket's all-gather (or reduce-scatter)
  double compute_s = 0;
  double exposed_s = 0;
  double step_s = 0;
  double efficiency = 0;    // 0 without single_gpu_step_s
};

struct FsdpPlan {
  std::vector<FsdpCostPoint> points;  // layers_per_bucket = 1 .. layers
  int best = 0;                       // index of the fastest (the smallest k on ties)
  const FsdpCostPoint& chosen() const { return points[best]; }
};

// Collective time of `bytes` over the inputs' ranks.
double CollectiveSeconds(const FsdpCostInputs& in, double bytes);

// The predicted step for every bucket size, and the fastest. Fails on
// inputs out of range, naming the field.
absl::StatusOr<FsdpPlan> PlanBuckets(const FsdpCostInputs& in);

}  // namespace modamba

#endif  // MODAMBA_TRAINER_FSDP_COST_H_
