#include "evaluator/evaluate.h"

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "core/batch_source.h"
#include "core/checkpoint.h"
#include "core/data/audio.h"
#include "core/data/documents.h"
#include "core/data/raw_data.h"
#include "core/file_util.h"
#include "core/status_macros.h"
#include "evaluator/digit_classifiers.h"
#include "evaluator/recurrent.h"

namespace modamba::eval {

struct CheckpointEvaluator::Reference {
  std::optional<DigitScorer> scorer;
  std::map<std::string, double> lines;  // reference metrics, without the "image/" prefix
};

namespace {

// The first `per_digit` items of each digit, in AskedDigits order.
std::vector<int64_t> PerDigitSubset(const std::vector<int>& labels, int per_digit) {
  std::vector<int64_t> out;
  for (int d = 0; d < 10; ++d) {
    int taken = 0;
    for (size_t i = 0; i < labels.size() && taken < per_digit; ++i) {
      if (labels[i] != d) continue;
      out.push_back(i);
      ++taken;
    }
  }
  return out;
}

std::vector<float> Rows(const std::vector<float>& inputs, int dim,
                        const std::vector<int64_t>& rows) {
  std::vector<float> out;
  for (int64_t r : rows) out.insert(out.end(), inputs.begin() + r * dim, inputs.begin() + (r + 1) * dim);
  return out;
}

std::vector<int> LabelsOf(const std::vector<int>& labels, const std::vector<int64_t>& rows) {
  std::vector<int> out;
  for (int64_t r : rows) out.push_back(labels[r]);
  return out;
}

// "fsdd-tdnn/5, 2700 training items (sha256 1a2b3c4d5e6f), PATH".
std::string JudgeSummary(const Judge& judge) {
  auto get = [&](const char* key) {
    auto it = judge.metadata.find(key);
    return it == judge.metadata.end() ? std::string("?") : it->second;
  };
  return absl::StrCat(get("code_version"), ", ", get("train_items"), " training items (sha256 ",
                      get("data_sha256").substr(0, 12), "), ", judge.path);
}

void AddValidation(const ValidationMetrics& v, EvalReport* report) {
  for (const auto& [name, value] : v.Flat()) report->metrics[name] = value;
}

}  // namespace

std::vector<int> AskedDigits(int per_digit) {
  std::vector<int> out;
  for (int d = 0; d < 10; ++d) out.insert(out.end(), per_digit, d);
  return out;
}

std::string EvalReport::ToJson() const {
  nlohmann::json j;
  j["checkpoint"] = checkpoint;
  j["step"] = step;
  j["flops"] = flops;
  j["metrics"] = metrics;
  j["files"] = files;
  j["judges"] = judges;
  return j.dump(2);
}

CheckpointEvaluator::CheckpointEvaluator(const EvalOptions& options, Backend* backend)
    : options_(options), backend_(backend) {}

CheckpointEvaluator::~CheckpointEvaluator() = default;

absl::StatusOr<const Tokenizers*> CheckpointEvaluator::TokenizersFor(const std::string& dir) {
  auto it = tokenizers_.find(dir);
  if (it == tokenizers_.end()) {
    ASSIGN_OR_RETURN(Tokenizers tok, Tokenizers::Load(dir));
    it = tokenizers_.emplace(dir, std::move(tok)).first;
  }
  return &it->second;
}

absl::StatusOr<Judge*> CheckpointEvaluator::JudgeFor(JudgeKind kind) {
  std::optional<Judge>& judge = kind == JudgeKind::kImage ? image_judge_ : speech_judge_;
  if (judge) return &*judge;
  if (raw_dir_.empty()) {
    ASSIGN_OR_RETURN(raw_dir_, data::FindRawDataDir(options_.raw_dir));
  }
  const std::string dir =
      options_.classifier_dir.empty() ? DefaultClassifierDir() : options_.classifier_dir;
  ASSIGN_OR_RETURN(judge, LoadOrTrainJudge(kind, dir, raw_dir_, backend_, JudgeOptions{}));
  return &*judge;
}

absl::StatusOr<CheckpointEvaluator::Reference*> CheckpointEvaluator::ImageReference(
    const std::string& dataset_dir, const Tokenizers& tok) {
  const std::string key = "image:" + dataset_dir;
  if (auto it = references_.find(key); it != references_.end()) return it->second.get();
  ASSIGN_OR_RETURN(Judge * judge, JudgeFor(JudgeKind::kImage));
  Ensemble* classifier = judge->classifier.get();
  const data::MnistSet& test = judge->corpus.images[data::kVal];
  auto ref = std::make_unique<Reference>();
  const std::vector<float> inputs = ImageInputs(test.pixels.data(), test.count());
  const std::vector<int> labels(test.labels.begin(), test.labels.end());
  const std::vector<int32_t> labels32(labels.begin(), labels.end());
  ASSIGN_OR_RETURN(DigitScorer scorer, DigitScorer::Create(classifier, inputs));
  ref->scorer = std::move(scorer);
  ref->lines["ref_real_accuracy"] = Accuracy(classifier, inputs, labels32);
  ref->lines["ref_augmented_accuracy"] =
      Accuracy(classifier, AugmentedImageInputs(test, kAugmentedTestSeed), labels32);
  const std::vector<int64_t> subset = PerDigitSubset(labels, options_.samples_per_digit);
  const int dim = data::kImagePixels;
  ASSIGN_OR_RETURN(DigitScorer::Score real,
                   ref->scorer->Evaluate(Rows(inputs, dim, subset), LabelsOf(labels, subset)));
  ref->lines["ref_real_frechet"] = real.frechet;
  ASSIGN_OR_RETURN(ref->lines["ref_train_test_frechet"],
                   TrainTestFrechet(JudgeKind::kImage, *judge));
  if (tok.vq) {
    // MNIST test through the codebook: what a model that produced the
    // right codes would score.
    const std::vector<int32_t> codes = tok.vq->Encode(test.pixels.data(), test.count());
    std::vector<uint8_t> recon(test.pixels.size());
    double psnr = 0;
    for (int64_t i = 0; i < test.count(); ++i) {
      RETURN_IF_ERROR(tok.vq->Decode(&codes[i * data::kPatchesPerImage], &recon[i * dim]));
      psnr += data::Psnr(test.image(i), &recon[i * dim], dim);
    }
    ref->lines["ref_vq_psnr"] = psnr / test.count();
    const std::vector<float> recon_inputs = ImageInputs(recon.data(), test.count());
    ref->lines["ref_vq_accuracy"] = Accuracy(classifier, recon_inputs, labels32);
    ASSIGN_OR_RETURN(DigitScorer::Score vq, ref->scorer->Evaluate(Rows(recon_inputs, dim, subset),
                                                                  LabelsOf(labels, subset)));
    ref->lines["ref_vq_frechet"] = vq.frechet;
  }
  Reference* out = ref.get();
  references_[key] = std::move(ref);
  return out;
}

absl::StatusOr<CheckpointEvaluator::Reference*> CheckpointEvaluator::SpeechReference(
    const std::string& dataset_dir, const Tokenizers& tok) {
  const std::string key = "speech:" + dataset_dir;
  if (auto it = references_.find(key); it != references_.end()) return it->second.get();
  const data::MelAnalyzer mel{data::MelConfig{}};
  const int n_mels = mel.config().n_mels;
  if (tok.speech->mel_config().n_mels != n_mels) {
    return absl::InvalidArgumentError(absl::StrCat(
        dataset_dir, ": the speech tokenizer has ", tok.speech->mel_config().n_mels,
        " mel bands, the speech classifier ", n_mels));
  }
  ASSIGN_OR_RETURN(Judge * judge, JudgeFor(JudgeKind::kSpeech));
  Ensemble* classifier = judge->classifier.get();
  const std::vector<data::Recording>& test = judge->corpus.fsdd[data::kVal];
  std::vector<std::vector<float>> test_mels;
  std::vector<int> digits;
  for (const data::Recording& r : test) {
    test_mels.push_back(mel.LogMel(r.audio.samples));
    digits.push_back(r.digit);
  }
  auto ref = std::make_unique<Reference>();
  const std::vector<float> inputs = SpeechInputs(test_mels, n_mels);
  const std::vector<int32_t> labels32(digits.begin(), digits.end());
  ASSIGN_OR_RETURN(DigitScorer scorer, DigitScorer::Create(classifier, inputs));
  ref->scorer = std::move(scorer);
  ASSIGN_OR_RETURN(DigitScorer::Score all, ref->scorer->Evaluate(inputs, digits));
  ref->lines["ref_real_accuracy"] = all.accuracy;
  ref->lines["ref_real_cer"] = DigitWordCer(all.predicted, digits);
  ref->lines["ref_augmented_accuracy"] =
      Accuracy(classifier, AugmentedSpeechInputs(test, kAugmentedTestSeed), labels32);
  const std::vector<int64_t> subset = PerDigitSubset(digits, options_.samples_per_digit);
  const int dim = SpeechInputDim();
  const std::vector<int> subset_digits = LabelsOf(digits, subset);
  ASSIGN_OR_RETURN(DigitScorer::Score real,
                   ref->scorer->Evaluate(Rows(inputs, dim, subset), subset_digits));
  ref->lines["ref_real_frechet"] = real.frechet;
  ASSIGN_OR_RETURN(ref->lines["ref_train_test_frechet"],
                   TrainTestFrechet(JudgeKind::kSpeech, *judge));
  // Real test takes through the unit tokenizer: what a model that produced
  // the right units would score.
  std::vector<std::vector<float>> resynth;
  for (const auto& m : test_mels) {
    ASSIGN_OR_RETURN(std::vector<float> back, tok.speech->Decode(tok.speech->Encode(m)));
    resynth.push_back(std::move(back));
  }
  const std::vector<float> unit_inputs = SpeechInputs(resynth, n_mels);
  ASSIGN_OR_RETURN(DigitScorer::Score units_all, ref->scorer->Evaluate(unit_inputs, digits));
  ref->lines["ref_units_accuracy"] = units_all.accuracy;
  ref->lines["ref_units_cer"] = DigitWordCer(units_all.predicted, digits);
  ASSIGN_OR_RETURN(DigitScorer::Score units,
                   ref->scorer->Evaluate(Rows(unit_inputs, dim, subset), subset_digits));
  ref->lines["ref_units_frechet"] = units.frechet;
  Reference* out = ref.get();
  references_[key] = std::move(ref);
  return out;
}

absl::Status CheckpointEvaluator::ImageMetrics(const RecurrentLM& lm,
                                               const std::string& dataset_dir,
                                               const Tokenizers& tok, EvalReport* report) {
  ASSIGN_OR_RETURN(Reference * ref, ImageReference(dataset_dir, tok));
  const std::vector<int> digits = AskedDigits(options_.samples_per_digit);
  std::vector<std::string> captions;
  for (int d : digits) captions.push_back(data::DigitCaption(d));
  ASSIGN_OR_RETURN(std::vector<uint8_t> pixels,
                   GenerateImages(lm, tok, captions, options_.generation));
  ASSIGN_OR_RETURN(DigitScorer::Score score,
                   ref->scorer->Evaluate(ImageInputs(pixels.data(), digits.size()), digits));
  report->metrics["image/samples"] = score.samples;
  report->metrics["image/accuracy"] = score.accuracy;
  report->metrics["image/frechet"] = score.frechet;
  ASSIGN_OR_RETURN(Judge * judge, JudgeFor(JudgeKind::kImage));
  report->judges["image"] = JudgeSummary(*judge);
  for (const auto& [name, value] : ref->lines) report->metrics["image/" + name] = value;
  if (!options_.output_dir.empty()) {
    RETURN_IF_ERROR(MakeDirs(options_.output_dir));
    const std::string path = options_.output_dir + "/images.png";
    RETURN_IF_ERROR(WriteImageGrid(path, pixels, options_.samples_per_digit));
    report->files.push_back(path);
  }
  return absl::OkStatus();
}

absl::Status CheckpointEvaluator::SpeechMetrics(const RecurrentLM& lm,
                                                const std::string& dataset_dir,
                                                const Tokenizers& tok, EvalReport* report) {
  ASSIGN_OR_RETURN(Reference * ref, SpeechReference(dataset_dir, tok));
  const std::vector<int> digits = AskedDigits(options_.samples_per_digit);
  std::vector<std::string> words;
  for (int d : digits) words.push_back(data::DigitWord(d));
  ASSIGN_OR_RETURN(std::vector<SpeechSample> samples,
                   GenerateSpeech(lm, tok, words, options_.generation));
  std::vector<std::vector<float>> mels;
  double units = 0;
  for (const SpeechSample& s : samples) {
    mels.push_back(s.log_mel);
    units += s.units.size();
  }
  const int n_mels = tok.speech->mel_config().n_mels;
  ASSIGN_OR_RETURN(DigitScorer::Score score,
                   ref->scorer->Evaluate(SpeechInputs(mels, n_mels), digits));
  report->metrics["speech/samples"] = score.samples;
  report->metrics["speech/accuracy"] = score.accuracy;
  report->metrics["speech/frechet"] = score.frechet;
  report->metrics["speech/cer"] = DigitWordCer(score.predicted, digits);
  ASSIGN_OR_RETURN(Judge * judge, JudgeFor(JudgeKind::kSpeech));
  report->judges["speech"] = JudgeSummary(*judge);
  report->metrics["speech/mean_units"] = samples.empty() ? 0 : units / samples.size();
  for (const auto& [name, value] : ref->lines) report->metrics["speech/" + name] = value;
  if (!options_.output_dir.empty()) {
    RETURN_IF_ERROR(MakeDirs(options_.output_dir));
    const data::MelAnalyzer analyzer(tok.speech->mel_config());
    for (size_t i = 0; i < samples.size(); i += options_.samples_per_digit) {
      const int frames = static_cast<int>(mels[i].size() / n_mels);
      if (frames == 0) continue;
      data::Audio audio;
      audio.sample_rate = analyzer.config().sample_rate;
      audio.samples = analyzer.GriffinLim(mels[i].data(), frames,
                                          options_.griffin_lim_iterations, options_.generation.seed);
      const std::string path = absl::StrCat(options_.output_dir, "/speech_", digits[i], ".wav");
      RETURN_IF_ERROR(data::WriteWavFile(path, audio));
      report->files.push_back(path);
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<EvalReport> CheckpointEvaluator::EvaluateModel(LanguageModel* model,
                                                              const v1::TrainConfig& config) {
  EvalReport report;
  const std::string dataset_dir =
      options_.dataset_dir.empty() ? config.dataset_dir() : options_.dataset_dir;
  if (dataset_dir.empty()) {
    // A byte-level text run: its validation batches, no generation metrics.
    if (options_.validation) {
      ASSIGN_OR_RETURN(auto source, OpenBatchSource(config, 0, 1));
      ASSIGN_OR_RETURN(std::vector<Batch> batches, source->Validation());
      ASSIGN_OR_RETURN(ValidationMetrics v, EvaluateBatches(model, batches));
      AddValidation(v, &report);
    }
    return report;
  }
  ASSIGN_OR_RETURN(const Tokenizers* tok, TokenizersFor(dataset_dir));
  if (options_.validation) {
    ASSIGN_OR_RETURN(ValidationMetrics v, EvaluateValidation(model, dataset_dir, options_.val));
    AddValidation(v, &report);
  }
  const bool images = options_.images && tok->has_images();
  const bool speech = options_.speech && tok->has_speech();
  if (images || speech) {
    ASSIGN_OR_RETURN(std::unique_ptr<RecurrentLM> lm, RecurrentLM::FromModel(*model));
    if (images) RETURN_IF_ERROR(ImageMetrics(*lm, dataset_dir, *tok, &report));
    if (speech) RETURN_IF_ERROR(SpeechMetrics(*lm, dataset_dir, *tok, &report));
  }
  return report;
}

absl::StatusOr<EvalReport> CheckpointEvaluator::Evaluate(const std::string& checkpoint_dir) {
  ASSIGN_OR_RETURN(v1::CheckpointManifest manifest, ReadManifest(checkpoint_dir));
  ASSIGN_OR_RETURN(std::unique_ptr<LanguageModel> model,
                   LoadTrainedModel(checkpoint_dir, backend_));
  ASSIGN_OR_RETURN(EvalReport report, EvaluateModel(model.get(), manifest.config()));
  report.checkpoint = checkpoint_dir;
  report.step = manifest.step();
  report.flops = manifest.flops();
  return report;
}

}  // namespace modamba::eval
