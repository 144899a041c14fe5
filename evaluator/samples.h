// Generating images, speech and text from prompts with a RecurrentLM, and
// scoring generated digits with the digit classifiers.
//
// Prompts follow the training documents (core/data/documents.h):
//   image:  BOS "a handwritten seven" BOI, then 49 image tokens (VQ codes,
//           decoded with the dataset's codebook) or, in Transfusion, 49
//           patches sampled by diffusion (un-normalised to pixels)
//   speech: BOS "seven" BOS_SPEECH, then speech units until EOS_SPEECH,
//           decoded to log-mel frames by the dataset's unit tokenizer
//   text:   BOS prompt, then bytes until EOS (a byte-level model of a plain
//           text run, vocab 256: the prompt's bytes, then bytes)
// Sampled tokens are restricted to the span's own ids (image codes; speech
// units or EOS_SPEECH; bytes or EOS), as the document format requires.
#ifndef MODAMBA_EVALUATOR_SAMPLES_H_
#define MODAMBA_EVALUATOR_SAMPLES_H_

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/data/image_tokenizer.h"
#include "core/data/manifest.h"
#include "core/data/speech_tokenizer.h"
#include "evaluator/frechet.h"
#include "evaluator/generation.h"
#include "evaluator/ensemble.h"
#include "evaluator/recurrent.h"

namespace modamba::eval {

// What turns a dataset's tokens back into pixels and sound.
struct Tokenizers {
  std::string setting;  // "chameleon", "transfusion", "trimodal"; "text" without a dataset
  data::Vocab vocab;
  int patch_dim = 0;
  std::optional<data::ImageVq> vq;
  std::optional<data::SpeechUnits> speech;

  // Reads the dataset manifest and its tokenizers (checking their SHA-256).
  static absl::StatusOr<Tokenizers> Load(const std::string& dataset_dir);
  bool has_images() const { return vq.has_value() || patch_dim > 0; }
  bool has_speech() const { return speech.has_value(); }
};

struct GenerationOptions {
  SamplingOptions sampling;
  DiffusionOptions diffusion;
  int max_speech_units = 150;
  int max_text_bytes = 400;
  int batch = 50;  // streams decoded together
  uint64_t seed = 0;
};

// One image per caption, [captions, 784] pixels.
absl::StatusOr<std::vector<uint8_t>> GenerateImages(const RecurrentLM& lm, const Tokenizers& tok,
                                                    const std::vector<std::string>& captions,
                                                    const GenerationOptions& options);

struct SpeechSample {
  std::vector<int32_t> units;   // unit indices in [0, K)
  std::vector<float> log_mel;   // [frames, n_mels]
};
absl::StatusOr<std::vector<SpeechSample>> GenerateSpeech(const RecurrentLM& lm,
                                                         const Tokenizers& tok,
                                                         const std::vector<std::string>& transcripts,
                                                         const GenerationOptions& options);

absl::StatusOr<std::vector<std::string>> GenerateText(const RecurrentLM& lm,
                                                      const data::Vocab& vocab,
                                                      const std::vector<std::string>& prompts,
                                                      const GenerationOptions& options);

// Scores samples of asked digits with a classifier: the share classified as
// the asked digit, and the Frechet distance between the classifier's
// features of the samples and of a real reference set.
class DigitScorer {
 public:
  struct Score {
    int64_t samples = 0;
    double accuracy = 0;
    std::array<double, 10> per_digit{};  // accuracy per asked digit
    double frechet = 0;
    std::vector<int> predicted;  // the classifier's digit per sample
  };

  // `reference_inputs`: classifier inputs of the real reference set [n, input].
  static absl::StatusOr<DigitScorer> Create(Ensemble* classifier,
                                            const std::vector<float>& reference_inputs);
  // `inputs`: classifier inputs [digits, input].
  absl::StatusOr<Score> Evaluate(const std::vector<float>& inputs,
                                 const std::vector<int>& digits) const;
  const FeatureStats& reference() const { return reference_; }

 private:
  Ensemble* classifier_ = nullptr;
  FeatureStats reference_;
};

// Images [n, 784] as one PNG grid of `columns` per row, 2-pixel gaps.
absl::Status WriteImageGrid(const std::string& path, const std::vector<uint8_t>& pixels,
                            int columns);

}  // namespace modamba::eval

#endif  // MODAMBA_EVALUATOR_SAMPLES_H_
