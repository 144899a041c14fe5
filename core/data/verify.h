// Checks of a built dataset: shard integrity against the manifest, and that no
// held-out item reached the train split, judged by content.
#ifndef MODAMBA_CORE_DATA_VERIFY_H_
#define MODAMBA_CORE_DATA_VERIFY_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/data/raw_data.h"

namespace modamba::data {

// Every shard's SHA-256 matches the manifest and every sequence reads back
// with a valid checksum and consistent flags. Errors name the file.
absl::Status VerifyShards(const std::string& dataset_dir);

struct LeakReport {
  int64_t held_out_items = 0;  // distinct held-out contents fingerprinted
  int64_t train_spans = 0;     // image, speech and text spans of the train split checked
  int64_t leaks = 0;           // train spans equal to a held-out item and to no training item
  int64_t shared = 0;          // train spans whose content occurs among both splits' items
  int64_t unmatched = 0;       // train spans equal to no raw item (the check's own sanity)
  std::vector<std::string> examples;  // the first few leaks
};

// Fingerprints (SHA-256) every raw item of `selection` as the dataset encodes
// it (VQ codes or continuous patches, speech units, text) with the dataset's
// own tokenizers, then scans every image span, speech span and text document
// of the train shards: a span equal to a held-out item's content and to no
// training item's content is a leak. Text documents of 64 bytes or more are
// looked up in the held-out text.
absl::StatusOr<LeakReport> CheckHeldOutLeaks(const std::string& dataset_dir,
                                             const std::string& raw_dir,
                                             const RawSelection& selection);

}  // namespace modamba::data

#endif  // MODAMBA_CORE_DATA_VERIFY_H_
