// Evaluation speed on the CPU or a GPU: recurrent decoding tokens/s by
// number of streams, and the wall time of each part of a checkpoint
// evaluation, for a random model of the given size on a built dataset.
//
//   bazel run -c opt //evaluator:eval_bench -- --dataset_dir=OUT/trimodal
//       [--d_model=256] [--n_layer=8] [--classifier_dir=DIR] [--device=cpu|gpu]
#include <chrono>
#include <cstdio>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "core/config.h"
#include "core/data/manifest.h"
#include "core/status_macros.h"
#include "evaluator/evaluate.h"
#include "evaluator/generation.h"
#include "evaluator/recurrent.h"
#include "kernels/cuda_backend.h"

ABSL_FLAG(std::string, dataset_dir, "", "a built dataset (one setting)");
ABSL_FLAG(int, d_model, 256, "model width");
ABSL_FLAG(int, n_layer, 8, "layers");
ABSL_FLAG(std::string, classifier_dir, "", "digit classifiers (default: the evaluator's cache)");
ABSL_FLAG(int, samples_per_digit, 4, "generated samples per digit");
ABSL_FLAG(int, val_sequences, 16, "validation sequences");
ABSL_FLAG(int, diffusion_steps, 50, "DDIM steps (Transfusion)");
ABSL_FLAG(std::string, device, "cpu", "cpu, or gpu (CUDA device 0)");

namespace modamba::eval {
namespace {

double Since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

absl::Status Run() {
  const std::string dir = absl::GetFlag(FLAGS_dataset_dir);
  ASSIGN_OR_RETURN(data::DatasetManifest m, data::ReadDatasetManifest(dir));
  v1::TrainConfig config;
  v1::ModelConfig& c = *config.mutable_model();
  c.set_d_model(absl::GetFlag(FLAGS_d_model));
  c.set_n_layer(absl::GetFlag(FLAGS_n_layer));
  c.set_vocab_size(m.vocab.size());
  c.set_n_modalities(m.num_modalities);
  c.set_patch_dim(m.patch_dim);
  c.set_route_in(true);
  c.set_route_x(true);
  c.set_route_dt(true);
  c.set_route_out(true);
  RETURN_IF_ERROR(ResolveModelConfig(&c, "eval_bench"));
  config.set_dataset_dir(dir);
  ASSIGN_OR_RETURN(std::unique_ptr<Backend> be, NewBackend(absl::GetFlag(FLAGS_device)));
  ASSIGN_OR_RETURN(auto model, LanguageModel::Create(c, be.get(), DType::kF32, 1));
  ASSIGN_OR_RETURN(auto lm, RecurrentLM::FromModel(*model));

  std::printf("%s, d_model %d, %d layers, on %s\n\n", m.setting.c_str(), c.d_model(),
              c.n_layer(), be->name().c_str());
  std::printf("| streams | tokens/s (recurrent, with logits) |\n|---|---|\n");
  for (int streams : {1, 10, 50, 200}) {
    Decoder dec(lm.get(), m.vocab, streams, 0);
    RETURN_IF_ERROR(dec.FeedAll({data::kBos}));
    const auto t = std::chrono::steady_clock::now();
    const int steps = 64;
    for (int i = 0; i < steps; ++i) RETURN_IF_ERROR(dec.FeedAll({'a'}));
    std::printf("| %d | %.0f |\n", streams, steps * streams / Since(t));
  }

  EvalOptions o;
  o.classifier_dir = absl::GetFlag(FLAGS_classifier_dir);
  o.samples_per_digit = absl::GetFlag(FLAGS_samples_per_digit);
  o.val.max_sequences = absl::GetFlag(FLAGS_val_sequences);
  o.generation.diffusion.steps = absl::GetFlag(FLAGS_diffusion_steps);
  std::printf("\n| part | seconds |\n|---|---|\n");
  for (const char* part : {"validation", "images", "speech"}) {
    EvalOptions one = o;
    one.validation = std::string(part) == "validation";
    one.images = std::string(part) == "images";
    one.speech = std::string(part) == "speech";
    CheckpointEvaluator evaluator(one, be.get());
    // The first call also loads classifiers and reference features.
    RETURN_IF_ERROR(evaluator.EvaluateModel(model.get(), config).status());
    const auto t = std::chrono::steady_clock::now();
    RETURN_IF_ERROR(evaluator.EvaluateModel(model.get(), config).status());
    std::printf("| %s | %.2f |\n", part, Since(t));
  }
  return absl::OkStatus();
}

}  // namespace
}  // namespace modamba::eval

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  absl::Status st = modamba::eval::Run();
  if (!st.ok()) {
    std::fprintf(stderr, "eval_bench: %s\n", std::string(st.message()).c_str());
    return 1;
  }
  return 0;
}
