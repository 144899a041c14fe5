#include "core/data/documents.h"

#include "absl/strings/str_cat.h"
#include "glog/logging.h"

namespace modamba::data {

const char* DocTypeName(DocType type) {
  switch (type) {
    case DocType::kText: return "text";
    case DocType::kCaptionImage: return "caption_image";
    case DocType::kImageCaption: return "image_caption";
    case DocType::kTranscriptSpeech: return "transcript_speech";
    case DocType::kSpeechTranscript: return "speech_transcript";
    case DocType::kDigitTriple: return "digit_triple";
    case DocType::kCorpus: return "corpus";
  }
  return "unknown";
}

const char* DigitWord(int digit) {
  static const char* const kWords[10] = {"zero", "one", "two",   "three", "four",
                                         "five", "six", "seven", "eight", "nine"};
  CHECK(digit >= 0 && digit < 10) << "digit " << digit;
  return kWords[digit];
}

std::string DigitCaption(int digit) { return absl::StrCat("a handwritten ", DigitWord(digit)); }

DocumentWriter::DocumentWriter(DocType type, const Vocab& vocab, int patch_dim)
    : vocab_(vocab), patch_dim_(patch_dim) {
  doc_.type = type;
  Push(kBos, kText, /*target=*/false);
}

void DocumentWriter::Push(int32_t id, int modality, bool target) {
  doc_.tokens.push_back(id);
  doc_.modality.push_back(static_cast<uint8_t>(modality));
  doc_.loss_mask.push_back(target ? 1 : 0);
  doc_.patch_flag.push_back(0);
}

void DocumentWriter::Text(absl::string_view bytes) {
  for (unsigned char c : bytes) Push(c, kText, true);
}

void DocumentWriter::TextIds(const std::vector<int32_t>& ids) {
  for (int32_t id : ids) {
    CHECK(id >= 0 && id < vocab_.text_tokens) << "text id " << id;
    Push(vocab_.TextToken(id), kText, true);
  }
}

void DocumentWriter::ImageCodes(const int32_t* codes, int n) {
  Push(kBoi, kText, true);
  for (int i = 0; i < n; ++i) {
    CHECK(codes[i] >= 0 && codes[i] < vocab_.image_codes) << "image code " << codes[i];
    Push(vocab_.ImageToken(codes[i]), kImage, true);
  }
  Push(kEoi, kText, true);
}

void DocumentWriter::ImagePatches(const float* patches, int n) {
  CHECK_GT(patch_dim_, 0) << "continuous patches need a patch_dim";
  Push(kBoi, kText, true);
  for (int i = 0; i < n; ++i) {
    Push(kPad, kImage, false);
    doc_.patch_flag.back() = 1;
    doc_.patches.insert(doc_.patches.end(), patches + i * patch_dim_,
                        patches + (i + 1) * patch_dim_);
  }
  Push(kEoi, kText, true);
}

void DocumentWriter::Speech(const std::vector<int32_t>& units) {
  Push(kBosSpeech, kText, true);
  for (int32_t u : units) {
    CHECK(u >= 0 && u < vocab_.speech_units) << "speech unit " << u;
    Push(vocab_.SpeechToken(u), kSpeech, true);
  }
  Push(kEosSpeech, kText, true);
}

Document DocumentWriter::Finish() {
  Push(kEos, kText, true);
  return std::move(doc_);
}

}  // namespace modamba::data
