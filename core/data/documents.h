// Documents: one training example before packing. Every document starts with
// BOS and ends with EOS; images sit between BOI and EOI (49 VQ tokens, or 49
// continuous patch positions in the Transfusion setting); speech units sit
// between BOS_SPEECH and EOS_SPEECH.
//
// Per token: an id, a modality, and a loss mask: 1 where the token is a
// prediction target (the model predicts token t from tokens < t of the same
// document). The first token (BOS) is never a target, nor is a continuous
// patch position: its loss is the diffusion MSE, not cross-entropy. A patch
// position carries the id PAD and modality image; the model reads its patch
// vector instead of an embedding.
#ifndef MODAMBA_CORE_DATA_DOCUMENTS_H_
#define MODAMBA_CORE_DATA_DOCUMENTS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "core/data/vocab.h"

namespace modamba::data {

enum class DocType {
  kText,              // BOS text EOS
  kCaptionImage,      // BOS "a handwritten seven" image EOS
  kImageCaption,      // BOS image "a handwritten seven" EOS
  kTranscriptSpeech,  // BOS transcript speech EOS
  kSpeechTranscript,  // BOS speech transcript EOS
  kDigitTriple,       // BOS word, image, speech of one digit in a seeded order EOS
  kCorpus,            // BOS segments of one line of a user's corpus (corpus.h) EOS
};
inline constexpr int kNumDocTypes = 7;
const char* DocTypeName(DocType type);  // "text", "caption_image", ...

struct Document {
  DocType type = DocType::kText;
  std::vector<int32_t> tokens;
  std::vector<uint8_t> modality;
  std::vector<uint8_t> loss_mask;
  std::vector<uint8_t> patch_flag;  // per token; all zero outside Transfusion
  std::vector<float> patches;       // [number of flagged tokens, patch_dim]
  int64_t size() const { return static_cast<int64_t>(tokens.size()); }
};

// Appends the pieces of one document; the constructor writes BOS and
// Finish() writes EOS.
class DocumentWriter {
 public:
  DocumentWriter(DocType type, const Vocab& vocab, int patch_dim = 0);

  void Text(absl::string_view bytes);
  // Ids of the text tokenizer (0..vocab.text_tokens-1), mapped into the vocabulary.
  void TextIds(const std::vector<int32_t>& ids);
  // BOI, one token per code, EOI.
  void ImageCodes(const int32_t* codes, int n);
  // BOI, n continuous positions (patch_dim floats each), EOI.
  void ImagePatches(const float* patches, int n);
  // BOS_SPEECH, one token per unit, EOS_SPEECH.
  void Speech(const std::vector<int32_t>& units);
  Document Finish();

 private:
  void Push(int32_t id, int modality, bool target);

  const Vocab& vocab_;
  int patch_dim_;
  Document doc_;
};

// "a handwritten seven": the caption of an MNIST digit.
std::string DigitCaption(int digit);
// "seven"
const char* DigitWord(int digit);

}  // namespace modamba::data

#endif  // MODAMBA_CORE_DATA_DOCUMENTS_H_
