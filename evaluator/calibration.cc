#include "evaluator/calibration.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace modamba::eval {

std::string CalibrationTable(const std::map<std::string, double>& metrics,
                             const std::map<std::string, std::string>& judges) {
  std::string out;
  for (const char* modality : {"image", "speech"}) {
    auto get = [&](const char* name) -> const double* {
      auto it = metrics.find(absl::StrCat(modality, "/", name));
      return it == metrics.end() ? nullptr : &it->second;
    };
    auto num = [&](const char* label, const char* name, const char* format) {
      const double* v = get(name);
      return v == nullptr ? std::string() : absl::StrCat(label, absl::StrFormat(format, *v));
    };
    if (get("accuracy") == nullptr) continue;
    const bool image = std::string(modality) == "image";
    absl::StrAppend(&out, absl::StrFormat("%-6s judge on real %s: ", modality,
                                          image ? "MNIST test" : "FSDD test takes"),
                    num("", "ref_real_accuracy", "%.4f"),
                    num(", augmented ", "ref_augmented_accuracy", "%.4f"),
                    num(", cer ", "ref_real_cer", "%.4f"),
                    num(image ? "; through the codebook " : "; through the units ",
                        image ? "ref_vq_accuracy" : "ref_units_accuracy", "%.4f"),
                    num(", cer ", "ref_units_cer", "%.4f"), "\n");
    absl::StrAppend(&out, absl::StrFormat("%-6s model: ", ""), num("accuracy ", "accuracy", "%.4f"),
                    num(", cer ", "cer", "%.4f"), num(", frechet ", "frechet", "%.2f"),
                    num(" (real at this sample size ", "ref_real_frechet", "%.2f"),
                    num(", train vs test floor ", "ref_train_test_frechet", "%.2f"), ")\n");
    if (auto it = judges.find(modality); it != judges.end()) {
      absl::StrAppend(&out, absl::StrFormat("%-6s judge: ", ""), it->second, "\n");
    }
  }
  return out;
}

}  // namespace modamba::eval
