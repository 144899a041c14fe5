// 200 concurrent status requests over gRPC and 200 over HTTP while a job
// trains: every one is answered. Latencies are printed (p50, p99, max), never
// asserted.
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "tests/cluster.h"

namespace modamba {
namespace {

constexpr int kRequests = 200;

void PrintLatencies(const char* what, std::vector<double> ms) {
  std::sort(ms.begin(), ms.end());
  auto at = [&](double q) {
    return ms[std::min(ms.size() - 1, static_cast<size_t>(q * ms.size()))];
  };
  printf("%-34s n=%zu  p50 %7.2f ms  p99 %7.2f ms  max %7.2f ms\n", what, ms.size(), at(0.5),
         at(0.99), ms.back());
}

TEST(LoadTest, TwoHundredConcurrentStatusRequestsAreAllAnswered) {
  auto cluster = Cluster::Start();
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  Cluster& c = **cluster;
  const std::string dataset = c.MakeDataset("busy", "step_ms=10\n");
  auto job = c.Submit(Cluster::Spec("busy", dataset, 100000, 2, 1, 20));
  ASSERT_TRUE(job.ok()) << job.status();
  ASSERT_TRUE(c.WaitJob(job->id(), [](const v1::Job& j) { return j.step() >= 30; }).ok());

  // Each round fires kRequests requests at once from as many threads.
  auto round = [&](const char* what, const std::function<bool()>& request) {
    std::vector<double> latencies(kRequests);
    std::atomic<int> failures{0};
    std::atomic<bool> go{false};
    std::vector<std::thread> threads;
    for (int i = 0; i < kRequests; ++i) {
      threads.emplace_back([&, i] {
        while (!go) std::this_thread::yield();
        const absl::Time start = absl::Now();
        if (!request()) ++failures;
        latencies[i] = absl::ToDoubleMilliseconds(absl::Now() - start);
      });
    }
    go = true;
    for (std::thread& t : threads) t.join();
    EXPECT_EQ(failures, 0) << what;
    PrintLatencies(what, latencies);
  };

  round("gRPC JobService.GetJob", [&] {
    grpc::ClientContext context;
    c.Prepare(&context);
    v1::GetJobRequest request;
    request.set_job_id(job->id());
    v1::Job answer;
    return c.jobs()->GetJob(&context, request, &answer).ok() && answer.step() > 0;
  });
  round("HTTP GET /api/jobs/{id}", [&] {
    auto answer = c.Http("GET", "/api/jobs/" + job->id());
    return answer.ok() && answer->status == 200;
  });
  round("HTTP GET /api/jobs/{id}/metrics", [&] {
    auto answer = c.Http("GET", "/api/jobs/" + job->id() + "/metrics");
    return answer.ok() && answer->status == 200;
  });

  // Training went on meanwhile.
  auto still = c.GetJob(job->id());
  ASSERT_TRUE(still.ok());
  EXPECT_EQ(still->state(), v1::JOB_RUNNING);
  EXPECT_EQ(still->restarts(), 0);
}

}  // namespace
}  // namespace modamba
