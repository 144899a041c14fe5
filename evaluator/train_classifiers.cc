// Trains the MNIST and FSDD digit classifiers that score generated samples,
// prints their test accuracy and training time, and saves them where the
// evaluator looks for them (--out_dir, default DefaultClassifierDir()).
//
//   bazel run //evaluator:train_classifiers -- [--which=both|image|speech]
//       [--raw=DIR] [--out_dir=DIR] [--epochs=N] [--verbose]
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
ABSL_FLAG(bool, verbose, false, "print the test accuracy after every epoch");

namespace modamba::eval {
namespace {

absl::Status Run() {
  ASSIGN_OR_RETURN(std::string raw, data::FindRawDataDir(absl::GetFlag(FLAGS_raw)));
  std::string out = absl::GetFlag(FLAGS_out_dir);
  if (out.empty()) out = DefaultClassifierDir();
  RETURN_IF_ERROR(MakeDirs(out));
  ClassifierTraining opts;
  opts.epochs = absl::GetFlag(FLAGS_epochs);
  opts.lr = absl::GetFlag(FLAGS_lr);
  opts.verbose = absl::GetFlag(FLAGS_verbose);
  auto backend = NewCpuBackend();
  const std::string which = absl::GetFlag(FLAGS_which);
  auto report = [&](const char* what, const std::string& file,
                    TrainedClassifier& trained) -> absl::Status {
    std::printf("%-6s classifier: test accuracy %.4f, trained in %.1f s -> %s\n", what,
                trained.test_accuracy, trained.seconds, file.c_str());
    return trained.mlp->Save(file, {{"classifier", what},
                                    {"test_accuracy", absl::StrFormat("%.4f", trained.test_accuracy)}});
  };
  if (which == "both" || which == "image") {
    data::RawSelection sel;
    sel.speech = sel.text = false;
    ASSIGN_OR_RETURN(data::RawCorpus corpus, data::LoadRawCorpus(raw, sel));
    ASSIGN_OR_RETURN(TrainedClassifier trained,
                     TrainImageClassifier(corpus.images[data::kTrain], corpus.images[data::kVal],
                                          backend.get(), opts));
    RETURN_IF_ERROR(report("mnist", out + "/" + kImageClassifierFile, trained));
  }
  if (which == "both" || which == "speech") {
    data::RawSelection sel;
    sel.images = sel.text = false;
    sel.cathy = {0, 0};
    ASSIGN_OR_RETURN(data::RawCorpus corpus, data::LoadRawCorpus(raw, sel));
    ASSIGN_OR_RETURN(TrainedClassifier trained,
                     TrainSpeechClassifier(corpus.fsdd[data::kTrain], corpus.fsdd[data::kVal],
                                           backend.get(), opts));
    RETURN_IF_ERROR(report("fsdd", out + "/" + kSpeechClassifierFile, trained));
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
