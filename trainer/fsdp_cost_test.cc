#include "trainer/fsdp_cost.h"

#include "gtest/gtest.h"

namespace modamba {
namespace {

// 4 ranks, 4 layers of 300 MB at 100 GB/s bus bandwidth: one layer's
// collective moves 300e6 * 3/4 bytes in 2.25 ms, plus 0.25 ms latency.
FsdpCostInputs Inputs() {
  FsdpCostInputs in;
  in.ranks = 4;
  in.layers = 4;
  in.layer_bytes = 300e6;
  in.head_bytes = 0;
  in.bus_bandwidth = 100e9;
  in.latency_s = 0.25e-3;
  in.layer_forward_s = 3e-3;
  in.layer_backward_s = 6e-3;
  in.other_compute_s = 4e-3;
  in.single_gpu_step_s = 0.16;
  return in;
}

TEST(FsdpCost, CollectiveTimeIsLatencyPlusBusBytes) {
  FsdpCostInputs in = Inputs();
  EXPECT_DOUBLE_EQ(CollectiveSeconds(in, 300e6), 2.5e-3);
  in.ranks = 1;
  EXPECT_EQ(CollectiveSeconds(in, 300e6), 0);
}

TEST(FsdpCost, HiddenLayersExposeOnlyTheFirstGatherAndTheTail) {
  auto plan = PlanBuckets(Inputs());
  ASSERT_TRUE(plan.ok()) << plan.status();
  ASSERT_EQ(plan->points.size(), 4u);
  const FsdpCostPoint& one = plan->points[0];
  // 2.5 ms gathers hide behind 3 ms forwards; 5 ms (reduce + gather) behind
  // 6 ms backwards. Exposed: the first gather and the last reduce-scatter,
  // each after the head's (latency only, 0.25 ms).
  EXPECT_DOUBLE_EQ(one.collective_s, 2.5e-3);
  EXPECT_DOUBLE_EQ(one.compute_s, 40e-3);
  EXPECT_NEAR(one.exposed_s, 5.5e-3, 1e-12);
  EXPECT_NEAR(one.step_s, 45.5e-3, 1e-12);
  EXPECT_NEAR(one.efficiency, 0.16 / (4 * 45.5e-3), 1e-12);
  // Two layers a bucket: 4.75 ms collectives; the first and the tail grow.
  const FsdpCostPoint& two = plan->points[1];
  EXPECT_NEAR(two.exposed_s, 2 * 4.75e-3 + 2 * 0.25e-3, 1e-12);
  EXPECT_EQ(plan->chosen().layers_per_bucket, 1);
}

TEST(FsdpCost, LatencyBoundLayersAreGrouped) {
  FsdpCostInputs in = Inputs();
  in.layers = 12;
  in.layer_bytes = 1e6;      // 7.5 us of transfer
  in.latency_s = 1e-3;       // far more than a layer's 0.3 ms forward
  in.layer_forward_s = 0.3e-3;
  in.layer_backward_s = 0.6e-3;
  auto plan = PlanBuckets(in);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_GT(plan->chosen().layers_per_bucket, 1);
  EXPECT_LT(plan->chosen().exposed_s, plan->points[0].exposed_s);
}

TEST(FsdpCost, NoCommunicationOnOneRank) {
  FsdpCostInputs in = Inputs();
  in.ranks = 1;
  auto plan = PlanBuckets(in);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->chosen().exposed_s, 0);
  EXPECT_EQ(plan->chosen().layers_per_bucket, 1);
}

TEST(FsdpCost, BadInputsNameTheField) {
  FsdpCostInputs in = Inputs();
  in.bus_bandwidth = 0;
  EXPECT_NE(PlanBuckets(in).status().message().find("bus_bandwidth"), std::string::npos);
  in = Inputs();
  in.layers = 0;
  EXPECT_NE(PlanBuckets(in).status().message().find("layers"), std::string::npos);
}

}  // namespace
}  // namespace modamba
