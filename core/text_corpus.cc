#include "core/text_corpus.h"

#include "absl/strings/str_cat.h"
#include "core/file_util.h"
#include "core/rng.h"
#include "core/status_macros.h"

namespace modamba {

absl::StatusOr<ByteCorpus> ByteCorpus::Load(const std::string& path, double val_fraction) {
  ByteCorpus corpus;
  corpus.path_ = path;
  ASSIGN_OR_RETURN(corpus.bytes_, ReadFile(path));
  corpus.val_begin_ = static_cast<int64_t>(corpus.bytes_.size() * (1.0 - val_fraction));
  return corpus;
}

int64_t ByteCorpus::size(Split split) const {
  return split == Split::kTrain ? val_begin_ : bytes_.size() - val_begin_;
}

absl::Status ByteCorpus::CheckFits(int64_t seq_len) const {
  for (Split s : {Split::kTrain, Split::kVal}) {
    if (size(s) < seq_len + 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          path_, ": the ", s == Split::kTrain ? "training" : "validation", " split has ", size(s),
          " bytes, fewer than seq_len + 1 = ", seq_len + 1));
    }
  }
  return absl::OkStatus();
}

Batch ByteCorpus::Get(Split split, uint64_t seed, int64_t index, int64_t batch,
                      int64_t seq_len) const {
  const int64_t begin = split == Split::kTrain ? 0 : val_begin_;
  const int64_t windows = size(split) - seq_len;  // start offsets that fit L + 1 bytes
  Rng rng(seed ^ (static_cast<uint64_t>(index) * 0x9e3779b97f4a7c15ULL) ^
          (split == Split::kVal ? 0x5bd1e995ULL : 0));
  Batch b;
  b.batch = batch;
  b.seq_len = seq_len;
  const int64_t n = batch * seq_len;
  b.tokens.resize(n);
  b.targets.resize(n);
  b.modality.assign(n, 0);
  b.target_modality.assign(n, 0);
  b.doc_start.assign(n, 0);
  b.loss_mask.assign(n, 1.f);
  for (int64_t s = 0; s < batch; ++s) {
    const int64_t start = begin + static_cast<int64_t>(rng.Below(windows));
    for (int64_t t = 0; t < seq_len; ++t) {
      b.tokens[s * seq_len + t] = static_cast<unsigned char>(bytes_[start + t]);
      b.targets[s * seq_len + t] = static_cast<unsigned char>(bytes_[start + t + 1]);
    }
  }
  return b;
}

}  // namespace modamba
