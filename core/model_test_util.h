// Checks shared by the language-model tests of every block kind: gradients
// against finite differences in double, learning one batch in float, and
// the Transfusion patch rows of a small batch.
#ifndef MODAMBA_CORE_MODEL_TEST_UTIL_H_
#define MODAMBA_CORE_MODEL_TEST_UTIL_H_

#include <memory>
#include <string>

#include "core/model.h"

namespace modamba::testing {

// LanguageModel::Create, failing the test if it does not succeed.
std::unique_ptr<LanguageModel> MakeModel(const v1::ModelConfig& c, Backend* be, DType dtype,
                                         uint64_t seed = 7);

// Moves an F64 model off its initialisation (where some gradients vanish or
// are tiny enough to drown in rounding), then checks ForwardBackward's
// gradients on `batch` against fourth-order central differences of the
// objective over a spread of elements of every parameter: each parameter's
// relative L2 error stays below 1e-6. Prints the worst, labelled `name`.
void ExpectGradientsMatchFiniteDifferences(LanguageModel* model, const Batch& batch,
                                           const std::string& name);

// Marks rows 2..5 and 11..13 of a batch of two sequences of 9 as noised
// image patches (random inputs, targets and timesteps), out of the loss.
void AddPatches(const v1::ModelConfig& c, Batch* b, uint64_t seed);

// Fifteen AdamW steps at lr 1e-2 on `batch` bring the mean loss below 0.9 of
// the first step's; `what` names the model in a failure.
void ExpectLearnsBatch(LanguageModel* model, const Batch& batch, const std::string& what);

}  // namespace modamba::testing

#endif  // MODAMBA_CORE_MODEL_TEST_UTIL_H_
