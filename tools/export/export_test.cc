// `modamba export` end to end: a trained checkpoint, exported from its run
// directory, opened by PyTorch (torch_check.py, Debian's python3-torch):
// names, shapes and dtypes against the config in the file's own metadata, and
// a pure-PyTorch forward of one document against Modamba's logits.
#include "tools/export/export.h"

#include <cstdlib>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/checkpoint.h"
#include "core/config.h"
#include "core/file_util.h"
#include "core/safetensors.h"
#include "gtest/gtest.h"
#include "trainer/train_loop.h"

namespace modamba {
namespace {

constexpr char kPython[] = "/usr/bin/python3";

std::string TmpDir(const std::string& name) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  const std::string dir = absl::StrCat(tmp != nullptr ? tmp : "/tmp", "/", name);
  EXPECT_TRUE(MakeDirs(dir).ok());
  return dir;
}

bool HaveTorch() {
  return std::system(absl::StrCat(kPython, " -c 'import torch' 2>/dev/null").c_str()) == 0;
}

// Trains `model` for 3 steps on a small corpus into a fresh run directory.
std::string TrainRun(const std::string& name, const std::string& model) {
  const std::string dir = TmpDir(name);
  const std::string text = dir + "/text.txt";
  {
    std::ofstream out(text);
    for (int i = 0; i < 300; ++i) out << "to be or not to be, " << i % 13 << " that is the question\n";
  }
  auto c = ParseTextProto<v1::TrainConfig>(
      absl::StrCat("model { ", model, " }\n",
                   "optimizer { lr: 1e-2 } steps: 3 batch_size: 2 seq_len: 32 seed: 3"),
      name);
  EXPECT_TRUE(c.ok()) << c.status();
  c->set_text_path(text);
  c->set_checkpoint_dir(dir + "/run");
  EXPECT_TRUE(ResolveTrainConfig(&*c, name).ok());
  auto be = NewCpuBackend();
  TrainContext ctx;
  ctx.backend = be.get();
  EXPECT_TRUE(Train(*c, ctx).ok());
  return dir + "/run";
}

// Modamba's logits for one document (the model resets at document starts,
// which a plain Mamba forward has no notion of), written with the document
// for torch_check.py.
std::string WriteExpected(const std::string& run, const std::string& dtype,
                          const std::vector<int32_t>& modality, bool with_logits) {
  auto be = NewCpuBackend();
  auto ckpt = ResolveCheckpoint(run);
  EXPECT_TRUE(ckpt.ok());
  auto model = LoadTrainedModel(*ckpt, be.get());
  EXPECT_TRUE(model.ok()) << model.status();
  const std::string text = "Mamba, routed by modality";
  Batch b;
  b.batch = 1;
  b.seq_len = text.size();
  for (size_t t = 0; t < text.size(); ++t) {
    b.tokens.push_back(static_cast<uint8_t>(text[t]));
    b.targets.push_back(static_cast<uint8_t>(text[(t + 1) % text.size()]));
    b.modality.push_back(modality[t % modality.size()]);
    b.target_modality.push_back(b.modality.back());
    b.doc_start.push_back(t == 0);
    b.loss_mask.push_back(1);
  }
  EXPECT_TRUE((*model)->Evaluate(b).ok());
  const Tensor& logits = (*model)->logits();
  nlohmann::json j = {{"dtype", dtype}, {"tokens", b.tokens}, {"modalities", b.modality},
                      {"logits", nlohmann::json::array()}};
  const int64_t v = logits.dim(1);
  for (int64_t r = 0; with_logits && r < logits.dim(0); ++r) {
    j["logits"].push_back(std::vector<float>(logits.data<float>() + r * v,
                                             logits.data<float>() + (r + 1) * v));
  }
  const std::string path = run + "/../expected-" + dtype + ".json";
  EXPECT_TRUE(WriteFileAtomic(path, j.dump()).ok());
  return path;
}

int TorchCheck(const std::string& model, const std::string& expected, std::string* output) {
  const std::string log = expected + ".log";
  const int code = std::system(absl::StrCat(kPython, " tools/export/torch_check.py ", model, " ",
                                            expected, " > ", log, " 2>&1").c_str());
  *output = ReadFile(log).value_or("");
  return code;
}

TEST(ExportTest, DenseExportRunsInPyTorchWithModambasLogits) {
  const std::string run = TrainRun("dense", "d_model: 16 n_layer: 2 vocab_size: 256 d_state: 4");
  const std::string out = run + "/../dense.safetensors";
  // The run directory, not a step directory: its newest complete checkpoint.
  auto result = ExportCheckpoint(run, out, DType::kF32);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->step, 3);
  EXPECT_TRUE(absl::EndsWith(result->checkpoint, "step-00000003")) << result->checkpoint;

  auto file = LoadSafetensors(out);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(file->tensors.at("layers.0.mixer.in_proj.weight").shape(), (Shape{64, 16}));
  EXPECT_EQ(file->tensors.at("layers.1.mixer.dt_proj.bias").shape(), (Shape{32}));
  EXPECT_TRUE(absl::StrContains(file->metadata.at("config"), "\"d_model\":16"));
  EXPECT_EQ(file->metadata.at("modalities"), "{\"text\":0}");
  EXPECT_TRUE(absl::StrContains(file->metadata.at("tokenizers"), "UTF-8 bytes"));

  if (!HaveTorch()) GTEST_SKIP() << "no python3-torch (tools/setup.sh installs it)";
  std::string output;
  EXPECT_EQ(TorchCheck(out, WriteExpected(run, "F32", {0}, true), &output), 0) << output;
  EXPECT_TRUE(absl::StrContains(output, "max |logit difference|")) << output;
  std::cout << output;  // the measured difference, in the test log
}

TEST(ExportTest, RoutedBf16ExportKeepsAGroupPerModality) {
  const std::string run = TrainRun(
      "routed", "d_model: 16 n_layer: 1 vocab_size: 256 d_state: 4 n_modalities: 3 "
                "route_in: true route_x: true route_dt: true route_out: true");
  const std::string step = CheckpointPath(run, 3);
  const std::string out = run + "/../routed.safetensors";
  ASSERT_TRUE(ExportCheckpoint(step, out, DType::kBF16).ok());
  auto file = LoadSafetensors(out);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(file->tensors.at("layers.0.mixer.out_proj.weight").shape(), (Shape{3, 16, 32}));
  EXPECT_EQ(file->tensors.at("layers.0.mixer.out_proj.weight").dtype(), DType::kBF16);
  EXPECT_EQ(file->metadata.at("dtype"), "BF16");
  EXPECT_EQ(file->metadata.at("modalities"), "{\"image\":1,\"speech\":2,\"text\":0}");

  if (!HaveTorch()) GTEST_SKIP() << "no python3-torch (tools/setup.sh installs it)";
  std::string output;
  EXPECT_EQ(TorchCheck(out, WriteExpected(run, "BF16", {0, 1, 2}, false), &output), 0) << output;
}

TEST(ExportTest, RoutedF32ForwardMatchesPerModality) {
  if (!HaveTorch()) GTEST_SKIP() << "no python3-torch (tools/setup.sh installs it)";
  const std::string run = TrainRun(
      "routed32", "d_model: 16 n_layer: 2 vocab_size: 256 d_state: 4 n_modalities: 3 "
                  "route_in: true route_dt: true");
  const std::string out = run + "/../routed32.safetensors";
  ASSERT_TRUE(ExportCheckpoint(run, out, DType::kF32).ok());
  std::string output;
  EXPECT_EQ(TorchCheck(out, WriteExpected(run, "F32", {0, 0, 1, 2, 2, 1}, true), &output), 0)
      << output;
}

TEST(ExportTest, MixtureOfTransformersForwardMatchesPerModality) {
  const std::string run = TrainRun(
      "mot", "architecture: TRANSFORMER d_model: 16 n_layer: 2 n_head: 2 vocab_size: 256 "
             "n_modalities: 3 route_qkv: true route_attn_out: true route_ffn_in: true "
             "route_ffn_out: true route_norms: true");
  const std::string out = run + "/../mot.safetensors";
  ASSERT_TRUE(ExportCheckpoint(run, out, DType::kF32).ok());
  auto file = LoadSafetensors(out);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(file->tensors.at("layers.1.attn.qkv_proj.weight").shape(), (Shape{3, 48, 16}));
  EXPECT_EQ(file->tensors.at("layers.0.ffn_norm.weight").shape(), (Shape{3, 16}));
  EXPECT_TRUE(absl::StrContains(file->metadata.at("config"), "\"architecture\":\"TRANSFORMER\""));
  if (!HaveTorch()) GTEST_SKIP() << "no python3-torch (tools/setup.sh installs it)";
  std::string output;
  EXPECT_EQ(TorchCheck(out, WriteExpected(run, "F32", {0, 0, 1, 2, 2, 1}, true), &output), 0)
      << output;
  std::cout << output;
}

TEST(ExportTest, RefusesWhatIsNotACheckpoint) {
  const std::string empty = TmpDir("empty");
  auto result = ExportCheckpoint(empty, empty + "/x.safetensors", DType::kF32);
  ASSERT_FALSE(result.ok());
  EXPECT_TRUE(absl::StrContains(result.status().message(), empty)) << result.status();
  EXPECT_FALSE(FileExists(empty + "/x.safetensors"));

  std::vector<std::string> args = {"export", "--checkpoint=" + empty, "--out=x", "--dtype=f16"};
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(RunExportCommand(argv.size(), argv.data()), 2);
  EXPECT_TRUE(absl::StrContains(::testing::internal::GetCapturedStderr(), "--dtype"));
}

}  // namespace
}  // namespace modamba
