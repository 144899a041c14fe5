// A trained tokenizer's key: the sha256 of the data it learnt from and the
// version of the code that trained it. Train records it, Save writes it into
// the file's metadata and Load reads it back, so a saved codebook or set of
// speech units says what made it, and whatever reuses one instead of
// training it afresh (a build's --append) checks the key first
// (CheckTokenizerKey) and refuses, naming the file and what differs.
#ifndef MODAMBA_CORE_DATA_TOKENIZER_KEY_H_
#define MODAMBA_CORE_DATA_TOKENIZER_KEY_H_

#include <map>
#include <string>

#include "absl/status/status.h"

namespace modamba::data {

// Bump with every change of how a tokenizer trains or encodes.
inline constexpr char kImageVqVersion[] = "image-vq/1";
inline constexpr char kSpeechUnitsVersion[] = "speech-units/1";

struct TokenizerKey {
  std::string data_sha256;   // empty: none recorded (a user's codebook, older code)
  std::string code_version;  // empty: none recorded
};

// Metadata entries "data_sha256" and "code_version" (those not empty).
void AddKeyMetadata(const TokenizerKey& key, std::map<std::string, std::string>* metadata);
TokenizerKey KeyFromMetadata(const std::map<std::string, std::string>& metadata);

// OK when `saved` matches `expected` (an empty expected field is not
// compared); otherwise FailedPrecondition naming `what` and `path`, the
// fields that differ with both values, and `remedy`.
absl::Status CheckTokenizerKey(const std::string& what, const std::string& path,
                               const TokenizerKey& saved, const TokenizerKey& expected,
                               const std::string& remedy);

}  // namespace modamba::data

#endif  // MODAMBA_CORE_DATA_TOKENIZER_KEY_H_
