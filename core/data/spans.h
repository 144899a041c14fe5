// Walks a packed sequence and finds its pieces: documents, image spans
// (between BOI and EOI), speech spans (between BOS_SPEECH and EOS_SPEECH).
// Shared by `data inspect` (decoding) and the held-out leak check.
#ifndef MODAMBA_CORE_DATA_SPANS_H_
#define MODAMBA_CORE_DATA_SPANS_H_

#include <cstdint>
#include <vector>

#include "core/data/reader.h"

namespace modamba::data {

struct Span {
  enum Kind { kImage, kSpeech } kind;
  int begin = 0;  // first token inside the delimiters
  int end = 0;    // one past the last
  int64_t first_patch = 0;  // continuous images: first row in the batch's patches
};

struct DocumentSpans {
  int begin = 0;  // the doc_start token
  int end = 0;
  bool padding = false;  // the PAD run that fills a sequence
  std::vector<Span> spans;
};

// The documents of row `row` of `batch`; patch rows are counted from the
// start of the batch.
std::vector<DocumentSpans> FindDocuments(const PackedBatch& batch, int row);

}  // namespace modamba::data

#endif  // MODAMBA_CORE_DATA_SPANS_H_
