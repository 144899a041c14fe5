// The one token id space shared by every modality. Ranges are disjoint:
//
//   [0, 256)                      text: UTF-8 bytes
//   256..262                      specials (text modality): BOS EOS BOI EOI
//                                 BOS_SPEECH EOS_SPEECH PAD
//   [263, 263 + K_img)            image VQ codes
//   [263 + K_img, vocab_size)     speech units, vocab_size = 263 + K_img + K_speech
//
// Every setting uses the whole id space (with the default K: 1031 ids), so
// models and logs of different settings line up id for id.
#ifndef MODAMBA_CORE_DATA_VOCAB_H_
#define MODAMBA_CORE_DATA_VOCAB_H_

#include <cstdint>


namespace modamba::data {

// Per-token modality ids; specials are text.
enum Modality : int { kText = 0, kImage = 1, kSpeech = 2 };
inline constexpr int kNumModalities = 3;
const char* ModalityName(int modality);  // "text", "image", "speech"

inline constexpr int32_t kNumByteTokens = 256;
inline constexpr int32_t kBos = 256;
inline constexpr int32_t kEos = 257;
inline constexpr int32_t kBoi = 258;
inline constexpr int32_t kEoi = 259;
inline constexpr int32_t kBosSpeech = 260;
inline constexpr int32_t kEosSpeech = 261;
inline constexpr int32_t kPad = 262;
inline constexpr int32_t kNumSpecials = 7;
inline constexpr int32_t kImageBase = kNumByteTokens + kNumSpecials;

// "BOS", ..., "PAD" for a special id; nullptr otherwise.
const char* SpecialName(int32_t id);

struct Vocab {
  int32_t image_codes = 512;
  int32_t speech_units = 256;

  int32_t image_begin() const { return kImageBase; }
  int32_t image_end() const { return kImageBase + image_codes; }
  int32_t speech_begin() const { return image_end(); }
  int32_t speech_end() const { return speech_begin() + speech_units; }
  int32_t size() const { return speech_end(); }

  int32_t ImageToken(int32_t code) const { return kImageBase + code; }
  int32_t SpeechToken(int32_t unit) const { return speech_begin() + unit; }
  // The modality an id's range belongs to; -1 outside the vocabulary.
  int ModalityOfId(int32_t id) const;
};

}  // namespace modamba::data

#endif  // MODAMBA_CORE_DATA_VOCAB_H_
