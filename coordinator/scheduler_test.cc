#include "coordinator/scheduler.h"

#include "gtest/gtest.h"

namespace modamba {
namespace {

v1::JobSpec Spec(const char* device, int world_size, int n_evaluators) {
  v1::JobSpec spec;
  spec.set_device(device);
  spec.set_world_size(world_size);
  spec.set_n_evaluators(n_evaluators);
  return spec;
}

TEST(SchedulerTest, StartsJobsInOrderUntilOneDoesNotFit) {
  Scheduler scheduler(/*gpus=*/0, /*cpu_slots=*/4);
  const v1::JobSpec a = Spec("cpu", 2, 1), b = Spec("cpu", 2, 0), c = Spec("cpu", 1, 0);
  auto started = scheduler.Schedule({{"a", &a}, {"b", &b}, {"c", &c}});
  // b does not fit after a; c would, but waits behind b.
  ASSERT_EQ(started.size(), 1u);
  EXPECT_EQ(started[0].first, "a");
  EXPECT_EQ(started[0].second.cpu_slots(), 3);
  EXPECT_EQ(scheduler.free_cpu_slots(), 1);
  scheduler.Release(started[0].second);
  started = scheduler.Schedule({{"b", &b}, {"c", &c}});
  ASSERT_EQ(started.size(), 2u);
  EXPECT_EQ(scheduler.free_cpu_slots(), 1);
}

TEST(SchedulerTest, GivesEachGpuWorkerItsOwnGpu) {
  Scheduler scheduler(/*gpus=*/4, /*cpu_slots=*/1);
  const v1::JobSpec a = Spec("gpu", 2, 0), b = Spec("gpu", 1, 1), c = Spec("gpu", 1, 0);
  auto started = scheduler.Schedule({{"a", &a}, {"b", &b}, {"c", &c}});
  ASSERT_EQ(started.size(), 2u);
  EXPECT_EQ(started[0].second.gpus().size(), 2);
  EXPECT_EQ(started[1].second.gpus().size(), 2);
  EXPECT_NE(started[0].second.gpus(0), started[1].second.gpus(0));
  EXPECT_EQ(scheduler.free_gpus(), 0);
  EXPECT_EQ(scheduler.free_cpu_slots(), 1);  // GPU jobs take no CPU slot
  scheduler.Release(started[0].second);
  EXPECT_EQ(scheduler.free_gpus(), 2);
}

TEST(SchedulerTest, RestoresAllocationsAndRefusesClashes) {
  Scheduler scheduler(/*gpus=*/2, /*cpu_slots=*/2);
  v1::Allocation gpu0;
  gpu0.add_gpus(0);
  ASSERT_TRUE(scheduler.Restore(gpu0).ok());
  EXPECT_FALSE(scheduler.Restore(gpu0).ok());
  v1::Allocation gpu7;
  gpu7.add_gpus(7);
  EXPECT_FALSE(scheduler.Restore(gpu7).ok());
  v1::Allocation cpus;
  cpus.set_cpu_slots(3);
  EXPECT_FALSE(scheduler.Restore(cpus).ok());
  EXPECT_EQ(scheduler.free_gpus(), 1);
}

}  // namespace
}  // namespace modamba
