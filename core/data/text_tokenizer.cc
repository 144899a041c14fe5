#include "core/data/text_tokenizer.h"

#include "absl/strings/str_cat.h"
#include "core/data/bpe.h"

namespace modamba::data {
namespace {

// Length of the UTF-8 sequence at s[i], or 0 when it is invalid (overlong,
// surrogate, beyond U+10FFFF or cut short).
size_t Utf8Length(std::string_view s, size_t i) {
  const auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = b(i);
  if (c < 0x80) return 1;
  size_t n;
  uint32_t cp;
  if (c >= 0xC2 && c <= 0xDF) n = 2, cp = c & 0x1F;
  else if (c >= 0xE0 && c <= 0xEF) n = 3, cp = c & 0x0F;
  else if (c >= 0xF0 && c <= 0xF4) n = 4, cp = c & 0x07;
  else return 0;
  if (i + n > s.size()) return 0;
  for (size_t k = 1; k < n; ++k) {
    if ((b(i + k) & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (b(i + k) & 0x3F);
  }
  if ((n == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) || (n == 4 && (cp < 0x10000 || cp > 0x10FFFF))) return 0;
  return n;
}

class ByteTokenizer : public TextTokenizer {
 public:
  absl::Status Encode(std::string_view utf8, std::vector<int32_t>* ids) const override {
    for (size_t i = 0; i < utf8.size();) {
      const size_t n = Utf8Length(utf8, i);
      if (n == 0) return absl::InvalidArgumentError(absl::StrCat("invalid UTF-8 at byte ", i));
      i += n;
    }
    for (unsigned char c : utf8) ids->push_back(c);
    return absl::OkStatus();
  }
  std::string Decode(absl::Span<const int32_t> ids) const override {
    std::string out;
    for (int32_t id : ids) out.push_back(static_cast<char>(id));
    return out;
  }
  int32_t vocab_size() const override { return 256; }
  nlohmann::json Describe() const override { return {{"type", "bytes"}, {"vocab_size", 256}}; }
  absl::Status Save(const std::string&) const override { return absl::OkStatus(); }
};

}  // namespace

std::unique_ptr<TextTokenizer> MakeByteTokenizer() { return std::make_unique<ByteTokenizer>(); }

}  // namespace modamba::data

// Stand-ins until the BPE implementation lands.
namespace modamba::data {
absl::StatusOr<std::unique_ptr<TextTokenizer>> LoadTextTokenizer(const std::string& path) {
  return absl::UnimplementedError(absl::StrCat(path, ": BPE tokenizers are not built in yet"));
}
BpeTrainer::BpeTrainer(int32_t vocab_size) : vocab_size_(vocab_size) {}
absl::Status BpeTrainer::Add(std::string_view) { return absl::OkStatus(); }
absl::StatusOr<std::unique_ptr<TextTokenizer>> BpeTrainer::Finish() {
  return absl::UnimplementedError("BPE training is not built in yet");
}
}  // namespace modamba::data
