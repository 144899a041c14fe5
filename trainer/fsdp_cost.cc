#include "trainer/fsdp_cost.h"

#include <algorithm>
#include <string>

#include "absl/strings/str_cat.h"

namespace modamba {
namespace {

absl::Status AtLeast(const char* field, double value, double low) {
  if (value >= low) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(field, " is ", value, "; must be >= ", low));
}

}  // namespace

double CollectiveSeconds(const FsdpCostInputs& in, double bytes) {
  if (in.ranks == 1) return 0;  // one rank holds everything: no collective
  return in.latency_s + bytes * (in.ranks - 1) / in.ranks / in.bus_bandwidth;
}

absl::StatusOr<FsdpPlan> PlanBuckets(const FsdpCostInputs& in) {
  for (absl::Status s : {AtLeast("ranks", in.ranks, 1), AtLeast("layers", in.layers, 1),
                         AtLeast("layer_bytes", in.layer_bytes, 0),
                         AtLeast("head_bytes", in.head_bytes, 0),
                         AtLeast("latency_s", in.latency_s, 0),
                         AtLeast("layer_forward_s", in.layer_forward_s, 0),
                         AtLeast("layer_backward_s", in.layer_backward_s, 0),
                         AtLeast("other_compute_s", in.other_compute_s, 0),
                         AtLeast("single_gpu_step_s", in.single_gpu_step_s, 0)}) {
    if (!s.ok()) return s;
  }
  if (!(in.bus_bandwidth > 0)) {
    return absl::InvalidArgumentError(absl::StrCat("bus_bandwidth is ", in.bus_bandwidth,
                                                   "; must be > 0"));
  }
  FsdpPlan plan;
  const double head = CollectiveSeconds(in, in.head_bytes);
  for (int k = 1; k <= in.layers; ++k) {
    // Bucket i holds layers(i) layers; the last may hold fewer.
    const int buckets = (in.layers + k - 1) / k;
    auto layers = [&](int i) { return std::min(k, in.layers - i * k); };
    auto comm = [&](int i) { return CollectiveSeconds(in, layers(i) * in.layer_bytes); };
    double exposed = head + comm(0);
    for (int i = 0; i + 1 < buckets; ++i) {
      exposed += std::max(0.0, comm(i + 1) - layers(i) * in.layer_forward_s);
    }
    for (int i = buckets - 1; i >= 1; --i) {  // bucket i computes; i + 1 reduces, i - 1 gathers
      const double reduce = i + 1 < buckets ? comm(i + 1) : 0;
      exposed += std::max(0.0, reduce + comm(i - 1) - layers(i) * in.layer_backward_s);
    }
    // Bucket 0's backward has the reduce-scatter of bucket 1 behind it.
    exposed += std::max(0.0, (buckets > 1 ? comm(1) : 0) - layers(0) * in.layer_backward_s);
    exposed += comm(0) + head;
    FsdpCostPoint p;
    p.layers_per_bucket = k;
    p.collective_s = comm(0);
    p.compute_s = in.layers * (in.layer_forward_s + in.layer_backward_s) + in.other_compute_s;
    p.exposed_s = exposed;
    p.step_s = p.compute_s + p.exposed_s;
    if (in.single_gpu_step_s > 0) p.efficiency = in.single_gpu_step_s / (in.ranks * p.step_s);
    plan.points.push_back(p);
    if (p.step_s < plan.points[plan.best].step_s) plan.best = static_cast<int>(plan.points.size()) - 1;
  }
  return plan;
}

}  // namespace modamba
