// The two-level process group of hybrid sharding: shard within a host,
// replicate across hosts.
//
// With G ranks per shard group, rank r belongs to shard group r / G (ranks
// [hG, (h+1)G), one host's under the launchers' rank order) and to replica
// group r % G (the ranks that hold the same shard on every host). FSDP
// gathers and reduce-scatters within the shard group and all-reduces the
// gradient shards within the replica group (trainer/fsdp.h).
#ifndef MODAMBA_TRAINER_PROCESS_GROUPS_H_
#define MODAMBA_TRAINER_PROCESS_GROUPS_H_

#include <functional>
#include <memory>

#include "absl/status/statusor.h"
#include "trainer/collectives.h"

namespace modamba {

// Connects this rank to a group of some of the job's ranks: options.rank,
// world_size and job_ranks are its place in that group, options.prefix
// names the group; the factory keeps its keys apart from the other groups'
// and sets job_prefix and job_world_size (trainer/collectives.h).
using CommFactory = std::function<absl::StatusOr<std::unique_ptr<Collectives>>(
    const CollectivesOptions& options)>;

struct HybridGroups {
  std::unique_ptr<Collectives> shard, replicas;
};

// This rank's shard and replica groups, `shard_group_size` ranks per shard
// group, connected in that order (every rank does the same, so the
// rendezvous cannot deadlock). 0 or the world size: plain FSDP, and both
// are null. Otherwise the size must divide the world size.
absl::StatusOr<HybridGroups> ConnectHybridGroups(const Collectives& all, int shard_group_size,
                                                 const CommFactory& factory);

}  // namespace modamba

#endif  // MODAMBA_TRAINER_PROCESS_GROUPS_H_
