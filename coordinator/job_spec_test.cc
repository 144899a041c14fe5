#include "coordinator/job_spec.h"

#include <unistd.h>

#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/file_util.h"
#include "trainer/synthetic_dataset.h"
#include "gtest/gtest.h"

namespace modamba {
namespace {

class JobSpecTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = std::string(getenv("TEST_TMPDIR")) + "/spec";
    ASSERT_TRUE(MakeDirs(root_ + "/data/shards").ok());
    ASSERT_TRUE(WriteFileAtomic(root_ + "/data/text.txt", "hello").ok());
    context_.data_root = root_ + "/data";
    context_.has_evaluator_binary = true;
    context_.cpu_slots = 4;
    context_.gpus = 2;
  }

  absl::StatusOr<v1::JobSpec> Resolve(const std::string& text) {
    auto spec = ParseJobSpec(text, "job.textproto");
    if (!spec.ok()) return spec.status();
    absl::Status status = ResolveJobSpec(&*spec, context_, "job.textproto");
    if (!status.ok()) return status;
    return spec;
  }

  static constexpr char kTrain[] =
      "train { steps: 100 batch_size: 2 seq_len: 16 model { d_model: 8 n_layer: 1 vocab_size: 16 }"
      " optimizer { lr: 0.001 } }\n";
  std::string root_;
  SpecContext context_;
};

TEST_F(JobSpecTest, FillsDefaults) {
  auto spec = Resolve(absl::StrCat("name: \"a\" world_size: 2 dataset_dir: \"shards\"\n", kTrain));
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->device(), "cpu");
  EXPECT_EQ(spec->n_evaluators(), 0);
  EXPECT_EQ(spec->max_restarts(), 3);
  EXPECT_EQ(spec->keep_last_checkpoints(), 3);
  EXPECT_EQ(spec->cluster().nodes(), 1);
  // No checkpoint interval anywhere: only at the end.
  EXPECT_EQ(spec->checkpoint_every_steps(), 100);
  EXPECT_EQ(spec->train().checkpoint_every(), 100);
  EXPECT_EQ(spec->dataset_dir(), root_ + "/data/shards");
  EXPECT_EQ(spec->train().model().d_state(), 16);  // the train config is resolved too
}

TEST_F(JobSpecTest, CheckpointIntervalComesFromTheTrainConfigWhenUnset) {
  std::string train = kTrain;
  train.replace(train.find("steps: 100"), 10, "steps: 100 checkpoint_every: 25");
  auto spec = Resolve(absl::StrCat("name: \"a\" world_size: 1 dataset_dir: \"shards\"\n", train));
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->checkpoint_every_steps(), 25);
}

TEST_F(JobSpecTest, RefusesBadFieldsByName) {
  const std::string base = "name: \"a\" dataset_dir: \"shards\" ";
  const std::pair<std::string, std::string> cases[] = {
      {"nonsense: 3 world_size: 1", "nonsense"},
      {"world_size: 0", "world_size"},
      {"", "world_size"},
      {"world_size: 5", "world_size"},  // more than the host's 4 CPU slots
      {"world_size: 2 device: \"gpu\" n_evaluators: 1", "world_size"},  // 3 > 2 GPUs
      {"world_size: 1 n_evaluators: -2", "n_evaluators"},
      {"world_size: 1 max_restarts: -1", "max_restarts"},
      {"world_size: 1 keep_last_checkpoints: 0", "keep_last_checkpoints"},
      {"world_size: 1 checkpoint_every_steps: -5", "checkpoint_every_steps"},
      {"world_size: 1 device: \"fpga\"", "device"},
      {"world_size: 4 cluster { nodes: 3 }", "cluster.nodes"},  // 3 does not divide 4
      {"world_size: 2 cluster { nodes: 0 }", "cluster.nodes"},
      {"world_size: 1 cluster { partition: \"a b\" }", "cluster.partition"},
      {"world_size: 1 cluster { time_limit_minutes: 0 }", "cluster.time_limit_minutes"},
      {"world_size: 1 cluster { cpus_per_task: -1 }", "cluster.cpus_per_task"},
  };
  for (const auto& [fields, field] : cases) {
    auto spec = Resolve(absl::StrCat(base, fields, "\n", kTrain));
    EXPECT_EQ(spec.status().code(), absl::StatusCode::kInvalidArgument) << fields;
    EXPECT_TRUE(absl::StrContains(spec.status().message(), field)) << spec.status();
    EXPECT_TRUE(absl::StrContains(spec.status().message(), "job.textproto")) << spec.status();
  }
}

TEST_F(JobSpecTest, PathsMustStayInsideTheDataRoot) {
  ASSERT_TRUE(MakeDirs(root_ + "/secret").ok());
  ASSERT_EQ(symlink((root_ + "/secret").c_str(), (root_ + "/data/link").c_str()), 0);
  for (const std::string dir :
       {"../secret", "link", "/", "shards/../../secret", "nowhere", "text.txt"}) {
    auto spec =
        Resolve(absl::StrCat("name: \"a\" world_size: 1 dataset_dir: \"", dir, "\"\n", kTrain));
    EXPECT_EQ(spec.status().code(), absl::StatusCode::kInvalidArgument) << dir;
    EXPECT_TRUE(absl::StrContains(spec.status().message(), "dataset_dir")) << spec.status();
  }
  // An absolute path inside the root is fine, and so is a text corpus there.
  std::string train = kTrain;
  train.replace(train.find("steps: 100"), 10, "steps: 100 text_path: \"text.txt\"");
  auto spec = Resolve(
      absl::StrCat("name: \"a\" world_size: 1 dataset_dir: \"", root_, "/data/shards\"\n", train));
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->train().text_path(), root_ + "/data/text.txt");
}

TEST_F(JobSpecTest, NamesAreShortAndPlain) {
  for (const std::string& name : std::vector<std::string>{"", "a b", "a/b", std::string(65, 'x')}) {
    auto spec = Resolve(
        absl::StrCat("name: \"", name, "\" world_size: 1 dataset_dir: \"shards\"\n", kTrain));
    EXPECT_TRUE(absl::StrContains(spec.status().message(), "name")) << name;
  }
}

TEST_F(JobSpecTest, AJobThatCannotFitInMemoryIsRefusedWithTheEstimate) {
  context_.worker_memory_bytes = int64_t{4} << 30;
  const std::string huge = "name: \"a\" world_size: 2 dataset_dir: \"shards\"\n"
                           "train { steps: 100 batch_size: 1048576 seq_len: 48 model { d_model: 16"
                           " n_layer: 2 vocab_size: 1031 } optimizer { lr: 0.001 } }\n";
  auto spec = Resolve(huge);
  ASSERT_FALSE(spec.ok());
  EXPECT_TRUE(absl::StrContains(spec.status().message(), "train.batch_size: a trainer rank needs about"))
      << spec.status();
  EXPECT_TRUE(absl::StrContains(spec.status().message(), "a CPU worker may use 4.00 GiB"))
      << spec.status();
  // The same model at a sane batch fits.
  std::string small = huge;
  small.replace(small.find("1048576"), 7, "8");
  EXPECT_TRUE(Resolve(small).ok());
}

TEST_F(JobSpecTest, ASpecThatDoesNotFitTheDatasetIsRefused) {
  ASSERT_TRUE(WriteSyntheticDataset(root_ + "/data/tri", "trimodal", 48, 16, 2).ok());
  const std::string spec = "name: \"a\" world_size: 1 dataset_dir: \"tri\"\n"
                           "train { steps: 10 batch_size: 2 seq_len: 32 model { d_model: 8"
                           " n_layer: 1 vocab_size: 1031 n_modalities: 3 } optimizer { lr: 0.001 } }\n";
  auto refused = Resolve(spec);
  ASSERT_FALSE(refused.ok());
  EXPECT_TRUE(absl::StrContains(refused.status().message(),
                                "job.textproto: train.seq_len: 32 but the shards in"))
      << refused.status();
  std::string fitting = spec;
  fitting.replace(fitting.find("seq_len: 32"), 11, "seq_len: 48");
  auto accepted = Resolve(fitting);
  EXPECT_TRUE(accepted.ok()) << accepted.status();
}

TEST_F(JobSpecTest, SyntaxErrorsNameTheLine) {
  auto spec = ParseJobSpec("name: \"a\"\nworld_size: {", "x.textproto");
  EXPECT_EQ(spec.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StartsWith(spec.status().message(), "x.textproto:2:")) << spec.status();
  EXPECT_FALSE(ParseJobSpec(std::string(kMaxJobSpecBytes + 1, ' '), "big").ok());
}

}  // namespace
}  // namespace modamba
