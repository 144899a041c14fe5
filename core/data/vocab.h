// The one token id space shared by every modality. Ranges are disjoint:
//
//   [0, 256)                      text ids 0..255 (UTF-8 bytes by default)
//   256..262                      specials (text modality): BOS EOS BOI EOI
//                                 BOS_SPEECH EOS_SPEECH PAD
//   [263, 263 + V - 256)          text ids 256..V-1 of a text tokenizer of V ids (BPE)
//   [T, T + K_img)                image VQ codes, T = 263 + V - 256
//   [T + K_img, vocab_size)       speech units, vocab_size = T + K_img + K_speech
//
// The text tokenizer's ids above 255 sit after the specials, so the specials
// keep their ids whatever the tokenizer. With bytes (V = 256) and the default K
// every setting uses the same 1031 ids, so models and logs of different
// settings line up id for id.
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
  int32_t text_tokens = kNumByteTokens;  // V, the text tokenizer's ids
  int32_t image_codes = 512;
  int32_t speech_units = 256;

  int32_t text_end() const { return kImageBase + text_tokens - kNumByteTokens; }
  int32_t image_begin() const { return text_end(); }
  int32_t image_end() const { return image_begin() + image_codes; }
  int32_t speech_begin() const { return image_end(); }
  int32_t speech_end() const { return speech_begin() + speech_units; }
  int32_t size() const { return speech_end(); }

  // Text tokenizer id (0..V-1) <-> vocabulary id; TextId of a special or a
  // non-text id is -1.
  int32_t TextToken(int32_t id) const { return id < kNumByteTokens ? id : id + kNumSpecials; }
  int32_t TextId(int32_t token) const;
  int32_t ImageToken(int32_t code) const { return image_begin() + code; }
  int32_t SpeechToken(int32_t unit) const { return speech_begin() + unit; }
  // The modality an id's range belongs to; -1 outside the vocabulary.
  int ModalityOfId(int32_t id) const;
};

}  // namespace modamba::data

#endif  // MODAMBA_CORE_DATA_VOCAB_H_
