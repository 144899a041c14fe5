#include "trainer/process_groups.h"

#include "absl/strings/str_cat.h"
#include "core/status_macros.h"

namespace modamba {

absl::StatusOr<HybridGroups> ConnectHybridGroups(const Collectives& all, int shard_group_size,
                                                 const CommFactory& factory) {
  const int world = all.world_size(), g = shard_group_size;
  HybridGroups groups;
  if (g == 0 || g == world) return groups;
  if (g < 0 || world % g != 0) {
    return absl::InvalidArgumentError(absl::StrCat("fsdp.shard_group_size ", g,
                                                   " must divide the world size ", world));
  }
  if (!factory) {
    return absl::InvalidArgumentError("fsdp.shard_group_size: this trainer cannot make subgroups");
  }
  CollectivesOptions shard;
  shard.rank = all.rank() % g;
  shard.world_size = g;
  shard.prefix = absl::StrCat("shard", all.rank() / g);
  for (int i = 0; i < g; ++i) shard.job_ranks.push_back(all.rank() / g * g + i);
  ASSIGN_OR_RETURN(groups.shard, factory(shard));
  CollectivesOptions replicas;
  replicas.rank = all.rank() / g;
  replicas.world_size = world / g;
  replicas.prefix = absl::StrCat("replica", all.rank() % g);
  for (int i = 0; i < world / g; ++i) replicas.job_ranks.push_back(i * g + all.rank() % g);
  ASSIGN_OR_RETURN(groups.replicas, factory(replicas));
  return groups;
}

}  // namespace modamba
