#include "core/data/vocab.h"


namespace modamba::data {

const char* ModalityName(int modality) {
  switch (modality) {
    case kText: return "text";
    case kImage: return "image";
    case kSpeech: return "speech";
  }
  return "unknown";
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

int32_t Vocab::TextId(int32_t token) const {
  if (token >= 0 && token < kNumByteTokens) return token;
  if (token >= kImageBase && token < text_end()) return token - kNumSpecials;
  return -1;
}

int Vocab::ModalityOfId(int32_t id) const {
  if (id < 0 || id >= size()) return -1;
  if (id < image_begin()) return kText;
  if (id < image_end()) return kImage;
  return kSpeech;
}

}  // namespace modamba::data
