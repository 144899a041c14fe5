#include "tools/eval_command.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "core/backend.h"
#include "core/checkpoint.h"
#include "core/data/audio.h"
#include "core/data/png_io.h"
#include "core/file_util.h"
#include "core/status_macros.h"
#include "evaluator/calibration.h"
#include "evaluator/evaluate.h"
#include "evaluator/recurrent.h"
#include "evaluator/samples.h"
#include "kernels/cuda_backend.h"
#include "tools/cli/artifacts.h"
#include "tools/cli/flags.h"

namespace modamba::eval {
namespace {

int Fail(const char* command, const absl::Status& status, int code) {
  std::fprintf(stderr, "%s: %s\n", command, std::string(status.message()).c_str());
  return code;
}

// A checkpoint directory itself, or the checkpoints under a run's root
// (the newest only, unless `all`), in step order.
absl::StatusOr<std::vector<std::string>> Checkpoints(const std::string& dir, bool all) {
  if (!all || FileExists(dir + "/manifest.json")) {
    ASSIGN_OR_RETURN(std::string checkpoint, ResolveCheckpoint(dir));
    return std::vector<std::string>{checkpoint};
  }
  std::vector<std::pair<int64_t, std::string>> found;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    int64_t step = 0;
    if (!absl::StartsWith(name, "step-") || !absl::SimpleAtoi(name.substr(5), &step)) continue;
    if (FileExists(e.path().string() + "/manifest.json")) found.emplace_back(step, e.path().string());
  }
  if (ec) return absl::NotFoundError(absl::StrCat(dir, ": ", ec.message()));
  if (found.empty()) return absl::NotFoundError(absl::StrCat(dir, ": no complete checkpoint"));
  std::sort(found.begin(), found.end());
  std::vector<std::string> out;
  for (auto& [step, path] : found) out.push_back(std::move(path));
  return out;
}

// The sampling flags eval and generate share.
struct Sampling {
  double temperature = 1;
  int top_k = 0;
  uint64_t seed = 0;
  int diffusion_steps = 50;
  double eta = 0;

  void Declare(cli::FlagSet* flags) {
    flags->Double("temperature", &temperature, "sampling temperature");
    flags->Int("top_k", &top_k, "sample among the k likeliest tokens (0: all)");
    flags->Int("seed", &seed, "sampling seed");
    flags->Int("diffusion_steps", &diffusion_steps, "denoising steps (Transfusion)");
    flags->Double("eta", &eta, "DDIM eta (0: deterministic)");
  }
  void Apply(GenerationOptions* g) const {
    g->sampling.temperature = static_cast<float>(temperature);
    g->sampling.top_k = top_k;
    g->seed = seed;
    g->diffusion.steps = diffusion_steps;
    g->diffusion.eta = eta;
  }
};

struct EvalCommand {
  EvalOptions options;
  std::string checkpoint, out, device = "cpu";
  bool all = false;
  bool judges = false;  // print the judges' calibration table
};

absl::Status Eval(const EvalCommand& c) {
  ASSIGN_OR_RETURN(std::vector<std::string> checkpoints, Checkpoints(c.checkpoint, c.all));
  ASSIGN_OR_RETURN(std::unique_ptr<Backend> backend, NewBackend(c.device));
  CheckpointEvaluator evaluator(c.options, backend.get());
  std::vector<std::string> reports;
  std::vector<EvalReport> done;
  std::string calibration;
  for (const std::string& ckpt : checkpoints) {
    EvalOptions per = c.options;
    if (c.all && !per.output_dir.empty()) {
      // One output folder per checkpoint.
      per.output_dir = absl::StrCat(per.output_dir, "/",
                                    std::filesystem::path(ckpt).filename().string());
    }
    evaluator.set_output_dir(per.output_dir);
    ASSIGN_OR_RETURN(EvalReport report, evaluator.Evaluate(ckpt));
    reports.push_back(report.ToJson());
    if (c.judges) {
      absl::StrAppend(&calibration, "step ", report.step, " (", ckpt, "):\n",
                      CalibrationTable(report.metrics, report.judges));
    }
    done.push_back(std::move(report));
  }
  const std::string json =
      c.all ? absl::StrCat("[\n", absl::StrJoin(reports, ",\n"), "\n]\n") : reports[0] + "\n";
  if (c.out.empty()) {
    std::fputs(json.c_str(), stdout);
  } else {
    RETURN_IF_ERROR(WriteFileAtomic(c.out, json));
  }
  std::fputs(calibration.c_str(), stdout);
  std::fflush(stdout);
  for (const EvalReport& r : done) {
    for (const std::string& file : r.files) {
      cli::PrintArtifact(std::cout, file,
                         absl::StrCat(absl::EndsWith(file, ".png") ? "generated digit images"
                                                                   : "generated speech",
                                      " of step ", r.step));
    }
  }
  if (!c.out.empty()) {
    cli::PrintArtifact(std::cout, c.out,
                       absl::StrCat("evaluation metrics (JSON) of ", done.size(), " checkpoint(s)"));
  }
  return absl::OkStatus();
}

struct GenerateCommand {
  std::string checkpoint, prompt, modality, out, dataset_dir, device = "cpu";
  GenerationOptions generation;
  int griffin_lim_iterations = 32;
};

absl::Status Generate(const GenerateCommand& c) {
  ASSIGN_OR_RETURN(std::vector<std::string> found, Checkpoints(c.checkpoint, false));
  const std::string& ckpt = found[0];
  ASSIGN_OR_RETURN(v1::CheckpointManifest manifest, ReadManifest(ckpt));
  ASSIGN_OR_RETURN(std::unique_ptr<Backend> backend, NewBackend(c.device));
  ASSIGN_OR_RETURN(std::unique_ptr<LanguageModel> model, LoadTrainedModel(ckpt, backend.get()));
  ASSIGN_OR_RETURN(std::unique_ptr<RecurrentLM> lm, RecurrentLM::FromModel(*model));
  const std::string dataset_dir =
      c.dataset_dir.empty() ? manifest.config().dataset_dir() : c.dataset_dir;
  Tokenizers tok;  // a text-only run: the default vocabulary's bytes and specials
  if (!dataset_dir.empty()) {
    ASSIGN_OR_RETURN(tok, Tokenizers::Load(dataset_dir));
  } else if (c.modality != "text") {
    return absl::FailedPreconditionError(absl::StrCat(
        ckpt, " was trained without a dataset_dir, so it has no ", c.modality, " tokenizer"));
  }
  const GenerationOptions& g = c.generation;
  if (c.modality == "image") {
    ASSIGN_OR_RETURN(std::vector<uint8_t> pixels, GenerateImages(*lm, tok, {c.prompt}, g));
    RETURN_IF_ERROR(data::WritePng(c.out, data::kImageSide, data::kImageSide, 1, pixels.data()));
    cli::PrintArtifact(std::cout, c.out, absl::StrCat("an image (PNG) for \"", c.prompt, "\""));
    return absl::OkStatus();
  }
  if (c.modality == "speech") {
    ASSIGN_OR_RETURN(std::vector<SpeechSample> speech, GenerateSpeech(*lm, tok, {c.prompt}, g));
    const data::MelAnalyzer mel(tok.speech->mel_config());
    const int frames = static_cast<int>(speech[0].log_mel.size() / mel.config().n_mels);
    if (frames == 0) {
      return absl::FailedPreconditionError("the model ended the speech before any unit");
    }
    data::Audio audio;
    audio.sample_rate = mel.config().sample_rate;
    audio.samples =
        mel.GriffinLim(speech[0].log_mel.data(), frames, c.griffin_lim_iterations, g.seed);
    RETURN_IF_ERROR(data::WriteWavFile(c.out, audio));
    cli::PrintArtifact(std::cout, c.out,
                       absl::StrFormat("speech (WAV, %.2f s) for \"%s\"",
                                       audio.samples.size() / double(audio.sample_rate), c.prompt));
    return absl::OkStatus();
  }
  ASSIGN_OR_RETURN(std::vector<std::string> text, GenerateText(*lm, tok.vocab, {c.prompt}, g));
  RETURN_IF_ERROR(WriteFileAtomic(c.out, c.prompt + text[0] + "\n"));
  cli::PrintArtifact(std::cout, c.out,
                     absl::StrCat("the prompt and ", text[0].size(), " generated bytes of text"));
  return absl::OkStatus();
}

}  // namespace

int RunEvalCommand(int argc, char** argv) {
  EvalCommand c;
  EvalOptions& o = c.options;
  Sampling sampling;
  cli::FlagSet flags("modamba eval", "--checkpoint=DIR [flags]",
                     "Evaluates a checkpoint: per-modality validation loss, and digits generated "
                     "from prompts judged by classifiers (evaluator/README.md).",
                     "modamba eval --checkpoint=runs/tiny --out=metrics.json");
  flags.String("checkpoint", &c.checkpoint, "DIR",
               "a step-NNNNNNNN/ checkpoint or a run directory (its newest)");
  flags.Require("checkpoint");
  flags.Bool("all", &c.all, "every checkpoint of the run directory, in step order");
  flags.String("out", &c.out, "FILE", "writes the metrics (JSON) here instead of stdout");
  flags.String("out_dir", &o.output_dir, "DIR", "writes the generated image grid and WAVs here");
  flags.String("dataset_dir", &o.dataset_dir, "DIR", "the dataset (default: the checkpoint's)");
  flags.String("raw", &o.raw_dir, "DIR", "raw data for the classifiers ($MODAMBA_DATA_DIR)");
  flags.String("classifier_dir", &o.classifier_dir, "DIR", "cached digit classifiers");
  flags.Bool("validation", &o.validation, "per-modality validation loss");
  flags.Bool("images", &o.images, "generate and judge digit images");
  flags.Bool("speech", &o.speech, "generate and judge spoken digits");
  flags.Int("val_sequences", &o.val.max_sequences, "validation sequences (0: all)");
  flags.Int("val_batch", &o.val.batch_size, "validation batch size");
  flags.Int("samples_per_digit", &o.samples_per_digit, "generated samples per digit");
  flags.String("device", &c.device, "cpu|gpu", "where the model runs");
  flags.Bool("judges", &c.judges, "print each judge's accuracy on real held-out data beside the scores");
  sampling.Declare(&flags);
  if (std::optional<int> exit = flags.Parse(argc, argv, 1, nullptr)) return *exit;
  if (o.val.batch_size < 1 || o.samples_per_digit < 1) {
    return flags.UsageError("--val_batch and --samples_per_digit must be positive");
  }
  sampling.Apply(&o.generation);
  absl::Status st = Eval(c);
  return st.ok() ? 0 : Fail("modamba eval", st, 1);
}

int RunGenerateCommand(int argc, char** argv) {
  GenerateCommand c;
  Sampling sampling;
  int max_tokens = 0;
  cli::FlagSet flags("modamba generate",
                     "--checkpoint=DIR --prompt=TEXT --modality=image|speech|text --out=FILE [flags]",
                     "Samples one output from a checkpoint: an image (PNG) for a caption, speech "
                     "(WAV) for a transcript, or a text continuation.",
                     "modamba generate --checkpoint=runs/tiny --prompt=\"ROMEO:\" --modality=text "
                     "--out=romeo.txt");
  flags.String("checkpoint", &c.checkpoint, "DIR",
               "a step-NNNNNNNN/ checkpoint or a run directory (its newest)");
  flags.String("prompt", &c.prompt, "TEXT", "a caption, a transcript or the text to continue");
  flags.String("modality", &c.modality, "image|speech|text", "what to generate");
  flags.String("out", &c.out, "FILE", "the PNG, WAV or text file");
  flags.String("dataset_dir", &c.dataset_dir, "DIR", "the tokenizers' dataset (default: the checkpoint's)");
  flags.Int("max_tokens", &max_tokens, "most speech units or text bytes (0: the default)");
  flags.Int("griffin_lim_iterations", &c.griffin_lim_iterations, "phase iterations of the speech decoder");
  flags.String("device", &c.device, "cpu|gpu", "where the model runs");
  sampling.Declare(&flags);
  for (const char* name : {"checkpoint", "modality", "out"}) flags.Require(name);
  if (std::optional<int> exit = flags.Parse(argc, argv, 1, nullptr)) return *exit;
  if (c.modality != "image" && c.modality != "speech" && c.modality != "text") {
    return flags.UsageError("--modality must be image, speech or text");
  }
  sampling.Apply(&c.generation);
  if (max_tokens > 0) c.generation.max_speech_units = c.generation.max_text_bytes = max_tokens;
  absl::Status st = Generate(c);
  return st.ok() ? 0 : Fail("modamba generate", st, 1);
}

}  // namespace modamba::eval
