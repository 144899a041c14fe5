// The coordinator with the real workers (modamba-trainer, Gloo between ranks;
// modamba-evaluator) on a small tri-modal dataset: a job of Mixture-of-Mamba
// or of Mixture-of-Transformers blocks finishes with its checkpoints
// verified, delivered to the evaluator and evaluated, and a trainer rank
// killed with kill -9 is restarted from the newest checkpoint and ends at the
// same final loss as an undisturbed run, bit for bit. The jobs' directories
// are run directories that `modamba compare` reads (trainer/run_log.h).
#include <signal.h>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/cluster.h"
#include "tools/compare/compare.h"

namespace modamba {
namespace {

class RealWorkersTest : public RealWorkersClusterTest {
 protected:
  static constexpr char kMoM[] =
      "d_state: 4 route_in: true route_x: true route_dt: true route_out: true";
  static constexpr char kMoT[] =
      "architecture: TRANSFORMER n_head: 2 route_qkv: true route_attn_out: true route_ffn_in: true "
      "route_ffn_out: true route_norms: true";

  // `blocks`: the model's block fields (kMoM or kMoT).
  static std::string Spec(const std::string& name, int evaluators, const char* blocks = kMoM) {
    return absl::StrCat(R"pb(
      world_size: 2
      dataset_dir: "tri"
      checkpoint_every_steps: 10
      max_restarts: 2
      n_evaluators: )pb", evaluators, R"pb(
      train {
        model { d_model: 16 n_layer: 2 vocab_size: 1031 n_modalities: 3 )pb", blocks, R"pb( }
        optimizer { lr: 3e-3 warmup_steps: 3 }
        steps: 40 batch_size: 4 seq_len: 48 seed: 3 eval_every: 10 eval_batches: 1
      }
      name: ")pb", name, "\"\n");
  }

  // A job of `blocks` trains to its end; every checkpoint is complete and the
  // last one evaluated, with validation points for every modality.
  void ExpectJobTrainedAndEvaluated(const std::string& name, const char* blocks,
                                    const std::string& variant) {
    auto job = cluster_->Submit(Spec(name, 1, blocks));
    ASSERT_TRUE(job.ok()) << job.status();
    auto done = cluster_->WaitFinished(job->id(), absl::Seconds(120));
    ASSERT_TRUE(done.ok()) << done.status();
    ASSERT_EQ(done->state(), v1::JOB_SUCCEEDED) << done->reason();
    EXPECT_EQ(done->step(), 40);
    auto checkpoints = cluster_->Checkpoints(job->id());
    ASSERT_TRUE(checkpoints.ok());
    ASSERT_FALSE(checkpoints->empty());
    for (const v1::CheckpointInfo& c : *checkpoints) {
      EXPECT_TRUE(c.complete()) << c.step();
      // Rank 0's shard, layout and manifest, and rank 1's shard.
      EXPECT_EQ(c.files_size(), 4) << c.step();
    }
    EXPECT_TRUE(checkpoints->back().evaluated());
    // Train and validation points arrived for every modality.
    auto metrics = cluster_->Metrics(job->id());
    ASSERT_TRUE(metrics.ok());
    int val = 0;
    for (const v1::MetricPoint& p : *metrics) {
      if (p.kind() != "val") continue;
      ++val;
      for (const char* m : {"text", "image", "speech"}) EXPECT_TRUE(p.losses().count(m)) << m;
    }
    EXPECT_EQ(val, 4);
    // The job's directory is a run directory `modamba compare` reads.
    auto run = LoadRun(cluster_->run_root() + "/" + job->id());
    ASSERT_TRUE(run.ok()) << run.status();
    EXPECT_EQ(run->setting, "trimodal");
    EXPECT_EQ(run->variant, variant);
    ASSERT_EQ(run->val.size(), 4u);
    EXPECT_EQ(run->val.back().step, 40);
    EXPECT_TRUE(run->val.back().loss.count("speech"));
  }
};

TEST_F(RealWorkersTest, JobFinishesAndEveryCheckpointReachesTheEvaluator) {
  ExpectJobTrainedAndEvaluated("e2e", kMoM, "MoM");
}

TEST_F(RealWorkersTest, MixtureOfTransformersJobFinishesAndIsEvaluated) {
  ExpectJobTrainedAndEvaluated("mot", kMoT, "MoT");
}



TEST_F(RealWorkersTest, KilledRankResumesAndEndsAtTheSameLoss) {
  auto calm = cluster_->Submit(Spec("calm", 0));
  ASSERT_TRUE(calm.ok()) << calm.status();
  auto calm_done = cluster_->WaitFinished(calm->id(), absl::Seconds(120));
  ASSERT_TRUE(calm_done.ok() && calm_done->state() == v1::JOB_SUCCEEDED);

  auto hit = cluster_->Submit(Spec("hit", 0));
  ASSERT_TRUE(hit.ok()) << hit.status();
  auto running = cluster_->WaitJob(hit->id(), [](const v1::Job& j) {
    return j.latest_checkpoint_step() >= 10 && j.step() >= 15;
  }, absl::Seconds(120));
  ASSERT_TRUE(running.ok()) << running.status();
  int64_t pid = 0;
  for (const v1::WorkerInfo& w : running->workers()) {
    if (w.ref().role() == v1::ROLE_TRAINER && w.ref().rank() == 1) pid = w.pid();
  }
  ASSERT_GT(pid, 0);
  ASSERT_EQ(kill(static_cast<pid_t>(pid), SIGKILL), 0);

  auto hit_done = cluster_->WaitFinished(hit->id(), absl::Seconds(180));
  ASSERT_TRUE(hit_done.ok()) << hit_done.status();
  ASSERT_EQ(hit_done->state(), v1::JOB_SUCCEEDED) << hit_done->reason();
  EXPECT_GE(hit_done->restarts(), 1);
  EXPECT_EQ(hit_done->step(), 40);
  ASSERT_FALSE(calm_done->last_train().losses().empty());
  for (const auto& [modality, loss] : calm_done->last_train().losses()) {
    EXPECT_EQ(hit_done->last_train().losses().at(modality), loss) << modality;
  }
  // Both generations appended to the job's metrics; the repeated steps count
  // once, so the restarted run reads like the calm one.
  auto calm_run = LoadRun(cluster_->run_root() + "/" + calm->id());
  auto hit_run = LoadRun(cluster_->run_root() + "/" + hit->id());
  ASSERT_TRUE(calm_run.ok() && hit_run.ok()) << hit_run.status();
  ASSERT_EQ(hit_run->val.size(), calm_run->val.size());
  for (size_t i = 0; i < calm_run->val.size(); ++i) {
    EXPECT_EQ(hit_run->val[i].step, calm_run->val[i].step);
    EXPECT_EQ(hit_run->val[i].loss, calm_run->val[i].loss) << hit_run->val[i].step;
  }
}

}  // namespace
}  // namespace modamba
