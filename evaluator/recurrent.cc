#include "evaluator/recurrent.h"

#include "absl/strings/str_cat.h"

namespace modamba::eval {

absl::StatusOr<std::unique_ptr<RecurrentLM>> RecurrentLM::FromModel(const LanguageModel& model) {
  const DType dtype = model.params().dtype();
  if (dtype != DType::kF32 && dtype != DType::kF64) {
    return absl::InvalidArgumentError(
        absl::StrCat("model parameters are ", DTypeName(dtype), ", not F32 or F64"));
  }
  return std::unique_ptr<RecurrentLM>(new RecurrentLM(model));
}

}  // namespace modamba::eval
