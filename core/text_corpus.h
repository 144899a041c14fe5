// A byte-level text corpus for single-modality training: UTF-8 bytes are the
// token ids (0..255, modality 0). The tail `val_fraction` of the bytes is the
// validation split. Batch `index` of a split is a deterministic function of
// (seed, split, index), so a resumed run sees exactly the batches it would
// have seen.
#ifndef MODAMBA_CORE_TEXT_CORPUS_H_
#define MODAMBA_CORE_TEXT_CORPUS_H_

#include <string>

#include "absl/status/statusor.h"
#include "core/model.h"

namespace modamba {

class ByteCorpus {
 public:
  enum class Split { kTrain, kVal };

  static absl::StatusOr<ByteCorpus> Load(const std::string& path, double val_fraction);
  // Checks that both splits hold at least one window of seq_len + 1 bytes.
  absl::Status CheckFits(int64_t seq_len) const;
  Batch Get(Split split, uint64_t seed, int64_t index, int64_t batch, int64_t seq_len) const;
  int64_t size(Split split) const;

 private:
  std::string path_;
  std::string bytes_;
  int64_t val_begin_ = 0;
};

}  // namespace modamba

#endif  // MODAMBA_CORE_TEXT_CORPUS_H_
