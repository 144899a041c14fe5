// The Slurm launcher's requests and state words, without a cluster
// (tests/slurm_test.cc runs it against a real Slurm).
#include "coordinator/slurm_launcher.h"

#include "absl/strings/str_join.h"
#include "gtest/gtest.h"

namespace modamba {
namespace {

TEST(SlurmLauncherTest, AsksForTheGroupsNodesGpusAndTime) {
  Placement placement;
  placement.nodes = 2;
  placement.tasks_per_node = 4;
  placement.gpus_per_task = 1;
  placement.time_limit_minutes = 90;
  placement.cpus_per_task = 8;
  EXPECT_EQ(
      absl::StrJoin(SbatchCommand(placement, "m-job-1-trainers", "gpu", "logs/s-%j.log"), " "),
      "sbatch --parsable --no-requeue --job-name=m-job-1-trainers --nodes=2 "
      "--ntasks-per-node=4 --output=logs/s-%j.log --gpus-per-task=1 --cpus-per-task=8 "
      "--partition=gpu "
      "--time=90 --wrap=exec sleep infinity");
  // The spec's partition wins over the coordinator's; CPU jobs ask for no GPU
  // and, without a limit, for the partition's.
  placement.partition = "big";
  placement.gpus_per_task = 0;
  placement.time_limit_minutes = 0;
  placement.cpus_per_task = 0;
  EXPECT_EQ(absl::StrJoin(SbatchCommand(placement, "n", "gpu", "logs/s-%j.log"), " "),
            "sbatch --parsable --no-requeue --job-name=n --nodes=2 --ntasks-per-node=4 "
            "--output=logs/s-%j.log --partition=big --wrap=exec sleep infinity");
}

TEST(SlurmLauncherTest, QueuedAndAliveStates) {
  for (const char* s : {"PENDING", "CONFIGURING"}) {
    EXPECT_TRUE(SlurmJobQueued(s)) << s;
    EXPECT_TRUE(SlurmJobAlive(s)) << s;
  }
  EXPECT_TRUE(SlurmJobAlive("RUNNING"));
  EXPECT_FALSE(SlurmJobQueued("RUNNING"));
  for (const char* s : {"NODE_FAIL", "PREEMPTED", "TIMEOUT", "CANCELLED", "COMPLETED"}) {
    EXPECT_FALSE(SlurmJobAlive(s)) << s;
  }
}

TEST(SlurmLauncherTest, RefusesAProcessWithoutPlacement) {
  SlurmLauncher launcher({});
  ProcessSpec spec;
  spec.argv = {"true"};
  EXPECT_EQ(launcher.Start(spec).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace modamba
