#include "evaluator/samples.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "core/data/png_io.h"
#include "core/file_util.h"
#include "core/status_macros.h"

namespace modamba::eval {
namespace {

std::vector<int32_t> Prompt(absl::string_view text, int32_t opener) {
  std::vector<int32_t> out = {data::kBos};
  for (unsigned char c : text) out.push_back(c);
  if (opener >= 0) out.push_back(opener);
  return out;
}

// Runs `fn(decoder, begin, end)` over chunks of at most options.batch prompts,
// each chunk's decoder fed its prompts.
template <typename Fn>
absl::Status InChunks(const RecurrentLM& lm, const data::Vocab& vocab,
                      const std::vector<std::vector<int32_t>>& prompts,
                      const GenerationOptions& options, Fn fn) {
  const int64_t n = prompts.size();
  const int64_t chunk = std::max(1, options.batch);
  for (int64_t begin = 0; begin < n; begin += chunk) {
    const int64_t end = std::min(n, begin + chunk);
    Decoder decoder(&lm, vocab, static_cast<int>(end - begin), options.seed, begin);
    RETURN_IF_ERROR(decoder.FeedPrompts(
        std::vector<std::vector<int32_t>>(prompts.begin() + begin, prompts.begin() + end)));
    RETURN_IF_ERROR(fn(&decoder, begin, end));
  }
  return absl::OkStatus();
}

absl::Status CheckVocab(const RecurrentLM& lm, const data::Vocab& vocab) {
  if (lm.vocab_size() < vocab.size()) {
    return absl::InvalidArgumentError(absl::StrCat("the model's vocab (", lm.vocab_size(),
                                                   ") is smaller than the dataset's (",
                                                   vocab.size(), ")"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<Tokenizers> Tokenizers::Load(const std::string& dataset_dir) {
  ASSIGN_OR_RETURN(data::DatasetManifest manifest, data::ReadDatasetManifest(dataset_dir));
  Tokenizers tok;
  tok.setting = manifest.setting;
  tok.vocab = manifest.vocab;
  tok.patch_dim = manifest.patch_dim;
  for (const auto& [name, entry] : manifest.tokenizers) {
    const std::string path = absl::StrCat(dataset_dir, "/", entry.file);
    ASSIGN_OR_RETURN(std::string sha, Sha256File(path));
    if (sha != entry.sha256) {
      return absl::DataLossError(absl::StrCat(path, ": SHA-256 differs from the dataset manifest"));
    }
    if (name == "image_vq") {
      ASSIGN_OR_RETURN(tok.vq, data::ImageVq::Load(path));
    } else if (name == "speech_units") {
      ASSIGN_OR_RETURN(tok.speech, data::SpeechUnits::Load(path));
    }
  }
  return tok;
}

absl::StatusOr<std::vector<uint8_t>> GenerateImages(const RecurrentLM& lm, const Tokenizers& tok,
                                                    const std::vector<std::string>& captions,
                                                    const GenerationOptions& options) {
  RETURN_IF_ERROR(CheckVocab(lm, tok.vocab));
  const bool continuous = tok.patch_dim > 0;
  if (continuous && (lm.patch_dim() != tok.patch_dim || tok.patch_dim != data::kPatchDim)) {
    return absl::InvalidArgumentError(absl::StrCat("image patches: the model's patch_dim is ",
                                                   lm.patch_dim(), ", the dataset's ",
                                                   tok.patch_dim, "; images need ", data::kPatchDim));
  }
  if (!continuous && !tok.vq) {
    return absl::FailedPreconditionError(
        absl::StrCat("setting '", tok.setting, "' has no image tokenizer"));
  }
  std::vector<std::vector<int32_t>> prompts;
  for (const std::string& c : captions) prompts.push_back(Prompt(c, data::kBoi));
  std::vector<uint8_t> pixels(captions.size() * data::kImagePixels);
  const TokenSet codes{{{tok.vocab.image_begin(), tok.vocab.image_end()}}};
  RETURN_IF_ERROR(InChunks(lm, tok.vocab, prompts, options,
                           [&](Decoder* dec, int64_t begin, int64_t end) -> absl::Status {
    if (continuous) {
      ASSIGN_OR_RETURN(std::vector<float> patches,
                       dec->SampleImage(data::kPatchesPerImage, options.diffusion));
      for (int64_t i = begin; i < end; ++i) {
        data::ImageFromContinuousPatches(
            &patches[(i - begin) * data::kPatchesPerImage * data::kPatchDim],
            &pixels[i * data::kImagePixels]);
      }
      return absl::OkStatus();
    }
    ASSIGN_OR_RETURN(auto tokens, dec->Sample(codes, -1, data::kPatchesPerImage, options.sampling));
    for (int64_t i = begin; i < end; ++i) {
      std::vector<int32_t> code = tokens[i - begin];
      for (int32_t& c : code) c -= tok.vocab.image_begin();
      RETURN_IF_ERROR(tok.vq->Decode(code.data(), &pixels[i * data::kImagePixels]));
    }
    return absl::OkStatus();
  }));
  return pixels;
}

absl::StatusOr<std::vector<SpeechSample>> GenerateSpeech(const RecurrentLM& lm,
                                                         const Tokenizers& tok,
                                                         const std::vector<std::string>& transcripts,
                                                         const GenerationOptions& options) {
  RETURN_IF_ERROR(CheckVocab(lm, tok.vocab));
  if (!tok.speech) {
    return absl::FailedPreconditionError(
        absl::StrCat("setting '", tok.setting, "' has no speech tokenizer"));
  }
  std::vector<std::vector<int32_t>> prompts;
  for (const std::string& t : transcripts) prompts.push_back(Prompt(t, data::kBosSpeech));
  std::vector<SpeechSample> out(transcripts.size());
  const TokenSet units{{{tok.vocab.speech_begin(), tok.vocab.speech_end()},
                        {data::kEosSpeech, data::kEosSpeech + 1}}};
  RETURN_IF_ERROR(InChunks(lm, tok.vocab, prompts, options,
                           [&](Decoder* dec, int64_t begin, int64_t end) -> absl::Status {
    ASSIGN_OR_RETURN(auto tokens,
                     dec->Sample(units, data::kEosSpeech, options.max_speech_units, options.sampling));
    for (int64_t i = begin; i < end; ++i) {
      for (int32_t t : tokens[i - begin]) out[i].units.push_back(t - tok.vocab.speech_begin());
      ASSIGN_OR_RETURN(out[i].log_mel, tok.speech->Decode(out[i].units));
    }
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<std::vector<std::string>> GenerateText(const RecurrentLM& lm,
                                                      const data::Vocab& vocab,
                                                      const std::vector<std::string>& prompts,
                                                      const GenerationOptions& options) {
  if (lm.vocab_size() < data::kNumByteTokens) {
    return absl::InvalidArgumentError(
        absl::StrCat("the model's vocab (", lm.vocab_size(), ") does not cover the bytes"));
  }
  // A byte-level model (a plain text run) has no BOS / EOS: bytes only.
  const bool specials = lm.vocab_size() > data::kEos;
  std::vector<std::vector<int32_t>> fed;
  for (const std::string& p : prompts) {
    fed.push_back(Prompt(p, -1));
    if (!specials) fed.back().erase(fed.back().begin());
  }
  std::vector<std::string> out(prompts.size());
  TokenSet bytes{{{0, data::kNumByteTokens}}};
  if (specials) bytes.ranges.push_back({data::kEos, data::kEos + 1});
  RETURN_IF_ERROR(InChunks(lm, vocab, fed, options,
                           [&](Decoder* dec, int64_t begin, int64_t end) -> absl::Status {
    ASSIGN_OR_RETURN(auto tokens, dec->Sample(bytes, specials ? data::kEos : -1,
                                              options.max_text_bytes, options.sampling));
    for (int64_t i = begin; i < end; ++i) {
      for (int32_t t : tokens[i - begin]) out[i].push_back(static_cast<char>(t));
    }
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<DigitScorer> DigitScorer::Create(Ensemble* classifier,
                                                const std::vector<float>& reference_inputs) {
  const int64_t n = reference_inputs.size() / classifier->input_dim();
  std::vector<float> features(static_cast<size_t>(n) * classifier->feature_dim());
  classifier->Forward(reference_inputs.data(), n, nullptr, features.data());
  DigitScorer scorer;
  scorer.classifier_ = classifier;
  ASSIGN_OR_RETURN(scorer.reference_,
                   ComputeFeatureStats(features.data(), n, classifier->feature_dim()));
  return scorer;
}

absl::StatusOr<DigitScorer::Score> DigitScorer::Evaluate(const std::vector<float>& inputs,
                                                         const std::vector<int>& digits) const {
  const int64_t n = digits.size();
  if (inputs.size() != static_cast<size_t>(n) * classifier_->input_dim()) {
    return absl::InvalidArgumentError("DigitScorer: one classifier input per digit");
  }
  const int classes = classifier_->classes();
  std::vector<float> log_probs(static_cast<size_t>(n) * classes),
      features(static_cast<size_t>(n) * classifier_->feature_dim());
  classifier_->Forward(inputs.data(), n, log_probs.data(), features.data());
  Score score;
  score.samples = n;
  std::array<int64_t, 10> asked{}, right{};
  for (int64_t i = 0; i < n; ++i) {
    const float* row = &log_probs[i * classes];
    const int predicted = static_cast<int>(std::max_element(row, row + classes) - row);
    score.predicted.push_back(predicted);
    asked[digits[i]]++;
    right[digits[i]] += predicted == digits[i];
  }
  int64_t total_right = 0;
  for (int d = 0; d < 10; ++d) {
    total_right += right[d];
    score.per_digit[d] = asked[d] ? static_cast<double>(right[d]) / asked[d] : 0;
  }
  score.accuracy = n ? static_cast<double>(total_right) / n : 0;
  ASSIGN_OR_RETURN(FeatureStats stats,
                   ComputeFeatureStats(features.data(), n, classifier_->feature_dim()));
  ASSIGN_OR_RETURN(score.frechet, FrechetDistance(stats, reference_));
  return score;
}

absl::Status WriteImageGrid(const std::string& path, const std::vector<uint8_t>& pixels,
                            int columns) {
  constexpr int kGap = 2, kSide = data::kImageSide;
  const int n = static_cast<int>(pixels.size() / data::kImagePixels);
  if (n == 0 || columns < 1) return absl::InvalidArgumentError("image grid: no images");
  const int rows = (n + columns - 1) / columns;
  const int width = columns * (kSide + kGap) + kGap, height = rows * (kSide + kGap) + kGap;
  std::vector<uint8_t> grid(static_cast<size_t>(width) * height, 96);
  for (int i = 0; i < n; ++i) {
    const int top = kGap + (i / columns) * (kSide + kGap), left = kGap + (i % columns) * (kSide + kGap);
    for (int r = 0; r < kSide; ++r) {
      std::copy_n(&pixels[static_cast<size_t>(i) * data::kImagePixels + r * kSide], kSide,
                  &grid[static_cast<size_t>(top + r) * width + left]);
    }
  }
  return data::WritePng(path, width, height, 1, grid.data());
}

}  // namespace modamba::eval
