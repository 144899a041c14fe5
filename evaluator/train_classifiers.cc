// Trains the MNIST and FSDD digit judges that score generated samples,
// prints their clean and augmented test accuracy and training time, and saves
// them, keyed by their training data and recipe, where the evaluator looks
// for them (--out_dir, default DefaultClassifierDir()). --loso instead prints
// the speech recipe's leave-one-speaker-out table (every FSDD speaker held out
// once; nothing saved).
//
//   bazel run //evaluator:train_classifiers -- [--which=both|image|speech]
//       [--raw=DIR] [--out_dir=DIR] [--epochs=N] [--speech_copies=N]
//       [--augment=true] [--vtlp=0] [--train_items=-1] [--seed=1] [--verbose] [--loso]
//       [--loso_speakers=A,B]
#include <cstdio>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_format.h"
#include "core/data/raw_data.h"
#include "core/file_util.h"
#include "core/status_macros.h"
#include "evaluator/digit_classifiers.h"

ABSL_FLAG(std::string, which, "both", "image, speech or both");
ABSL_FLAG(std::string, raw, "", "raw data directory (default: $MODAMBA_DATA_DIR, ../shared/data)");
ABSL_FLAG(std::string, out_dir, "", "where to save (default: the evaluator's classifier cache)");
ABSL_FLAG(int, epochs, 0, "epochs (0: each recipe's default)");
ABSL_FLAG(double, lr, 2e-3, "peak learning rate");
ABSL_FLAG(uint64_t, seed, 1, "seed of the weights, the batches and the augmentations");
ABSL_FLAG(int, speech_copies, 0, "augmented copies of each training take (0: the recipe's default)");
ABSL_FLAG(bool, augment, true, "train with the augmentations (false: the clean data only)");
ABSL_FLAG(double, vtlp, 0,
          "speech: vocal tract length perturbation of the training copies, warp factors in "
          "[1 - v, 1 + v] (0: none, the recipe)");
ABSL_FLAG(int64_t, train_items, -1, "training items from the start of the train split (-1: all)");
ABSL_FLAG(bool, verbose, false, "print the test accuracy after every epoch");
ABSL_FLAG(bool, loso, false, "print the speech leave-one-speaker-out table instead of training judges");
ABSL_FLAG(std::vector<std::string>, loso_speakers, {},
          "with --loso: hold out only these speakers (comma-separated; default all)");

namespace modamba::eval {
namespace {

absl::Status LeaveOneSpeakerOutTable(const std::string& raw, const ClassifierTraining& opts) {
  data::RawSelection sel;
  sel.images = sel.text = false;
  sel.cathy = {0, 0};
  ASSIGN_OR_RETURN(data::RawCorpus corpus, data::LoadRawCorpus(raw, sel));
  std::vector<data::Recording> all = corpus.fsdd[data::kTrain];
  all.insert(all.end(), corpus.fsdd[data::kVal].begin(), corpus.fsdd[data::kVal].end());
  auto backend = NewCpuBackend();
  ASSIGN_OR_RETURN(std::vector<SpeakerFold> folds, LeaveOneSpeakerOut(all, backend.get(), opts,
                                                                    absl::GetFlag(FLAGS_loso_speakers)));
  std::printf("leave-one-speaker-out, FSDD (train on the other speakers' takes)\n");
  std::printf("%-10s %6s %8s %10s %9s\n", "held out", "takes", "clean", "augmented", "train s");
  double clean = 0, augmented = 0, seconds = 0;
  int64_t takes = 0;
  for (const SpeakerFold& f : folds) {
    std::printf("%-10s %6lld %8.4f %10.4f %9.1f\n", f.speaker.c_str(),
                static_cast<long long>(f.takes), f.accuracy, f.augmented_accuracy, f.seconds);
    clean += f.accuracy * f.takes;
    augmented += f.augmented_accuracy * f.takes;
    seconds += f.seconds;
    takes += f.takes;
  }
  std::printf("%-10s %6lld %8.4f %10.4f %9.1f\n", "all", static_cast<long long>(takes),
              clean / takes, augmented / takes, seconds);
  return absl::OkStatus();
}

absl::Status Run() {
  ASSIGN_OR_RETURN(std::string raw, data::FindRawDataDir(absl::GetFlag(FLAGS_raw)));
  JudgeOptions opts;
  opts.training.epochs = absl::GetFlag(FLAGS_epochs);
  opts.training.lr = absl::GetFlag(FLAGS_lr);
  opts.training.seed = absl::GetFlag(FLAGS_seed);
  opts.training.speech_copies = absl::GetFlag(FLAGS_speech_copies);
  opts.training.augment = absl::GetFlag(FLAGS_augment);
  opts.training.vtlp = absl::GetFlag(FLAGS_vtlp);
  opts.training.verbose = absl::GetFlag(FLAGS_verbose);
  opts.train_items = absl::GetFlag(FLAGS_train_items);
  if (absl::GetFlag(FLAGS_loso)) return LeaveOneSpeakerOutTable(raw, opts.training);
  std::string out = absl::GetFlag(FLAGS_out_dir);
  if (out.empty()) out = DefaultClassifierDir();
  RETURN_IF_ERROR(MakeDirs(out));
  auto backend = NewCpuBackend();
  const std::string which = absl::GetFlag(FLAGS_which);
  if (which != "both" && which != "image" && which != "speech") {
    return absl::InvalidArgumentError("--which must be both, image or speech");
  }
  for (JudgeKind kind : {JudgeKind::kImage, JudgeKind::kSpeech}) {
    if (which != "both" && (which == "image") != (kind == JudgeKind::kImage)) continue;
    ASSIGN_OR_RETURN(Judge judge, TrainJudge(kind, out, raw, backend.get(), opts));
    ASSIGN_OR_RETURN(double floor, TrainTestFrechet(kind, judge));
    std::string cer;
    if (kind == JudgeKind::kSpeech) {
      const auto& test = judge.corpus.fsdd[data::kVal];
      const std::vector<float> x = RecordingInputs(test);
      const std::vector<int32_t> predicted = judge.classifier->Predict(x.data(), test.size());
      std::vector<int> asked;
      for (const data::Recording& r : test) asked.push_back(r.digit);
      cer = absl::StrFormat(", test CER %.4f",
                            DigitWordCer(std::vector<int>(predicted.begin(), predicted.end()), asked));
    }
    std::printf(
        "%-6s judge: test accuracy %s, augmented test %s%s, train vs test Frechet %.3f, trained "
        "in %s s on %s items -> %s\n",
        judge.metadata["classifier"].c_str(), judge.metadata["test_accuracy"].c_str(),
        judge.metadata["augmented_test_accuracy"].c_str(), cer.c_str(), floor,
        judge.metadata["train_seconds"].c_str(), judge.metadata["train_items"].c_str(),
        judge.path.c_str());
  }
  return absl::OkStatus();
}

}  // namespace
}  // namespace modamba::eval

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  absl::Status st = modamba::eval::Run();
  if (!st.ok()) {
    std::fprintf(stderr, "train_classifiers: %s\n", std::string(st.message()).c_str());
    return 1;
  }
  return 0;
}
