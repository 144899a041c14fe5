// Everything an evaluator reports for one checkpoint:
//   val/...     per-modality validation loss (evaluator/validation.h)
//   image/...   "a handwritten <digit>" -> image, samples_per_digit per digit:
//               accuracy (share classified as the asked digit), frechet
//               (FID on the judge's features vs the MNIST test set), and
//               reference lines: ref_real_accuracy / ref_augmented_accuracy
//               (the judge on MNIST test, clean and augmented: its
//               calibration), ref_real_frechet (as many real test images as
//               samples), ref_train_test_frechet (10,000 training images: the
//               floor), ref_vq_psnr / ref_vq_accuracy / ref_vq_frechet (MNIST
//               test through the dataset's VQ codebook; discrete settings)
//   speech/...  "<digit word>" -> speech units -> log-mel frames, the same
//               accuracy / frechet against FSDD test takes, cer (character
//               error rate of the recognised digit words), mean_units, and
//               ref_real_accuracy, ref_augmented_accuracy, ref_real_cer,
//               ref_real_frechet, ref_train_test_frechet, ref_units_accuracy,
//               ref_units_cer and ref_units_frechet (real test takes through
//               the unit tokenizer)
// The classifiers, real features and reference lines are computed once and
// reused for every checkpoint an evaluator sees.
#ifndef MODAMBA_EVALUATOR_EVALUATE_H_
#define MODAMBA_EVALUATOR_EVALUATE_H_

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/backend.h"
#include "core/data/mnist.h"
#include "core/model.h"
#include "evaluator/digit_classifiers.h"
#include "evaluator/ensemble.h"
#include "evaluator/samples.h"
#include "evaluator/validation.h"
#include "proto/config.pb.h"

namespace modamba::eval {

struct EvalOptions {
  std::string dataset_dir;     // "": the checkpoint config's dataset_dir
  std::string raw_dir;         // "": FindRawDataDir("")
  std::string classifier_dir;  // "": DefaultClassifierDir()
  bool validation = true;
  bool images = true;
  bool speech = true;
  ValidationOptions val;
  GenerationOptions generation;
  int samples_per_digit = 4;
  // Where to write the image grid (images.png: one row per digit) and one
  // WAV per digit; "" writes nothing.
  std::string output_dir;
  int griffin_lim_iterations = 32;
};

struct EvalReport {
  std::string checkpoint;
  int64_t step = 0;
  double flops = 0;
  std::map<std::string, double> metrics;
  std::vector<std::string> files;  // written under output_dir
  // Per modality judged ("image", "speech"): which judge, trained on what.
  std::map<std::string, std::string> judges;
  std::string ToJson() const;
};

class CheckpointEvaluator {
 public:
  CheckpointEvaluator(const EvalOptions& options, Backend* backend);
  ~CheckpointEvaluator();

  // Loads (and sha256-checks) a checkpoint directory, then EvaluateModel.
  absl::StatusOr<EvalReport> Evaluate(const std::string& checkpoint_dir);
  // Where later evaluations write their files ("" for none).
  void set_output_dir(const std::string& dir) { options_.output_dir = dir; }
  // Evaluates a model trained with `config`.
  absl::StatusOr<EvalReport> EvaluateModel(LanguageModel* model, const v1::TrainConfig& config);

 private:
  struct Reference;  // a classifier, its real-data scorer and reference lines
  absl::StatusOr<const Tokenizers*> TokenizersFor(const std::string& dataset_dir);
  // The judge, loaded (its cache key checked against the raw data) or
  // trained on first use.
  absl::StatusOr<Judge*> JudgeFor(JudgeKind kind);
  absl::StatusOr<Reference*> ImageReference(const std::string& dataset_dir, const Tokenizers& tok);
  absl::StatusOr<Reference*> SpeechReference(const std::string& dataset_dir, const Tokenizers& tok);
  absl::Status ImageMetrics(const RecurrentLM& lm, const std::string& dataset_dir,
                            const Tokenizers& tok, EvalReport* report);
  absl::Status SpeechMetrics(const RecurrentLM& lm, const std::string& dataset_dir,
                             const Tokenizers& tok, EvalReport* report);

  EvalOptions options_;
  Backend* backend_;
  std::string raw_dir_;
  std::map<std::string, Tokenizers> tokenizers_;        // by dataset dir
  std::optional<Judge> image_judge_, speech_judge_;
  std::map<std::string, std::unique_ptr<Reference>> references_;  // "image:<dir>", "speech:<dir>"
};

// The asked digits of an evaluation: 0..9, each `per_digit` times, in order.
std::vector<int> AskedDigits(int per_digit);

}  // namespace modamba::eval

#endif  // MODAMBA_EVALUATOR_EVALUATE_H_
