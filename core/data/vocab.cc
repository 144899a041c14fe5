#include "core/data/vocab.h"

#include "absl/strings/str_cat.h"

namespace modamba::data {

const char* ModalityName(int modality) {
  switch (modality) {
    case kText: return "text";
    case kImage: return "image";
    case kSpeech: return "speech";
  }
  return "unknown";
}

absl::StatusOr<int> ParseModality(absl::string_view name) {
  for (int m = 0; m < kNumModalities; ++m) {
    if (name == ModalityName(m)) return m;
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown modality '", name, "'"));
}

const char* SpecialName(int32_t id) {
  switch (id) {
    case kBos: return "BOS";
    case kEos: return "EOS";
    case kBoi: return "BOI";
    case kEoi: return "EOI";
    case kBosSpeech: return "BOS_SPEECH";
    case kEosSpeech: return "EOS_SPEECH";
    case kPad: return "PAD";
  }
  return nullptr;
}

int Vocab::ModalityOfId(int32_t id) const {
  if (id < 0 || id >= size()) return -1;
  if (id < image_begin()) return kText;
  if (id < image_end()) return kImage;
  return kSpeech;
}

}  // namespace modamba::data
