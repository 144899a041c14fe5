// Shared fixtures of the evaluator tests: tiny datasets built from slices of
// the raw data, quickly trained digit classifiers, and small trained
// checkpoints. Everything needs MODAMBA_DATA_DIR; RawDir() is "" without it.
#ifndef MODAMBA_EVALUATOR_TEST_UTIL_H_
#define MODAMBA_EVALUATOR_TEST_UTIL_H_

#include <string>

#include "absl/status/statusor.h"
#include "proto/config.pb.h"

namespace modamba::eval::testing {

std::string RawDir();

// Builds chameleon, transfusion and trimodal datasets from small raw slices
// (seq_len 256, 64 image codes, 32 speech units) under `out`; returns `out`.
absl::StatusOr<std::string> BuildTinyDatasets(const std::string& out);

// Trains quick image (an MNIST slice, 3 epochs) and speech (one augmented
// copy, 4 epochs) judges into `dir`, keyed as the evaluator checks them.
absl::Status TrainQuickClassifiers(const std::string& dir);

// A resolved TrainConfig of a small model for the dataset at `dataset_dir`,
// checkpointing into `checkpoint_dir`: MoM, or MoT with `transformer`.
absl::StatusOr<v1::TrainConfig> TinyTrainConfig(const std::string& dataset_dir,
                                                const std::string& checkpoint_dir, int steps,
                                                bool transformer = false);

}  // namespace modamba::eval::testing

#endif  // MODAMBA_EVALUATOR_TEST_UTIL_H_
