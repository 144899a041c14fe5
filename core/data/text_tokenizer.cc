#include "core/data/text_tokenizer.h"

#include <unicode/uchar.h>

#include <algorithm>
#include <array>
#include <atomic>

#include "absl/container/flat_hash_map.h"
#include "absl/container/inlined_vector.h"
#include "absl/strings/str_cat.h"
#include "core/file_util.h"
#include "core/status_macros.h"
#include "glog/logging.h"

namespace modamba::data {
namespace {

using ordered_json = nlohmann::ordered_json;

// ---------------------------------------------------------------------------
// UTF-8 and the pre-tokenizer's character classes.

// The length of the well-formed UTF-8 sequence at s[i] (1..4) and its code
// point, or 0 when it is not one (overlong forms, surrogates and code points
// above U+10FFFF included).
int DecodeUtf8(std::string_view s, size_t i, UChar32* cp) {
  const auto byte = [&](size_t k) { return static_cast<uint8_t>(s[k]); };
  const uint8_t b0 = byte(i);
  if (b0 < 0x80) {
    *cp = b0;
    return 1;
  }
  int len;
  uint8_t lo = 0x80, hi = 0xBF;  // the valid range of the second byte
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    len = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    len = 3;
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    len = 4;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  if (i + len > s.size()) return 0;
  UChar32 c = b0 & (0x7F >> len);
  for (int k = 1; k < len; ++k) {
    const uint8_t b = byte(i + k);
    if (k == 1 ? (b < lo || b > hi) : (b & 0xC0) != 0x80) return 0;
    c = (c << 6) | (b & 0x3F);
  }
  *cp = c;
  return len;
}

// \s is Unicode White_Space, \p{L} and \p{N} the general categories L* and N*,
// as in the Oniguruma regex Hugging Face runs (ICU gives the tables).
enum CharClass : uint8_t { kLetter, kNumber, kSpace, kOther };

constexpr std::array<CharClass, 128> MakeAsciiClasses() {
  std::array<CharClass, 128> c{};
  for (int b = 0; b < 128; ++b) {
    if ((b >= 'a' && b <= 'z') || (b >= 'A' && b <= 'Z')) {
      c[b] = kLetter;
    } else if (b >= '0' && b <= '9') {
      c[b] = kNumber;
    } else if (b == ' ' || (b >= '\t' && b <= '\r')) {
      c[b] = kSpace;
    } else {
      c[b] = kOther;
    }
  }
  return c;
}
constexpr std::array<CharClass, 128> kAsciiClasses = MakeAsciiClasses();

CharClass Classify(UChar32 c) {
  if (c < 128) return kAsciiClasses[c];
  if (u_isUWhiteSpace(c)) return kSpace;
  const uint32_t mask = U_GET_GC_MASK(c);
  if (mask & U_GC_L_MASK) return kLetter;
  if (mask & U_GC_N_MASK) return kNumber;
  return kOther;
}

// The class and length of the character at s[i]; length 0 for invalid UTF-8.
int ClassAt(std::string_view s, size_t i, CharClass* cls) {
  const uint8_t b = static_cast<uint8_t>(s[i]);
  if (b < 0x80) {
    *cls = kAsciiClasses[b];
    return 1;
  }
  UChar32 cp;
  const int len = DecodeUtf8(s, i, &cp);
  if (len > 0) *cls = Classify(cp);
  return len;
}

// PreTokenize's work; returns the offset of the first invalid UTF-8 sequence,
// or -1.
int64_t SplitPieces(std::string_view s,
                    absl::FunctionRef<void(std::string_view)> piece) {
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    const size_t start = i;
    // 's|'t|'re|'ve|'m|'ll|'d come first in the alternation.
    if (s[i] == '\'' && i + 1 < n) {
      const char a = s[i + 1];
      if (a == 's' || a == 't' || a == 'm' || a == 'd') {
        piece(s.substr(i, 2));
        i += 2;
        continue;
      }
      if (i + 2 < n) {
        const std::string_view two = s.substr(i + 1, 2);
        if (two == "re" || two == "ve" || two == "ll") {
          piece(s.substr(i, 3));
          i += 3;
          continue;
        }
      }
    }
    CharClass cls;
    int len = ClassAt(s, i, &cls);
    if (len == 0) return i;
    size_t j = i + len;
    // " ?X+" for X in letters, numbers, other: an ASCII space joins the run
    // that follows it.
    if (s[i] == ' ' && j < n) {
      CharClass next;
      len = ClassAt(s, j, &next);
      if (len == 0) return j;
      if (next != kSpace) {
        cls = next;
        j += len;
      }
    }
    if (cls != kSpace) {
      while (j < n) {
        CharClass c;
        len = ClassAt(s, j, &c);
        if (len == 0) return j;
        if (c != cls) break;
        j += len;
      }
      piece(s.substr(start, j - start));
      i = j;
      continue;
    }
    // A whitespace run: \s+(?!\S) leaves its last character to the piece that
    // follows, unless the run ends the text; a single one before a non-space
    // falls to \s+.
    size_t last = i;
    while (j < n) {
      CharClass c;
      len = ClassAt(s, j, &c);
      if (len == 0) return j;
      if (c != kSpace) break;
      last = j;
      j += len;
    }
    if (j < n && last > start) j = last;
    piece(s.substr(start, j - start));
    i = j;
  }
  return -1;
}

int64_t InvalidUtf8Offset(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    UChar32 cp;
    const int len = DecodeUtf8(s, i, &cp);
    if (len == 0) return i;
    i += len;
  }
  return -1;
}

absl::Status InvalidUtf8Error(int64_t offset) {
  return absl::InvalidArgumentError(
      absl::StrCat("invalid UTF-8 at byte ", offset));
}

// ---------------------------------------------------------------------------
// GPT-2's byte-to-unicode table, used only in tokenizer.json: the printable
// bytes stand for themselves, the other 68 for U+0100.. in byte order.

struct ByteLevelTable {
  std::array<std::string, 256> byte_to_utf8;
  absl::flat_hash_map<UChar32, uint8_t> char_to_byte;
  ByteLevelTable() {
    int next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) ||
                             b >= 174;
      const UChar32 c = printable ? b : next++;
      char_to_byte[c] = static_cast<uint8_t>(b);
      byte_to_utf8[b] = c < 0x80 ? std::string(1, static_cast<char>(c))
                                 : std::string{static_cast<char>(0xC0 | (c >> 6)),
                                               static_cast<char>(0x80 | (c & 0x3F))};
    }
  }
};

const ByteLevelTable& Table() {
  static const ByteLevelTable* table = new ByteLevelTable();
  return *table;
}

std::string ToByteLevel(std::string_view bytes) {
  std::string out;
  for (const char b : bytes) out += Table().byte_to_utf8[static_cast<uint8_t>(b)];
  return out;
}

// The bytes a vocabulary string stands for. A string with a character outside
// the table (an added token such as "<s>" always maps; "▁x" would not) stands
// for its own UTF-8, as Hugging Face's ByteLevel decoder does.
std::string FromByteLevel(std::string_view name) {
  std::string out;
  for (size_t i = 0; i < name.size();) {
    UChar32 cp;
    const int len = DecodeUtf8(name, i, &cp);
    const auto it = Table().char_to_byte.find(cp);
    if (len == 0 || it == Table().char_to_byte.end()) return std::string(name);
    out += static_cast<char>(it->second);
    i += len;
  }
  return out;
}

// ---------------------------------------------------------------------------

class ByteTokenizer : public TextTokenizer {
 public:
  absl::Status Encode(std::string_view utf8,
                      std::vector<int32_t>* ids) const override {
    const int64_t bad = InvalidUtf8Offset(utf8);
    if (bad >= 0) return InvalidUtf8Error(bad);
    for (const char b : utf8) ids->push_back(static_cast<uint8_t>(b));
    return absl::OkStatus();
  }
  std::string Decode(absl::Span<const int32_t> ids) const override {
    std::string out;
    out.reserve(ids.size());
    for (const int32_t id : ids) {
      CHECK(id >= 0 && id < 256) << "byte tokenizer: id " << id << " out of range";
      out += static_cast<char>(id);
    }
    return out;
  }
  int32_t vocab_size() const override { return 256; }
  nlohmann::json Describe() const override {
    return {{"type", "bytes"}, {"vocab_size", 256}};
  }
  absl::Status Save(const std::string&) const override {
    return absl::OkStatus();
  }
};

// A token matched in the text before pre-tokenization (Hugging Face's added
// tokens: specials such as <|endoftext|>, and user-added words).
struct AddedToken {
  int32_t id;
  std::string content;
  bool special;
  bool normalized;
};

struct MergeRule {
  int32_t left, right, result;
};

// Everything a BPE tokenizer is, checked by whoever builds it.
struct BpeModel {
  std::vector<std::string> names;  // vocabulary string per id (byte-level form)
  std::vector<std::string> bytes;  // what each id decodes to
  std::vector<bool> in_model;      // false for added tokens outside model.vocab
  std::array<int32_t, 256> byte_ids;
  std::vector<MergeRule> merges;   // in rank order
  std::vector<AddedToken> added;
  bool add_prefix_space = false;   // ByteLevel: prepend " " to each segment
  bool use_regex = true;           // ByteLevel: split into GPT-2 pieces
  bool ignore_merges = false;      // a piece in the vocabulary is one token
  std::string unk_token;           // kept for Save; unused, every byte has a token
};

uint64_t NextSerial() {
  static std::atomic<uint64_t> next{1};
  return next++;
}

class BpeTokenizer : public TextTokenizer {
 public:
  explicit BpeTokenizer(BpeModel model) : m_(std::move(model)) {
    for (int32_t rank = 0; rank < static_cast<int32_t>(m_.merges.size()); ++rank) {
      const MergeRule& r = m_.merges[rank];
      // A repeated pair takes its last rank, as in Hugging Face's table.
      merges_[PairKey(r.left, r.right)] = Merge{rank, r.result};
    }
    if (m_.ignore_merges) {
      for (int32_t id = 0; id < vocab_size(); ++id) {
        if (m_.in_model[id]) ids_by_bytes_.try_emplace(m_.bytes[id], id);
      }
    }
    // Longest first, so the match found at a position is the longest.
    for (const AddedToken& t : m_.added) {
      added_by_length_[t.normalized].push_back(t);
      added_first_bytes_[t.normalized][static_cast<uint8_t>(t.content[0])] = true;
    }
    for (std::vector<AddedToken>& tokens : added_by_length_) {
      std::stable_sort(tokens.begin(), tokens.end(), [](const AddedToken& x, const AddedToken& y) {
        return x.content.size() > y.content.size();
      });
    }
  }

  absl::Status Encode(std::string_view utf8,
                      std::vector<int32_t>* ids) const override {
    const size_t base = ids->size();
    const int64_t bad = EncodeAdded(utf8, /*normalized=*/false, ids);
    if (bad >= 0) {
      ids->resize(base);
      return InvalidUtf8Error(bad);
    }
    return absl::OkStatus();
  }

  std::string Decode(absl::Span<const int32_t> ids) const override {
    std::string out;
    for (const int32_t id : ids) {
      CHECK(id >= 0 && id < vocab_size()) << "BPE tokenizer: id " << id << " out of range";
      out += m_.bytes[id];
    }
    return out;
  }

  int32_t vocab_size() const override { return m_.names.size(); }

  nlohmann::json Describe() const override {
    return {{"type", "bpe"},
            {"vocab_size", vocab_size()},
            {"merges", m_.merges.size()},
            {"added_tokens", m_.added.size()},
            {"sha256", Sha256Hex(Serialize())}};
  }

  absl::Status Save(const std::string& dir) const override {
    return WriteFileAtomic(dir + "/tokenizer.json", Serialize());
  }

 private:
  struct Merge {
    int32_t rank;
    int32_t result;
  };
  // MergePiece's state: the piece's symbols as a linked list, and the merges
  // that may apply.
  struct Symbol {
    int32_t id;  // -1 once merged into the symbol on its left
    int32_t prev, next;
  };
  struct Candidate {
    int32_t rank, pos, result;
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };

  // Pieces already merged. Each thread keeps its own (no locks on the hot
  // path), for one tokenizer at a time: using another one empties it. A full
  // cache stops taking pieces; the frequent ones come early.
  static constexpr size_t kCacheWords = 1 << 17;
  struct WordCache {
    uint64_t owner = 0;
    absl::flat_hash_map<std::string, absl::InlinedVector<int32_t, 4>> words;
    std::vector<Symbol> symbols;  // MergePiece's scratch space
    std::vector<Candidate> heap;
  };
  WordCache& ThreadCache() const {
    thread_local WordCache cache;
    if (cache.owner != serial_) {
      cache.words.clear();
      cache.owner = serial_;
    }
    return cache;
  }
  static uint64_t PairKey(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(a) << 32) | static_cast<uint32_t>(b);
  }

  // Encodes `text`, first cutting out the added tokens of one kind: as in
  // Hugging Face, those with normalized=false are matched first, then those
  // with normalized=true in the text between them (without a normalizer the
  // two texts are the same). Returns the offset of invalid UTF-8, or -1.
  int64_t EncodeAdded(std::string_view text, bool normalized, std::vector<int32_t>* ids) const {
    const std::vector<AddedToken>& tokens = added_by_length_[normalized];
    size_t start = 0;
    const auto rest = [&](size_t end) -> int64_t {
      if (end == start) return -1;
      const std::string_view part = text.substr(start, end - start);
      const int64_t bad = normalized ? EncodeSegment(part, ids) : EncodeAdded(part, true, ids);
      return bad < 0 ? bad : bad + start;
    };
    for (size_t i = 0; i < text.size() && !tokens.empty();) {
      const AddedToken* token = nullptr;
      if (!added_first_bytes_[normalized][static_cast<uint8_t>(text[i])]) {
        ++i;
        continue;
      }
      for (const AddedToken& t : tokens) {  // longest first
        if (text.compare(i, t.content.size(), t.content) == 0) {
          token = &t;
          break;
        }
      }
      if (token == nullptr) {
        ++i;
        continue;
      }
      const int64_t bad = rest(i);
      if (bad >= 0) return bad;
      ids->push_back(token->id);
      i += token->content.size();
      start = i;
    }
    return rest(text.size());
  }

  // Encodes the text between added tokens; returns the offset of invalid
  // UTF-8 in `segment`, or -1.
  int64_t EncodeSegment(std::string_view segment, std::vector<int32_t>* ids) const {
    std::string prefixed;
    int64_t shift = 0;
    if (m_.add_prefix_space && segment[0] != ' ') {
      prefixed = " " + std::string(segment);
      segment = prefixed;
      shift = 1;
    }
    int64_t bad;
    if (m_.use_regex) {
      bad = SplitPieces(segment, [&](std::string_view piece) { EncodePiece(piece, ids); });
    } else {
      bad = InvalidUtf8Offset(segment);
      if (bad < 0) EncodePiece(segment, ids);
    }
    return bad < 0 ? bad : std::max<int64_t>(bad - shift, 0);
  }

  void EncodePiece(std::string_view piece_view, std::vector<int32_t>* ids) const {
    const absl::string_view piece(piece_view.data(), piece_view.size());
    if (piece.size() == 1) {
      ids->push_back(m_.byte_ids[static_cast<uint8_t>(piece[0])]);
      return;
    }
    if (m_.ignore_merges) {
      const auto it = ids_by_bytes_.find(piece);
      if (it != ids_by_bytes_.end()) {
        ids->push_back(it->second);
        return;
      }
    }
    WordCache& cache = ThreadCache();
    const auto it = cache.words.find(piece);
    if (it != cache.words.end()) {
      ids->insert(ids->end(), it->second.begin(), it->second.end());
      return;
    }
    const size_t begin = ids->size();
    MergePiece(piece, cache, ids);
    if (cache.words.size() < kCacheWords) {
      cache.words.try_emplace(std::string(piece), ids->begin() + begin, ids->end());
    }
  }

  // Applies the merges to one piece: always the adjacent pair of lowest rank,
  // the leftmost among equals, as Hugging Face's BPE does. A heap keeps long
  // pieces (runs of digits or spaces) at n log n.
  void MergePiece(absl::string_view piece, WordCache& scratch, std::vector<int32_t>* ids) const {
    const int32_t n = piece.size();
    std::vector<Symbol>& symbols = scratch.symbols;
    std::vector<Candidate>& heap = scratch.heap;  // a min-heap by (rank, pos)
    symbols.resize(n);
    heap.clear();
    const auto push = [&](int32_t pos) {
      const int32_t next = symbols[pos].next;
      if (next < 0) return;
      const auto it = merges_.find(PairKey(symbols[pos].id, symbols[next].id));
      if (it == merges_.end()) return;
      heap.push_back({it->second.rank, pos, it->second.result});
      std::push_heap(heap.begin(), heap.end(), std::greater<Candidate>());
    };
    for (int32_t i = 0; i < n; ++i) {
      symbols[i] = {m_.byte_ids[static_cast<uint8_t>(piece[i])], i - 1, i + 1 < n ? i + 1 : -1};
    }
    for (int32_t i = 0; i + 1 < n; ++i) push(i);
    while (!heap.empty()) {
      std::pop_heap(heap.begin(), heap.end(), std::greater<Candidate>());
      const Candidate top = heap.back();
      heap.pop_back();
      Symbol& left = symbols[top.pos];
      if (left.id < 0 || left.next < 0) continue;
      const auto it = merges_.find(PairKey(left.id, symbols[left.next].id));
      if (it == merges_.end() || it->second.result != top.result) continue;  // stale
      Symbol& right = symbols[left.next];
      left.id = top.result;
      right.id = -1;
      left.next = right.next;
      if (right.next >= 0) symbols[right.next].prev = top.pos;
      if (left.prev >= 0) push(left.prev);
      push(top.pos);
    }
    for (int32_t i = 0; i >= 0; i = symbols[i].next) ids->push_back(symbols[i].id);
  }

  std::string Serialize() const {
    const ordered_json byte_level = {{"type", "ByteLevel"},
                                     {"add_prefix_space", m_.add_prefix_space},
                                     {"trim_offsets", true},
                                     {"use_regex", m_.use_regex}};
    ordered_json added = ordered_json::array();
    for (const AddedToken& t : m_.added) {
      added.push_back({{"id", t.id},
                       {"content", t.content},
                       {"single_word", false},
                       {"lstrip", false},
                       {"rstrip", false},
                       {"normalized", t.normalized},
                       {"special", t.special}});
    }
    ordered_json vocab = ordered_json::object();
    for (int32_t id = 0; id < vocab_size(); ++id) {
      if (m_.in_model[id]) vocab[m_.names[id]] = id;
    }
    ordered_json merges = ordered_json::array();
    for (const MergeRule& r : m_.merges) merges.push_back({m_.names[r.left], m_.names[r.right]});
    const ordered_json model = {
        {"type", "BPE"},
        {"dropout", nullptr},
        {"unk_token", m_.unk_token.empty() ? ordered_json() : ordered_json(m_.unk_token)},
        {"continuing_subword_prefix", nullptr},
        {"end_of_word_suffix", nullptr},
        {"fuse_unk", false},
        {"byte_fallback", false},
        {"ignore_merges", m_.ignore_merges},
        {"vocab", std::move(vocab)},
        {"merges", std::move(merges)}};
    const ordered_json j = {{"version", "1.0"},
                            {"truncation", nullptr},
                            {"padding", nullptr},
                            {"added_tokens", std::move(added)},
                            {"normalizer", nullptr},
                            {"pre_tokenizer", byte_level},
                            {"post_processor", nullptr},
                            {"decoder", byte_level},
                            {"model", model}};
    return j.dump(1) + "\n";
  }


  const BpeModel m_;
  std::array<std::vector<AddedToken>, 2> added_by_length_;  // [normalized]
  std::array<std::array<bool, 256>, 2> added_first_bytes_{};  // [normalized][byte]
  absl::flat_hash_map<std::string, int32_t> ids_by_bytes_;  // for ignore_merges
  absl::flat_hash_map<uint64_t, Merge> merges_;
  const uint64_t serial_ = NextSerial();  // names this tokenizer's caches
};

// ---------------------------------------------------------------------------
// Reading tokenizer.json.

// The "type" of a component, or its JSON when it has no string type.
std::string TypeOf(const nlohmann::json& j) {
  if (j.is_object() && j.contains("type") && j["type"].is_string()) return j["type"].get<std::string>();
  return j.dump();
}

// Errors name the file and the field.
class JsonReader {
 public:
  explicit JsonReader(std::string path) : path_(std::move(path)) {}

  absl::Status Error(const std::string& field, const std::string& what) const {
    return absl::InvalidArgumentError(absl::StrCat(path_, ": ", field, ": ", what));
  }

  // `field` of `object` must be absent, null or equal to `allowed`
  // (a JSON value); anything else is unsupported.
  absl::Status Expect(const nlohmann::json& object, const std::string& key,
                      const std::string& field, const nlohmann::json& allowed) const {
    const auto it = object.find(key);
    if (it == object.end() || it->is_null() || *it == allowed) return absl::OkStatus();
    return Error(field, absl::StrCat("unsupported value ", it->dump(), " (only null",
                                     allowed.is_null() ? "" : " or " + allowed.dump(), ")"));
  }

  absl::StatusOr<bool> Bool(const nlohmann::json& object, const std::string& key,
                            const std::string& field, bool fallback) const {
    const auto it = object.find(key);
    if (it == object.end() || it->is_null()) return fallback;
    if (!it->is_boolean()) return Error(field, "must be true or false");
    return it->get<bool>();
  }

  // A ByteLevel component (pre_tokenizer, decoder or post_processor), or
  // nullptr when it is absent or null.
  absl::StatusOr<const nlohmann::json*> ByteLevel(const nlohmann::json& root,
                                                  const std::string& key) const {
    const auto it = root.find(key);
    if (it == root.end() || it->is_null()) return nullptr;
    if (TypeOf(*it) != "ByteLevel") {
      return Error(key, absl::StrCat("only ByteLevel or null is supported, not ", TypeOf(*it)));
    }
    return &*it;
  }

 private:
  std::string path_;
};

absl::StatusOr<std::unique_ptr<TextTokenizer>> ParseTokenizerJson(
    const std::string& path, const std::string& text) {
  const JsonReader r(path);
  const nlohmann::json root = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded() || !root.is_object()) return r.Error("(file)", "not a JSON object");
  RETURN_IF_ERROR(r.Expect(root, "normalizer", "normalizer", nullptr));
  ASSIGN_OR_RETURN(const nlohmann::json* pre, r.ByteLevel(root, "pre_tokenizer"));
  // Decoding gives the tokens' bytes; the ByteLevel post-processor only moves
  // offsets. Other kinds would change the text or the ids.
  RETURN_IF_ERROR(r.ByteLevel(root, "decoder").status());
  RETURN_IF_ERROR(r.ByteLevel(root, "post_processor").status());
  const auto model_it = root.find("model");
  if (model_it == root.end() || !model_it->is_object()) return r.Error("model", "missing");
  const nlohmann::json& model = *model_it;
  if (model.contains("type") && TypeOf(model) != "BPE") {
    return r.Error("model.type", absl::StrCat("only BPE is supported, not ", TypeOf(model)));
  }
  RETURN_IF_ERROR(r.Expect(model, "dropout", "model.dropout", nullptr));
  RETURN_IF_ERROR(r.Expect(model, "continuing_subword_prefix", "model.continuing_subword_prefix", ""));
  RETURN_IF_ERROR(r.Expect(model, "end_of_word_suffix", "model.end_of_word_suffix", ""));
  RETURN_IF_ERROR(r.Expect(model, "byte_fallback", "model.byte_fallback", false));

  // Without ByteLevel the model would see raw characters, not bytes.
  if (pre == nullptr) return r.Error("pre_tokenizer", "missing (ByteLevel is needed)");
  BpeModel m;
  ASSIGN_OR_RETURN(m.add_prefix_space, r.Bool(*pre, "add_prefix_space", "pre_tokenizer.add_prefix_space", true));
  ASSIGN_OR_RETURN(m.use_regex, r.Bool(*pre, "use_regex", "pre_tokenizer.use_regex", true));
  ASSIGN_OR_RETURN(m.ignore_merges, r.Bool(model, "ignore_merges", "model.ignore_merges", false));
  if (model.contains("unk_token") && model["unk_token"].is_string()) {
    m.unk_token = model["unk_token"].get<std::string>();
  }

  // Ids: model.vocab and added_tokens together must cover 0..N-1 once each.
  const auto vocab_it = model.find("vocab");
  if (vocab_it == model.end() || !vocab_it->is_object()) {
    return r.Error("model.vocab", "missing or not an object");
  }
  struct Entry {
    int64_t id;
    std::string name, field;
  };
  std::vector<Entry> entries;
  absl::flat_hash_map<std::string, int32_t> vocab;
  for (const auto& [name, id] : vocab_it->items()) {
    if (!id.is_number_integer()) return r.Error(absl::StrCat("model.vocab[\"", name, "\"]"), "not an integer id");
    entries.push_back({id.get<int64_t>(), name, absl::StrCat("model.vocab[\"", name, "\"]")});
    vocab[name] = id.get<int64_t>();
  }
  const size_t model_entries = entries.size();
  const auto added_it = root.find("added_tokens");
  if (added_it != root.end() && !added_it->is_null()) {
    if (!added_it->is_array()) return r.Error("added_tokens", "not a list");
    for (size_t k = 0; k < added_it->size(); ++k) {
      const nlohmann::json& t = (*added_it)[k];
      const std::string field = absl::StrCat("added_tokens[", k, "]");
      if (!t.is_object() || !t.contains("id") || !t["id"].is_number_integer() ||
          !t.contains("content") || !t["content"].is_string() || t["content"].get<std::string>().empty()) {
        return r.Error(field, "needs an integer id and a non-empty content");
      }
      for (const char* option : {"single_word", "lstrip", "rstrip"}) {
        RETURN_IF_ERROR(r.Expect(t, option, absl::StrCat(field, ".", option), false));
      }
      AddedToken a{static_cast<int32_t>(t["id"].get<int64_t>()), t["content"].get<std::string>(),
                   false, false};
      ASSIGN_OR_RETURN(a.special, r.Bool(t, "special", field + ".special", false));
      ASSIGN_OR_RETURN(a.normalized, r.Bool(t, "normalized", field + ".normalized", !a.special));
      const auto in_vocab = vocab.find(a.content);
      if (in_vocab != vocab.end() && in_vocab->second != a.id) {
        return r.Error(field, absl::StrCat("id ", a.id, " differs from model.vocab's ", in_vocab->second));
      }
      if (in_vocab == vocab.end()) entries.push_back({t["id"].get<int64_t>(), a.content, field});
      m.added.push_back(std::move(a));
    }
  }
  const int64_t n = entries.size();
  m.names.resize(n);
  m.in_model.assign(n, false);
  std::vector<bool> seen(n, false);
  for (size_t k = 0; k < entries.size(); ++k) {
    const auto& [id, name, field] = entries[k];
    if (id < 0 || id >= n) return r.Error(field, absl::StrCat("id ", id, " outside 0..", n - 1, " (ids must be contiguous)"));
    if (seen[id]) return r.Error(field, absl::StrCat("id ", id, " used twice"));
    seen[id] = true;
    m.names[id] = name;
    m.in_model[id] = k < model_entries;
  }
  m.bytes.reserve(n);
  for (const std::string& name : m.names) m.bytes.push_back(FromByteLevel(name));
  for (int b = 0; b < 256; ++b) {
    const auto it = vocab.find(Table().byte_to_utf8[b]);
    if (it == vocab.end()) {
      return r.Error("model.vocab", absl::StrCat("no token for byte ", b, " (\"",
                                                 Table().byte_to_utf8[b], "\"): byte-level BPE needs all 256"));
    }
    m.byte_ids[b] = it->second;
  }

  const auto merges_it = model.find("merges");
  if (merges_it == model.end() || !merges_it->is_array()) return r.Error("model.merges", "missing or not a list");
  for (size_t k = 0; k < merges_it->size(); ++k) {
    const nlohmann::json& e = (*merges_it)[k];
    const std::string field = absl::StrCat("model.merges[", k, "]");
    std::string left, right;
    if (e.is_string()) {  // "a b"
      const std::string s = e.get<std::string>();
      const size_t space = s.find(' ');
      if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos) {
        return r.Error(field, absl::StrCat("\"", s, "\" is not two tokens separated by one space"));
      }
      left = s.substr(0, space);
      right = s.substr(space + 1);
    } else if (e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string()) {  // [a, b]
      left = e[0].get<std::string>();
      right = e[1].get<std::string>();
    } else {
      return r.Error(field, "neither \"a b\" nor [a, b]");
    }
    const auto a = vocab.find(left), b = vocab.find(right), ab = vocab.find(left + right);
    for (const auto& [it, what] : {std::pair{a, &left}, std::pair{b, &right}}) {
      if (it == vocab.end()) return r.Error(field, absl::StrCat("\"", *what, "\" is not in model.vocab"));
    }
    if (ab == vocab.end()) return r.Error(field, absl::StrCat("the merged \"", left + right, "\" is not in model.vocab"));
    m.merges.push_back({a->second, b->second, ab->second});
  }
  return std::unique_ptr<TextTokenizer>(std::make_unique<BpeTokenizer>(std::move(m)));
}
}  // namespace

absl::Status PreTokenize(std::string_view utf8,
                         absl::FunctionRef<void(std::string_view)> piece) {
  const int64_t bad = SplitPieces(utf8, piece);
  return bad < 0 ? absl::OkStatus() : InvalidUtf8Error(bad);
}

std::unique_ptr<TextTokenizer> MakeByteTokenizer() {
  return std::make_unique<ByteTokenizer>();
}

absl::StatusOr<std::unique_ptr<TextTokenizer>> LoadTextTokenizer(
    const std::string& tokenizer_json_path) {
  ASSIGN_OR_RETURN(const std::string text, ReadFile(tokenizer_json_path));
  return ParseTokenizerJson(tokenizer_json_path, text);
}

absl::StatusOr<std::unique_ptr<TextTokenizer>> MakeBpeTokenizer(
    std::vector<std::string> tokens,
    std::vector<std::pair<int32_t, int32_t>> merges) {
  BpeModel m;
  const int32_t n = tokens.size();
  if (n < 256) return absl::InvalidArgumentError("a BPE vocabulary needs the 256 bytes");
  absl::flat_hash_map<absl::string_view, int32_t> ids;
  for (int32_t id = 0; id < n; ++id) {
    if (id < 256 && tokens[id] != std::string(1, static_cast<char>(id))) {
      return absl::InvalidArgumentError(absl::StrCat("BPE token ", id, " must be byte ", id));
    }
    if (!ids.try_emplace(tokens[id], id).second) {
      return absl::InvalidArgumentError(absl::StrCat("BPE tokens ", ids[tokens[id]], " and ", id, " are equal"));
    }
  }
  for (const auto& [a, b] : merges) {
    if (a < 0 || a >= n || b < 0 || b >= n) {
      return absl::InvalidArgumentError(absl::StrCat("BPE merge (", a, ", ", b, ") outside the vocabulary"));
    }
    const auto it = ids.find(tokens[a] + tokens[b]);
    if (it == ids.end()) {
      return absl::InvalidArgumentError(absl::StrCat("BPE merge (", a, ", ", b, ") has no token"));
    }
    m.merges.push_back({a, b, it->second});
  }
  for (int b = 0; b < 256; ++b) m.byte_ids[b] = b;
  m.names.reserve(n);
  for (const std::string& t : tokens) m.names.push_back(ToByteLevel(t));
  m.in_model.assign(n, true);
  m.bytes = std::move(tokens);
  return std::unique_ptr<TextTokenizer>(std::make_unique<BpeTokenizer>(std::move(m)));
}

}  // namespace modamba::data
