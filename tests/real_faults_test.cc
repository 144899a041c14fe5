// Faults the real trainer must survive or report under the coordinator:
// diverging training (lr 10, no clipping), local checkpoint copies on a
// long job, every stored checkpoint corrupt when a rank dies, and a rank
// the kernel kills for memory (in a memory cgroup of the test's own).
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/checkpoint.h"
#include "core/file_util.h"
#include "gtest/gtest.h"
#include "tests/cluster.h"

namespace modamba {
namespace {

class RealFaultsTest : public RealWorkersClusterTest {
 protected:
  static std::string Spec(const std::string& name, int steps, const std::string& optimizer,
                          const std::string& extra = "max_restarts: 2") {
    return absl::StrCat(R"pb(
      world_size: 2
      dataset_dir: "tri"
      checkpoint_every_steps: 5
      keep_last_checkpoints: 2
      )pb", extra, R"pb(
      train {
        model { d_model: 16 n_layer: 2 vocab_size: 1031 d_state: 4 n_modalities: 3
                route_in: true route_x: true route_dt: true route_out: true }
        optimizer { )pb", optimizer, R"pb( }
        steps: )pb", steps, R"pb( batch_size: 4 seq_len: 48 seed: 3
      }
      name: ")pb", name, "\"\n");
  }

  std::string JobDir(const v1::Job& job) { return cluster_->run_root() + "/" + job.id(); }
};

TEST_F(RealFaultsTest, DivergingTrainingFailsNamingTheStepAndIsNotRetried) {
  auto job = cluster_->Submit(Spec("diverge", 60, "lr: 10 grad_clip: 0 warmup_steps: 0"));
  ASSERT_TRUE(job.ok()) << job.status();
  auto done = cluster_->WaitFinished(job->id(), absl::Seconds(120));
  ASSERT_TRUE(done.ok()) << done.status();
  ASSERT_EQ(done->state(), v1::JOB_FAILED) << done->reason();
  EXPECT_EQ(done->restarts(), 0) << done->reason();
  EXPECT_TRUE(absl::StrContains(done->reason(), "reported failure: step ")) << done->reason();
  EXPECT_TRUE(absl::StrContains(done->reason(), "non-finite loss") ||
              absl::StrContains(done->reason(), "gradient norm"))
      << done->reason();
}

TEST_F(RealFaultsTest, LocalCopiesFollowRetentionAndResumeDownloadsAreRemoved) {
  auto job = cluster_->Submit(Spec("long", 40, "lr: 3e-3 warmup_steps: 3"));
  ASSERT_TRUE(job.ok()) << job.status();
  auto running = cluster_->WaitJob(job->id(), [](const v1::Job& j) {
    return j.latest_checkpoint_step() >= 10 && j.step() >= 12;
  }, absl::Seconds(120));
  ASSERT_TRUE(running.ok()) << running.status();
  for (const v1::WorkerInfo& w : running->workers()) {
    if (w.ref().role() == v1::ROLE_TRAINER && w.ref().rank() == 1) {
      ASSERT_EQ(kill(static_cast<pid_t>(w.pid()), SIGKILL), 0);
    }
  }
  auto done = cluster_->WaitFinished(job->id(), absl::Seconds(180));
  ASSERT_TRUE(done.ok()) << done.status();
  ASSERT_EQ(done->state(), v1::JOB_SUCCEEDED) << done->reason();
  EXPECT_GE(done->restarts(), 1);
  EXPECT_EQ(done->reason(), "");  // a success keeps no restart's text
  // 8 checkpoints were written; 2 are kept, here as in the store.
  EXPECT_EQ(CheckpointSteps(JobDir(*job) + "/trainer-checkpoints"),
            (std::vector<int64_t>{35, 40}));
  for (int rank : {0, 1}) {
    const std::string resume = absl::StrCat(JobDir(*job), "/trainer-", rank, "/resume");
    EXPECT_TRUE(CheckpointSteps(resume).empty()) << resume;
  }
}

TEST_F(RealFaultsTest, EveryStoredCheckpointCorruptMeansAFreshStart) {
  // Each corrupt checkpoint costs a restart when its download fails.
  auto job = cluster_->Submit(Spec("corrupt", 30, "lr: 3e-3 warmup_steps: 3", "max_restarts: 6"));
  ASSERT_TRUE(job.ok()) << job.status();
  auto running = cluster_->WaitJob(job->id(), [](const v1::Job& j) {
    return j.latest_checkpoint_step() >= 10 && j.step() >= 12;
  }, absl::Seconds(120));
  ASSERT_TRUE(running.ok()) << running.status();
  // Freeze both ranks, flip a byte of every stored shard, then kill a rank.
  std::vector<pid_t> ranks;
  for (const v1::WorkerInfo& w : running->workers()) {
    if (w.ref().role() == v1::ROLE_TRAINER) ranks.push_back(static_cast<pid_t>(w.pid()));
  }
  ASSERT_EQ(ranks.size(), 2u);
  for (pid_t pid : ranks) ASSERT_EQ(kill(pid, SIGSTOP), 0);
  int corrupted = 0;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(
           cluster_->checkpoint_root() + "/" + job->id())) {
    if (!absl::EndsWith(entry.path().string(), ".safetensors")) continue;
    std::string bytes = ReadFile(entry.path().string()).value_or("");
    ASSERT_FALSE(bytes.empty()) << entry.path();
    bytes[bytes.size() / 2] ^= 1;
    ASSERT_TRUE(WriteFileAtomic(entry.path().string(), bytes).ok());
    ++corrupted;
  }
  EXPECT_GE(corrupted, 4);
  ASSERT_EQ(kill(ranks[1], SIGKILL), 0);
  ASSERT_EQ(kill(ranks[0], SIGCONT), 0);
  auto done = cluster_->WaitFinished(job->id(), absl::Seconds(180));
  ASSERT_TRUE(done.ok()) << done.status();
  // Training started again from step 1 (a second train point for it), not
  // from the trainers' local copies.
  auto metrics = cluster_->Metrics(job->id());
  ASSERT_TRUE(metrics.ok());
  int first_steps = 0;
  for (const v1::MetricPoint& p : *metrics) first_steps += p.kind() == "train" && p.step() == 1;
  EXPECT_GE(first_steps, 2);
  EXPECT_EQ(done->state(), v1::JOB_SUCCEEDED) << done->reason();
}

// The test process, and so the coordinator and the workers it starts, in a
// memory cgroup of its own (cgroup v1), limited to `bytes`; left and removed
// by the destructor. UNAVAILABLE where cgroups cannot be made.
class MemoryLimit {
 public:
  static absl::StatusOr<std::unique_ptr<MemoryLimit>> Enter(int64_t bytes) {
    const std::string root = "/sys/fs/cgroup/memory";
    const std::string dir = absl::StrCat(root, "/modamba-test-", getpid());
    if (mkdir(dir.c_str(), 0755) != 0) {
      return absl::UnavailableError(absl::StrCat("cannot make ", dir, ": ", std::strerror(errno)));
    }
    std::unique_ptr<MemoryLimit> limit(new MemoryLimit(root, dir));
    for (const char* file : {"memory.limit_in_bytes", "memory.memsw.limit_in_bytes"}) {
      const std::string path = absl::StrCat(dir, "/", file);
      if (FileExists(path) && !Write(path, absl::StrCat(bytes))) {
        return absl::UnavailableError(absl::StrCat("cannot write ", path));
      }
    }
    if (!Write(dir + "/cgroup.procs", absl::StrCat(getpid()))) {
      return absl::UnavailableError(absl::StrCat("cannot enter ", dir));
    }
    return limit;
  }
  ~MemoryLimit() {
    Write(root_ + "/cgroup.procs", absl::StrCat(getpid()));
    rmdir(dir_.c_str());
  }

 private:
  MemoryLimit(std::string root, std::string dir) : root_(std::move(root)), dir_(std::move(dir)) {}
  static bool Write(const std::string& path, const std::string& text) {
    std::ofstream out(path);
    out << text;
    out.flush();
    return static_cast<bool>(out);
  }
  std::string root_, dir_;
};

class RealOomTest : public RealFaultsTest {
 protected:
  void SetUp() override {
    auto limit = MemoryLimit::Enter(int64_t{384} << 20);
    if (!limit.ok()) GTEST_SKIP() << limit.status();
    limit_ = std::move(*limit);
    RealFaultsTest::SetUp();
  }
  void TearDown() override {
    RealFaultsTest::TearDown();
    cluster_.reset();  // its processes end inside the cgroup
    limit_.reset();
  }
  std::unique_ptr<MemoryLimit> limit_;
};

TEST_F(RealOomTest, AWorkerKilledForMemoryIsReportedAsSuchAndNotRetriedForever) {
  // About 0.9 GiB of activations for one rank: more than the cgroup allows.
  auto job = cluster_->Submit(absl::StrCat(R"pb(
    world_size: 1
    dataset_dir: "tri"
    max_restarts: 5
    train {
      model { d_model: 16 n_layer: 2 vocab_size: 1031 d_state: 4 n_modalities: 3 }
      optimizer { lr: 3e-3 }
      steps: 5 batch_size: 1024 seq_len: 48 seed: 3
    }
    name: "hungry"
  )pb"));
  ASSERT_TRUE(job.ok()) << job.status();
  auto done = cluster_->WaitFinished(job->id(), absl::Seconds(120));
  ASSERT_TRUE(done.ok()) << done.status();
  ASSERT_EQ(done->state(), v1::JOB_FAILED) << done->reason();
  EXPECT_TRUE(absl::StrContains(done->reason(),
                                "trainer-0 was killed by the kernel's OOM killer: out of memory "
                                "(peak RSS "))
      << done->reason();
  EXPECT_TRUE(absl::StrContains(done->reason(), "the same failure twice in a row")) << done->reason();
  EXPECT_EQ(done->restarts(), 1);
}

}  // namespace
}  // namespace modamba
