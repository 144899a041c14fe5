#include "evaluator/eval_command.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/backend.h"
#include "core/checkpoint.h"
#include "core/data/audio.h"
#include "core/data/png_io.h"
#include "core/file_util.h"
#include "core/status_macros.h"
#include "evaluator/evaluate.h"
#include "evaluator/recurrent.h"
#include "evaluator/samples.h"
#include "kernels/cuda_backend.h"
#include "trainer/train_loop.h"

namespace modamba::eval {
namespace {

// --name=value flags of one command; unknown names and bad values are usage
// errors (INVALID_ARGUMENT).
class Flags {
 public:
  static absl::StatusOr<Flags> Parse(int argc, char** argv,
                                     const std::map<std::string, std::string>& defaults) {
    Flags f;
    f.values_ = defaults;
    for (int i = 1; i < argc; ++i) {
      std::string arg = argv[i];
      if (!absl::StartsWith(arg, "--")) {
        return absl::InvalidArgumentError(absl::StrCat("unexpected argument '", arg, "'"));
      }
      arg = arg.substr(2);
      const size_t eq = arg.find('=');
      const std::string name = arg.substr(0, eq);
      if (!defaults.count(name)) {
        std::vector<std::string> known;
        for (const auto& [k, v] : defaults) known.push_back("--" + k);
        return absl::InvalidArgumentError(absl::StrCat("unknown flag --", name, " (known: ",
                                                       absl::StrJoin(known, " "), ")"));
      }
      f.values_[name] = eq == std::string::npos ? "true" : arg.substr(eq + 1);
    }
    return f;
  }

  std::string Str(const std::string& name) const { return values_.at(name); }
  absl::StatusOr<int64_t> Int(const std::string& name) const {
    int64_t v = 0;
    if (!absl::SimpleAtoi(Str(name), &v)) return Bad(name, "an integer");
    return v;
  }
  absl::StatusOr<double> Double(const std::string& name) const {
    double v = 0;
    if (!absl::SimpleAtod(Str(name), &v)) return Bad(name, "a number");
    return v;
  }
  absl::StatusOr<bool> Bool(const std::string& name) const {
    bool v = false;
    if (!absl::SimpleAtob(Str(name), &v)) return Bad(name, "true or false");
    return v;
  }
  absl::Status Required(const std::string& name) const {
    if (Str(name).empty()) return absl::InvalidArgumentError(absl::StrCat("--", name, " is required"));
    return absl::OkStatus();
  }

 private:
  absl::Status Bad(const std::string& name, const char* what) const {
    return absl::InvalidArgumentError(
        absl::StrCat("--", name, "=", Str(name), ": expected ", what));
  }
  std::map<std::string, std::string> values_;
};

int Fail(const char* command, const absl::Status& status, int code) {
  std::fprintf(stderr, "%s: %s\n", command, std::string(status.message()).c_str());
  return code;
}

// A checkpoint directory itself, or the checkpoints under a run's root
// (the newest only, unless `all`), in step order.
absl::StatusOr<std::vector<std::string>> Checkpoints(const std::string& dir, bool all) {
  if (FileExists(dir + "/manifest.json")) return std::vector<std::string>{dir};
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
  if (!all) found.erase(found.begin(), found.end() - 1);
  for (auto& [step, path] : found) out.push_back(std::move(path));
  return out;
}

absl::Status SamplingFlags(const Flags& f, GenerationOptions* g) {
  ASSIGN_OR_RETURN(double temperature, f.Double("temperature"));
  ASSIGN_OR_RETURN(int64_t top_k, f.Int("top_k"));
  ASSIGN_OR_RETURN(int64_t seed, f.Int("seed"));
  ASSIGN_OR_RETURN(int64_t steps, f.Int("diffusion_steps"));
  ASSIGN_OR_RETURN(double eta, f.Double("eta"));
  g->sampling.temperature = static_cast<float>(temperature);
  g->sampling.top_k = static_cast<int>(top_k);
  g->seed = static_cast<uint64_t>(seed);
  g->diffusion.steps = static_cast<int>(steps);
  g->diffusion.eta = eta;
  return absl::OkStatus();
}

const std::map<std::string, std::string>& SamplingDefaults() {
  static const auto* d = new std::map<std::string, std::string>{
      {"temperature", "1"}, {"top_k", "0"}, {"seed", "0"}, {"diffusion_steps", "50"}, {"eta", "0"}};
  return *d;
}

struct EvalCommand {
  EvalOptions options;
  std::string checkpoint, out, device;
  bool all = false;
};

// Flag errors are usage errors.
absl::StatusOr<EvalCommand> ParseEval(int argc, char** argv) {
  std::map<std::string, std::string> defaults = {
      {"checkpoint", ""},   {"all", "false"},        {"out", ""},
      {"out_dir", ""},      {"dataset_dir", ""},     {"raw", ""},
      {"classifier_dir", ""}, {"validation", "true"}, {"images", "true"},
      {"speech", "true"},   {"val_sequences", "16"}, {"val_batch", "4"},
      {"samples_per_digit", "4"}, {"device", "cpu"}};
  defaults.insert(SamplingDefaults().begin(), SamplingDefaults().end());
  ASSIGN_OR_RETURN(Flags f, Flags::Parse(argc, argv, defaults));
  RETURN_IF_ERROR(f.Required("checkpoint"));
  EvalCommand c;
  c.checkpoint = f.Str("checkpoint");
  c.out = f.Str("out");
  c.device = f.Str("device");
  ASSIGN_OR_RETURN(c.all, f.Bool("all"));
  EvalOptions& o = c.options;
  o.dataset_dir = f.Str("dataset_dir");
  o.raw_dir = f.Str("raw");
  o.classifier_dir = f.Str("classifier_dir");
  o.output_dir = f.Str("out_dir");
  ASSIGN_OR_RETURN(o.validation, f.Bool("validation"));
  ASSIGN_OR_RETURN(o.images, f.Bool("images"));
  ASSIGN_OR_RETURN(o.speech, f.Bool("speech"));
  ASSIGN_OR_RETURN(o.val.max_sequences, f.Int("val_sequences"));
  ASSIGN_OR_RETURN(int64_t val_batch, f.Int("val_batch"));
  ASSIGN_OR_RETURN(int64_t per_digit, f.Int("samples_per_digit"));
  if (val_batch < 1 || per_digit < 1) {
    return absl::InvalidArgumentError("--val_batch and --samples_per_digit must be positive");
  }
  o.val.batch_size = static_cast<int>(val_batch);
  o.samples_per_digit = static_cast<int>(per_digit);
  RETURN_IF_ERROR(SamplingFlags(f, &o.generation));
  return c;
}

absl::Status Eval(const EvalCommand& c) {
  ASSIGN_OR_RETURN(std::vector<std::string> checkpoints, Checkpoints(c.checkpoint, c.all));
  ASSIGN_OR_RETURN(std::unique_ptr<Backend> backend, NewBackend(c.device));
  CheckpointEvaluator evaluator(c.options, backend.get());
  std::vector<std::string> reports;
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
  }
  const std::string json =
      c.all ? absl::StrCat("[\n", absl::StrJoin(reports, ",\n"), "\n]\n") : reports[0] + "\n";
  if (c.out.empty()) {
    std::fputs(json.c_str(), stdout);
    return absl::OkStatus();
  }
  return WriteFileAtomic(c.out, json);
}

struct GenerateCommand {
  std::string checkpoint, prompt, modality, out, dataset_dir, device;
  GenerationOptions generation;
  int griffin_lim_iterations = 32;
};

absl::StatusOr<GenerateCommand> ParseGenerate(int argc, char** argv) {
  std::map<std::string, std::string> defaults = {
      {"checkpoint", ""}, {"prompt", ""}, {"modality", ""}, {"out", ""}, {"dataset_dir", ""},
      {"max_tokens", "0"}, {"griffin_lim_iterations", "32"}, {"device", "cpu"}};
  defaults.insert(SamplingDefaults().begin(), SamplingDefaults().end());
  ASSIGN_OR_RETURN(Flags f, Flags::Parse(argc, argv, defaults));
  RETURN_IF_ERROR(f.Required("checkpoint"));
  RETURN_IF_ERROR(f.Required("out"));
  GenerateCommand c;
  c.checkpoint = f.Str("checkpoint");
  c.prompt = f.Str("prompt");
  c.modality = f.Str("modality");
  c.out = f.Str("out");
  c.dataset_dir = f.Str("dataset_dir");
  c.device = f.Str("device");
  if (c.modality != "image" && c.modality != "speech" && c.modality != "text") {
    return absl::InvalidArgumentError("--modality must be image, speech or text");
  }
  RETURN_IF_ERROR(SamplingFlags(f, &c.generation));
  ASSIGN_OR_RETURN(int64_t max_tokens, f.Int("max_tokens"));
  if (max_tokens > 0) {
    c.generation.max_speech_units = c.generation.max_text_bytes = static_cast<int>(max_tokens);
  }
  ASSIGN_OR_RETURN(int64_t griffin_lim, f.Int("griffin_lim_iterations"));
  c.griffin_lim_iterations = static_cast<int>(griffin_lim);
  return c;
}

absl::Status Generate(const GenerateCommand& c) {
  ASSIGN_OR_RETURN(std::vector<std::string> found, Checkpoints(c.checkpoint, false));
  const std::string& ckpt = found[0];
  ASSIGN_OR_RETURN(v1::CheckpointManifest manifest, ReadManifest(ckpt));
  ASSIGN_OR_RETURN(std::unique_ptr<Backend> backend, NewBackend(c.device));
  ASSIGN_OR_RETURN(std::unique_ptr<MambaLM> model, LoadTrainedModel(ckpt, backend.get()));
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
    return data::WritePng(c.out, data::kImageSide, data::kImageSide, 1, pixels.data());
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
    return data::WriteWavFile(c.out, audio);
  }
  ASSIGN_OR_RETURN(std::vector<std::string> text, GenerateText(*lm, tok.vocab, {c.prompt}, g));
  return WriteFileAtomic(c.out, c.prompt + text[0] + "\n");
}

}  // namespace

int RunEvalCommand(int argc, char** argv) {
  absl::StatusOr<EvalCommand> c = ParseEval(argc, argv);
  if (!c.ok()) return Fail("eval", c.status(), 2);
  absl::Status st = Eval(*c);
  return st.ok() ? 0 : Fail("eval", st, 1);
}

int RunGenerateCommand(int argc, char** argv) {
  absl::StatusOr<GenerateCommand> c = ParseGenerate(argc, argv);
  if (!c.ok()) return Fail("generate", c.status(), 2);
  absl::Status st = Generate(*c);
  return st.ok() ? 0 : Fail("generate", st, 1);
}

}  // namespace modamba::eval
