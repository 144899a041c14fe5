#include "core/data/packing.h"

#include "glog/logging.h"

namespace modamba::data {

Packer::Packer(int seq_len, int patch_dim, int open_sequences) : open_limit_(open_sequences) {
  CHECK_GT(seq_len, 1);
  CHECK_GT(open_sequences, 0);
  out_.seq_len = seq_len;
  out_.patch_dim = patch_dim;
}

void Packer::Add(Document doc) {
  const int type = static_cast<int>(doc.type);
  if (doc.size() > out_.seq_len) {
    ++stats_.dropped[type];
    return;
  }
  ++stats_.documents[type];
  for (Open& open : open_) {
    if (out_.seq_len - open.used >= doc.size()) {
      open.used += doc.size();
      open.docs.push_back(std::move(doc));
      return;
    }
  }
  if (static_cast<int>(open_.size()) == open_limit_) {
    auto fullest = open_.begin();
    for (auto it = open_.begin(); it != open_.end(); ++it) {
      if (it->used > fullest->used) fullest = it;
    }
    Emit(&*fullest);
    open_.erase(fullest);
  }
  Open fresh;
  fresh.used = doc.size();
  fresh.docs.push_back(std::move(doc));
  open_.push_back(std::move(fresh));
}

void Packer::Emit(Open* open) {
  const bool continuous = out_.patch_dim > 0;
  int64_t filled = 0;
  for (const Document& doc : open->docs) {
    out_.tokens.insert(out_.tokens.end(), doc.tokens.begin(), doc.tokens.end());
    out_.modality.insert(out_.modality.end(), doc.modality.begin(), doc.modality.end());
    out_.loss_mask.insert(out_.loss_mask.end(), doc.loss_mask.begin(), doc.loss_mask.end());
    out_.doc_start.push_back(1);
    out_.doc_start.insert(out_.doc_start.end(), doc.size() - 1, 0);
    if (continuous) {
      out_.patch_flag.insert(out_.patch_flag.end(), doc.patch_flag.begin(), doc.patch_flag.end());
      out_.patches.insert(out_.patches.end(), doc.patches.begin(), doc.patches.end());
    } else {
      CHECK(doc.patches.empty()) << "continuous patches in a discrete dataset";
    }
    filled += doc.size();
  }
  const int64_t pad = out_.seq_len - filled;
  out_.tokens.insert(out_.tokens.end(), pad, kPad);
  out_.modality.insert(out_.modality.end(), pad, kText);
  out_.loss_mask.insert(out_.loss_mask.end(), pad, 0);
  if (pad > 0) {
    out_.doc_start.push_back(1);
    out_.doc_start.insert(out_.doc_start.end(), pad - 1, 0);
  }
  if (continuous) out_.patch_flag.insert(out_.patch_flag.end(), pad, 0);
  ++out_.num_sequences;
  out_.patch_begin.push_back(continuous ? static_cast<int64_t>(out_.patches.size()) /
                                              out_.patch_dim
                                        : 0);
}

PackedSequences Packer::Finish() {
  for (Open& open : open_) Emit(&open);
  open_.clear();
  PackedSequences result = std::move(out_);
  out_ = PackedSequences();
  out_.seq_len = result.seq_len;
  out_.patch_dim = result.patch_dim;
  return result;
}

}  // namespace modamba::data
