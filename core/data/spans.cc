#include "core/data/spans.h"

#include "core/data/vocab.h"

namespace modamba::data {

std::vector<DocumentSpans> FindDocuments(const PackedBatch& batch, int row) {
  const int L = batch.seq_len;
  const int32_t* tokens = batch.tokens.data() + static_cast<size_t>(row) * L;
  const uint8_t* doc_start = batch.doc_start.data() + static_cast<size_t>(row) * L;
  const uint8_t* patch_flag = batch.patch_flag.data() + static_cast<size_t>(row) * L;
  int64_t patch = 0;
  for (int r = 0; r < row; ++r) {
    for (int t = 0; t < L; ++t) patch += batch.patch_flag[static_cast<size_t>(r) * L + t];
  }
  std::vector<DocumentSpans> docs;
  for (int t = 0; t < L;) {
    DocumentSpans doc;
    doc.begin = t;
    int end = t + 1;
    while (end < L && !doc_start[end]) ++end;
    doc.end = end;
    doc.padding = tokens[t] == kPad && batch.modality[static_cast<size_t>(row) * L + t] == kText;
    for (int i = t; i < end; ++i) {
      const bool image = tokens[i] == kBoi;
      if (!image && tokens[i] != kBosSpeech) {
        patch += patch_flag[i];
        continue;
      }
      Span span;
      span.kind = image ? Span::kImage : Span::kSpeech;
      span.begin = i + 1;
      span.first_patch = patch;
      const int32_t close = image ? kEoi : kEosSpeech;
      int j = i + 1;
      while (j < end && tokens[j] != close) patch += patch_flag[j++];
      span.end = j;
      doc.spans.push_back(span);
      i = j;
    }
    docs.push_back(std::move(doc));
    t = end;
  }
  return docs;
}

}  // namespace modamba::data
