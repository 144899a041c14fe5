#include "tools/eval_command.h"

#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "core/backend.h"
#include "core/checkpoint.h"
#include "core/config.h"
#include "core/file_util.h"
#include "evaluator/test_util.h"
#include "gtest/gtest.h"
#include "trainer/train_loop.h"

namespace modamba::eval {
namespace {

int Invoke(int (*command)(int, char**), std::vector<std::string> args) {
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  return command(static_cast<int>(argv.size()), argv.data());
}

TEST(EvalCommand, UsageErrors) {
  EXPECT_EQ(Invoke(RunEvalCommand, {"eval"}), 2);
  EXPECT_EQ(Invoke(RunEvalCommand, {"eval", "--checkpoint=x", "--bogus=1"}), 2);
  EXPECT_EQ(Invoke(RunEvalCommand, {"eval", "--checkpoint=x", "--samples_per_digit=two"}), 2);
  EXPECT_EQ(Invoke(RunEvalCommand, {"eval", "--checkpoint=/nonexistent/run"}), 1);
  EXPECT_EQ(Invoke(RunGenerateCommand, {"generate", "--checkpoint=x", "--out=y", "--modality=smell"}), 2);
  EXPECT_EQ(Invoke(RunGenerateCommand, {"generate", "--checkpoint=x", "--modality=text"}), 2);
}

class CommandTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (testing::RawDir().empty()) return;
    auto built = testing::BuildTinyDatasets(::testing::TempDir() + "/command_data");
    ASSERT_TRUE(built.ok()) << built.status();
    classifiers_ = new std::string(::testing::TempDir() + "/command_classifiers");
    ASSERT_TRUE(MakeDirs(*classifiers_).ok());
    ASSERT_TRUE(testing::TrainQuickClassifiers(*classifiers_).ok());
    auto be = NewCpuBackend();
    for (const char* setting : {"chameleon", "trimodal"}) {
      const std::string root = ::testing::TempDir() + "/command_run_" + setting;
      auto config = testing::TinyTrainConfig(*built + "/" + setting, root, 2);
      ASSERT_TRUE(config.ok()) << config.status();
      config->set_checkpoint_every(1);
      TrainContext ctx;
      ctx.backend = be.get();
      ASSERT_TRUE(Train(*config, ctx).ok());
      (*runs_)[setting] = root;
    }
  }
  void SetUp() override {
    if (testing::RawDir().empty()) GTEST_SKIP() << "MODAMBA_DATA_DIR is not set";
  }
  static std::string* classifiers_;
  static std::map<std::string, std::string>* runs_;
};
std::string* CommandTest::classifiers_ = nullptr;
std::map<std::string, std::string>* CommandTest::runs_ = new std::map<std::string, std::string>;

TEST_F(CommandTest, EvalEveryCheckpointOfARun) {
  const std::string out = ::testing::TempDir() + "/eval.json";
  const std::string out_dir = ::testing::TempDir() + "/eval_files";
  ASSERT_EQ(Invoke(RunEvalCommand, {"eval", "--checkpoint=" + runs_->at("chameleon"), "--all",
                                 "--out=" + out, "--out_dir=" + out_dir,
                                 "--classifier_dir=" + *classifiers_, "--samples_per_digit=1",
                                 "--val_sequences=2", "--speech=false"}),
            0);
  auto text = ReadFile(out);
  ASSERT_TRUE(text.ok());
  nlohmann::json j = nlohmann::json::parse(*text);
  ASSERT_TRUE(j.is_array());
  ASSERT_EQ(j.size(), 2u);
  EXPECT_EQ(j[0]["step"], 1);
  EXPECT_EQ(j[1]["step"], 2);
  EXPECT_LT(j[0]["flops"].get<double>(), j[1]["flops"].get<double>());
  EXPECT_TRUE(j[1]["metrics"].contains("image/accuracy"));
  EXPECT_TRUE(j[1]["metrics"].contains("val/image_ce"));
  EXPECT_TRUE(FileExists(out_dir + "/step-00000002/images.png"));
}

TEST_F(CommandTest, JudgesPrintsTheirRealDataAccuracyBesideTheModelsScores) {
  const std::string out = ::testing::TempDir() + "/judges.json";
  ::testing::internal::CaptureStdout();
  const int rc = Invoke(RunEvalCommand, {"eval", "--checkpoint=" + runs_->at("trimodal"),
                                         "--out=" + out, "--classifier_dir=" + *classifiers_,
                                         "--samples_per_digit=1", "--validation=false", "--judges"});
  const std::string table = ::testing::internal::GetCapturedStdout();
  std::printf("%s", table.c_str());
  ASSERT_EQ(rc, 0);
  nlohmann::json j = nlohmann::json::parse(*ReadFile(out));
  const auto& m = j["metrics"];
  for (const char* name : {"image/ref_augmented_accuracy", "image/ref_train_test_frechet",
                           "speech/cer", "speech/ref_real_cer", "speech/ref_augmented_accuracy",
                           "speech/ref_train_test_frechet", "speech/ref_units_cer"}) {
    EXPECT_TRUE(m.contains(name)) << name;
  }
  EXPECT_TRUE(j["judges"].contains("speech"));
  // One line per judge and one per model score, with the JSON's numbers.
  EXPECT_NE(table.find("image  judge on real MNIST test: "), std::string::npos) << table;
  EXPECT_NE(table.find("speech judge on real FSDD test takes: "), std::string::npos) << table;
  char accuracy[32];
  std::snprintf(accuracy, sizeof(accuracy), "%.4f", m["image/ref_real_accuracy"].get<double>());
  EXPECT_NE(table.find(accuracy), std::string::npos) << table;
  EXPECT_NE(table.find("model: accuracy "), std::string::npos) << table;
  EXPECT_NE(table.find("judge: fsdd-tdnn/"), std::string::npos) << table;
}

// The exit code of generate on `checkpoint` with `flags`, writing `out`.
int RunGenerate(const std::string& checkpoint, std::vector<std::string> flags,
                const std::string& out) {
  flags.insert(flags.begin(), {"generate", "--checkpoint=" + checkpoint});
  flags.push_back("--out=" + out);
  return Invoke(RunGenerateCommand, std::move(flags));
}

// The file a successful generate wrote.
absl::StatusOr<std::string> Generate(const std::string& checkpoint,
                                     std::vector<std::string> flags, const std::string& out) {
  const int code = RunGenerate(checkpoint, std::move(flags), out);
  if (code != 0) return absl::InternalError(absl::StrCat("generate exited with ", code));
  return ReadFile(out);
}

TEST_F(CommandTest, GenerateWritesPngWavAndText) {
  const std::string dir = ::testing::TempDir();
  auto png = Generate(runs_->at("chameleon"), {"--prompt=a handwritten seven", "--modality=image"},
                      dir + "/seven.png");
  ASSERT_TRUE(png.ok()) << png.status();
  EXPECT_EQ(png->substr(1, 3), "PNG");
  auto wav = Generate(runs_->at("trimodal"), {"--prompt=seven", "--modality=speech", "--seed=2"},
                      dir + "/seven.wav");
  ASSERT_TRUE(wav.ok()) << wav.status();
  EXPECT_EQ(wav->substr(0, 4), "RIFF");
  auto txt = Generate(runs_->at("trimodal"),
                      {"--prompt=ROMEO:", "--modality=text", "--max_tokens=30"},
                      dir + "/romeo.txt");
  ASSERT_TRUE(txt.ok()) << txt.status();
  EXPECT_EQ(txt->substr(0, 6), "ROMEO:");
  EXPECT_LE(txt->size(), 6u + 30 + 1);
  // A chameleon model has no speech tokenizer.
  EXPECT_EQ(RunGenerate(runs_->at("chameleon"), {"--prompt=seven", "--modality=speech"},
                        dir + "/no.wav"),
            1);
  // An unknown device is refused before anything is loaded.
  EXPECT_EQ(RunGenerate(runs_->at("chameleon"), {"--prompt=a", "--modality=text", "--device=tpu"},
                        dir + "/no.txt"),
            1);
}

TEST(GenerateCommand, ByteLevelTextRun) {
  const std::string dir = ::testing::TempDir() + "/byte_run";
  ASSERT_TRUE(MakeDirs(dir).ok());
  {
    std::ofstream text(dir + "/text.txt");
    for (int i = 0; i < 300; ++i) text << "the quick brown fox jumps over the lazy dog\n";
  }
  auto c = ParseTextProto<v1::TrainConfig>(R"pb(
    model { d_model: 16 n_layer: 1 vocab_size: 256 d_state: 4 }
    optimizer { lr: 5e-3 }
    steps: 2 batch_size: 2 seq_len: 32 eval_batches: 1
  )pb", "test");
  ASSERT_TRUE(c.ok());
  c->set_text_path(dir + "/text.txt");
  c->set_checkpoint_dir(dir + "/ckpt");
  ASSERT_TRUE(ResolveTrainConfig(&*c, "test").ok());
  auto be = NewCpuBackend();
  TrainContext ctx;
  ctx.backend = be.get();
  ASSERT_TRUE(Train(*c, ctx).ok());
  ::testing::internal::CaptureStdout();
  ASSERT_EQ(RunGenerate(dir + "/ckpt", {"--prompt=the ", "--modality=text", "--max_tokens=12"},
                        dir + "/out.txt"),
            0);
  // Each written file is announced with its size.
  EXPECT_EQ(::testing::internal::GetCapturedStdout(),
            "wrote " + dir + "/out.txt (17 B): the prompt and 12 generated bytes of text\n");
  auto out = ReadFile(dir + "/out.txt");
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(out->size(), 4u + 12 + 1);
  // eval of a text run: its byte-level validation loss.
  ::testing::internal::CaptureStdout();
  ASSERT_EQ(Invoke(RunEvalCommand, {"eval", "--checkpoint=" + dir + "/ckpt", "--out=" + dir + "/e.json"}), 0);
  const std::string said = ::testing::internal::GetCapturedStdout();
  EXPECT_NE(said.find("wrote " + dir + "/e.json ("), std::string::npos) << said;
  EXPECT_NE(said.find("): evaluation metrics (JSON) of 1 checkpoint(s)"), std::string::npos) << said;
  nlohmann::json j = nlohmann::json::parse(*ReadFile(dir + "/e.json"));
  EXPECT_TRUE(j["metrics"].contains("val/text_bpb"));
  EXPECT_GT(j["metrics"]["val/text_bpb"].get<double>(), 1.0);
}

}  // namespace
}  // namespace modamba::eval
