// Small packed datasets of random documents in the three settings, for the
// trainer's multi-process tests (the real build, `modamba data build`, trains
// tokenizers on the raw data and takes minutes).
#ifndef MODAMBA_TRAINER_SYNTHETIC_DATASET_H_
#define MODAMBA_TRAINER_SYNTHETIC_DATASET_H_

#include <string>

#include "absl/status/status.h"

namespace modamba {

// setting: "chameleon" (text + image tokens), "transfusion" (text + 16-dim
// image patches) or "trimodal" (text + image tokens + speech units).
absl::Status WriteSyntheticDataset(const std::string& dir, const std::string& setting,
                                   int seq_len, int train_sequences, int val_sequences);

}  // namespace modamba

#endif  // MODAMBA_TRAINER_SYNTHETIC_DATASET_H_
