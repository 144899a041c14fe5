#include "core/data/corpus.h"

#include <fcntl.h>
#include <glob.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>

#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "core/data/vocab.h"
#include "core/status_macros.h"

namespace modamba::data {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// Offset of the first byte that does not start a valid UTF-8 sequence
// (overlong forms, surrogates and code points past U+10FFFF included), or
// npos when all of `s` is valid.
size_t InvalidUtf8Offset(absl::string_view s) {
  const auto at = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  for (size_t i = 0; i < s.size();) {
    const unsigned char c = at(i);
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t n;
    uint32_t cp;
    if (c >= 0xC2 && c <= 0xDF) {
      n = 2, cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
      n = 3, cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      n = 4, cp = c & 0x07;
    } else {
      return i;
    }
    if (i + n > s.size()) return i;
    for (size_t k = 1; k < n; ++k) {
      if ((at(i + k) & 0xC0) != 0x80) return i;
      cp = (cp << 6) | (at(i + k) & 0x3F);
    }
    if ((n == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
        (n == 4 && (cp < 0x10000 || cp > 0x10FFFF))) {
      return i;
    }
    i += n;
  }
  return absl::string_view::npos;
}

absl::StatusOr<int> ParseModality(const std::string& name) {
  for (int m = 0; m < kNumModalities; ++m) {
    if (name == ModalityName(m)) return m;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("modality '", name, "' (text, image or speech)"));
}

absl::StatusOr<Segment> ParseSegment(const json& j, const std::string& base_dir) {
  if (!j.is_object()) return absl::InvalidArgumentError("is not an object");
  Segment seg;
  for (const auto& [key, value] : j.items()) {
    if (key != "text" && key != "image" && key != "audio" && key != "tokens" &&
        key != "modality") {
      return absl::InvalidArgumentError(absl::StrCat(
          "unknown key '", key, "' (text, image, audio, or tokens with modality)"));
    }
  }
  const int kinds = j.contains("text") + j.contains("image") + j.contains("audio") +
                    j.contains("tokens");
  if (kinds != 1) {
    return absl::InvalidArgumentError("needs exactly one of text, image, audio, tokens");
  }
  if (j.contains("modality") != j.contains("tokens")) {
    return absl::InvalidArgumentError("tokens and modality go together");
  }
  if (j.contains("tokens")) {
    seg.kind = Segment::kTokens;
    const json& tokens = j.at("tokens");
    if (!tokens.is_array()) return absl::InvalidArgumentError("tokens is not an array");
    for (const json& t : tokens) {
      if (!t.is_number_integer() || t.get<int64_t>() < 0 || t.get<int64_t>() > INT32_MAX) {
        return absl::InvalidArgumentError(absl::StrCat("token ", t.dump(), " is not an id >= 0"));
      }
      seg.tokens.push_back(t.get<int32_t>());
    }
    if (!j.at("modality").is_string()) return absl::InvalidArgumentError("modality is not a string");
    ASSIGN_OR_RETURN(seg.modality, ParseModality(j.at("modality").get<std::string>()));
    return seg;
  }
  const char* key = j.contains("text") ? "text" : j.contains("image") ? "image" : "audio";
  seg.kind = j.contains("text") ? Segment::kText
             : j.contains("image") ? Segment::kImage
                                   : Segment::kAudio;
  if (!j.at(key).is_string()) return absl::InvalidArgumentError(absl::StrCat(key, " is not a string"));
  seg.value = j.at(key).get<std::string>();
  if (seg.kind != Segment::kText) {
    if (seg.value.empty()) return absl::InvalidArgumentError(absl::StrCat(key, " path is empty"));
    if (seg.value[0] != '/') seg.value = absl::StrCat(base_dir, "/", seg.value);
  }
  return seg;
}

// --- JSON Lines, plain or compressed --------------------------------------

// A source of decompressed bytes.
class ByteStream {
 public:
  virtual ~ByteStream() = default;
  // Up to n bytes; 0 at the end.
  virtual absl::StatusOr<size_t> Read(char* out, size_t n) = 0;
};

class PlainStream : public ByteStream {
 public:
  PlainStream(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}
  ~PlainStream() override { close(fd_); }
  absl::StatusOr<size_t> Read(char* out, size_t n) override {
    const ssize_t got = read(fd_, out, n);
    if (got < 0) return absl::DataLossError(absl::StrCat(path_, ": read: ", strerror(errno)));
    return static_cast<size_t>(got);
  }

 private:
  std::string path_;
  int fd_;
};

class GzipStream : public ByteStream {
 public:
  GzipStream(std::string path, gzFile f) : path_(std::move(path)), f_(f) {}
  ~GzipStream() override { gzclose(f_); }
  absl::StatusOr<size_t> Read(char* out, size_t n) override {
    const int got = gzread(f_, out, static_cast<unsigned>(n));
    int err = Z_OK;
    const char* message = gzerror(f_, &err);
    if (got < 0 || (err != Z_OK && err != Z_STREAM_END)) {
      return absl::DataLossError(
          absl::StrCat(path_, ": corrupt or truncated gzip (", message, ")"));
    }
    return static_cast<size_t>(got);
  }

 private:
  std::string path_;
  gzFile f_;
};

class ZstdStream : public ByteStream {
 public:
  ZstdStream(std::string path, int fd)
      : path_(std::move(path)), fd_(fd), dctx_(ZSTD_createDCtx()), in_(ZSTD_DStreamInSize()) {}
  ~ZstdStream() override {
    ZSTD_freeDCtx(dctx_);
    close(fd_);
  }
  absl::StatusOr<size_t> Read(char* out, size_t n) override {
    ZSTD_outBuffer output = {out, n, 0};
    while (output.pos == 0) {
      if (input_.pos == input_.size) {
        const ssize_t got = read(fd_, in_.data(), in_.size());
        if (got < 0) return absl::DataLossError(absl::StrCat(path_, ": read: ", strerror(errno)));
        if (got == 0) {
          if (!frame_done_) return absl::DataLossError(absl::StrCat(path_, ": truncated zstd"));
          return 0;
        }
        input_ = {in_.data(), static_cast<size_t>(got), 0};
      }
      const size_t r = ZSTD_decompressStream(dctx_, &output, &input_);
      if (ZSTD_isError(r)) {
        return absl::DataLossError(
            absl::StrCat(path_, ": corrupt zstd (", ZSTD_getErrorName(r), ")"));
      }
      frame_done_ = r == 0;
    }
    return output.pos;
  }

 private:
  std::string path_;
  int fd_;
  ZSTD_DCtx* dctx_;
  std::vector<char> in_;
  ZSTD_inBuffer input_ = {nullptr, 0, 0};
  bool frame_done_ = true;
};

class JsonlReader : public CorpusFileReader {
 public:
  JsonlReader(std::unique_ptr<ByteStream> stream, std::string path)
      : stream_(std::move(stream)), path_(std::move(path)), buffer_(1 << 16) {}

  absl::StatusOr<bool> Next(RawDocument* doc) override {
    while (true) {
      doc->text.clear();
      bool any = false;
      while (true) {
        if (pos_ == end_) {
          ASSIGN_OR_RETURN(end_, stream_->Read(buffer_.data(), buffer_.size()));
          pos_ = 0;
          if (end_ == 0) break;
        }
        any = true;
        const char* begin = buffer_.data() + pos_;
        const void* newline = memchr(begin, '\n', end_ - pos_);
        if (newline == nullptr) {
          doc->text.append(begin, end_ - pos_);
          pos_ = end_;
          continue;
        }
        const size_t len = static_cast<const char*>(newline) - begin;
        doc->text.append(begin, len);
        pos_ += len + 1;
        break;
      }
      if (!any) return false;
      ++line_;
      if (!doc->text.empty() && doc->text.back() == '\r') doc->text.pop_back();
      if (absl::StripAsciiWhitespace(doc->text).empty()) continue;
      doc->line = line_;
      doc->parsed.reset();
      return true;
    }
  }

 private:
  std::unique_ptr<ByteStream> stream_;
  std::string path_;
  std::vector<char> buffer_;
  size_t pos_ = 0, end_ = 0;
  int64_t line_ = 0;
};

// --- Pre-tokenized arrays ---------------------------------------------------

// A 1-D integer array inside a file, read by pread.
struct IntArray {
  int fd = -1;
  int64_t offset = 0;  // of element 0
  int64_t count = 0;
  int width = 0;       // bytes per element
  bool is_signed = false;

  absl::Status Read(const std::string& path, int64_t begin, int64_t n,
                    std::vector<int64_t>* out) const {
    std::vector<char> bytes(n * width);
    const ssize_t got = pread(fd, bytes.data(), bytes.size(), offset + begin * width);
    if (got != static_cast<ssize_t>(bytes.size())) {
      return absl::DataLossError(absl::StrCat(path, ": truncated array data"));
    }
    out->resize(n);
    for (int64_t i = 0; i < n; ++i) {
      uint64_t u = 0;
      std::memcpy(&u, bytes.data() + i * width, width);  // little-endian hosts
      if (is_signed && width < 8 && (u >> (8 * width - 1)) != 0) u |= ~uint64_t{0} << (8 * width);
      (*out)[i] = static_cast<int64_t>(u);
    }
    return absl::OkStatus();
  }
};

// Little-endian integer dtypes by their numpy ("<i4", "|u1") or safetensors
// ("I32", "U8") names.
absl::Status SetIntType(absl::string_view name, IntArray* a) {
  static const std::pair<const char*, std::pair<int, bool>> kTypes[] = {
      {"<i8", {8, true}}, {"<i4", {4, true}}, {"<i2", {2, true}}, {"|i1", {1, true}},
      {"<u8", {8, false}}, {"<u4", {4, false}}, {"<u2", {2, false}}, {"|u1", {1, false}},
      {"I64", {8, true}}, {"I32", {4, true}}, {"I16", {2, true}}, {"I8", {1, true}},
      {"U64", {8, false}}, {"U32", {4, false}}, {"U16", {2, false}}, {"U8", {1, false}}};
  for (const auto& [n, t] : kTypes) {
    if (name == n) {
      a->width = t.first;
      a->is_signed = t.second;
      return absl::OkStatus();
    }
  }
  return absl::InvalidArgumentError(
      absl::StrCat("dtype '", name, "' is not a little-endian integer type"));
}

int64_t FileSize(int fd) {
  const off_t end = lseek(fd, 0, SEEK_END);
  return end < 0 ? -1 : end;
}

// An .npy file (format 1.0-3.0) holding a 1-D little-endian integer array.
absl::StatusOr<IntArray> OpenNpy(const std::string& path, int fd) {
  char head[12];
  if (pread(fd, head, sizeof(head), 0) != sizeof(head) || std::memcmp(head, "\x93NUMPY", 6) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not an .npy file"));
  }
  const int major = static_cast<unsigned char>(head[6]);
  int64_t header_len, header_at;
  if (major == 1) {
    header_len = static_cast<unsigned char>(head[8]) | static_cast<unsigned char>(head[9]) << 8;
    header_at = 10;
  } else {
    uint32_t n;
    std::memcpy(&n, head + 8, 4);
    header_len = n;
    header_at = 12;
  }
  std::string header(header_len, '\0');
  if (pread(fd, header.data(), header_len, header_at) != header_len) {
    return absl::DataLossError(absl::StrCat(path, ": truncated .npy header"));
  }
  // {'descr': '<i4', 'fortran_order': False, 'shape': (123,), }
  auto field = [&](absl::string_view key) -> absl::string_view {
    const size_t at = header.find(absl::StrCat("'", key, "'"));
    if (at == std::string::npos) return {};
    absl::string_view rest = absl::string_view(header).substr(at + key.size() + 2);
    rest = absl::StripLeadingAsciiWhitespace(rest.substr(rest.find(':') + 1));
    return rest;
  };
  IntArray a;
  a.fd = fd;
  a.offset = header_at + header_len;
  absl::string_view descr = field("descr");
  if (descr.size() < 5 || descr[0] != '\'') {
    return absl::InvalidArgumentError(absl::StrCat(path, ": .npy header has no descr"));
  }
  if (absl::Status s = SetIntType(descr.substr(1, 3), &a); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", s.message()));
  }
  absl::string_view shape = field("shape");
  const size_t close = shape.find(')');
  std::vector<std::string> dims = absl::StrSplit(shape.substr(1, close - 1), ',', absl::SkipWhitespace());
  if (shape.empty() || shape[0] != '(' || close == absl::string_view::npos || dims.size() != 1 ||
      !absl::SimpleAtoi(absl::StripAsciiWhitespace(dims[0]), &a.count)) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": expected a 1-D array"));
  }
  if (FileSize(fd) < a.offset + a.count * a.width) {
    return absl::DataLossError(absl::StrCat(path, ": truncated (", a.count, " elements declared)"));
  }
  return a;
}

// Tensors of a .safetensors file, each a 1-D integer array.
absl::StatusOr<std::map<std::string, IntArray>> OpenSafetensors(const std::string& path, int fd) {
  uint64_t n = 0;
  const int64_t size = FileSize(fd);
  if (pread(fd, &n, 8, 0) != 8 || n > static_cast<uint64_t>(size) - 8) {
    return absl::DataLossError(absl::StrCat(path, ": truncated safetensors header"));
  }
  std::string header(n, '\0');
  if (pread(fd, header.data(), n, 8) != static_cast<ssize_t>(n)) {
    return absl::DataLossError(absl::StrCat(path, ": truncated safetensors header"));
  }
  const json j = json::parse(header, nullptr, false);
  if (!j.is_object()) return absl::DataLossError(absl::StrCat(path, ": bad safetensors header"));
  std::map<std::string, IntArray> out;
  for (const auto& [name, t] : j.items()) {
    if (name == "__metadata__") continue;
    IntArray a;
    a.fd = fd;
    if (!t.is_object() || !t.contains("dtype") || !t.contains("shape") ||
        !t.contains("data_offsets") || !t["dtype"].is_string() || t["shape"].size() != 1 ||
        t["data_offsets"].size() != 2) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": tensor '", name, "' is not a 1-D array"));
    }
    if (absl::Status s = SetIntType(t["dtype"].get<std::string>(), &a); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": tensor '", name, "': ", s.message()));
    }
    a.count = t["shape"][0].get<int64_t>();
    a.offset = 8 + static_cast<int64_t>(n) + t["data_offsets"][0].get<int64_t>();
    if (t["data_offsets"][1].get<int64_t>() - t["data_offsets"][0].get<int64_t>() !=
            a.count * a.width ||
        a.offset + a.count * a.width > size) {
      return absl::DataLossError(absl::StrCat(path, ": tensor '", name, "' is truncated"));
    }
    out[name] = a;
  }
  return out;
}

class ArrayReader : public CorpusFileReader {
 public:
  ~ArrayReader() override {
    for (int fd : fds_) close(fd);
  }

  static absl::StatusOr<std::unique_ptr<CorpusFileReader>> Open(const std::string& path,
                                                                int64_t document_tokens) {
    auto r = std::unique_ptr<ArrayReader>(new ArrayReader);
    r->path_ = path;
    r->document_tokens_ = std::max<int64_t>(1, document_tokens);
    auto open_file = [&](const std::string& p) -> absl::StatusOr<int> {
      const int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0) return absl::NotFoundError(absl::StrCat(p, ": ", strerror(errno)));
      r->fds_.push_back(fd);
      return fd;
    };
    bool has_offsets = false;
    if (absl::EndsWith(path, ".safetensors")) {
      ASSIGN_OR_RETURN(const int fd, open_file(path));
      ASSIGN_OR_RETURN(auto tensors, OpenSafetensors(path, fd));
      for (const char* name : {"tokens", "modality"}) {
        if (!tensors.count(name)) {
          return absl::InvalidArgumentError(absl::StrCat(path, ": no tensor '", name, "'"));
        }
      }
      r->tokens_ = tensors["tokens"];
      r->modality_ = tensors["modality"];
      if (tensors.count("offsets")) r->offsets_ = tensors["offsets"], has_offsets = true;
    } else {
      const std::string stem = path.substr(0, path.size() - 4);
      ASSIGN_OR_RETURN(const int fd, open_file(path));
      ASSIGN_OR_RETURN(r->tokens_, OpenNpy(path, fd));
      ASSIGN_OR_RETURN(const int mfd, open_file(stem + ".modality.npy"));
      ASSIGN_OR_RETURN(r->modality_, OpenNpy(stem + ".modality.npy", mfd));
      if (fs::exists(stem + ".offsets.npy")) {
        ASSIGN_OR_RETURN(const int ofd, open_file(stem + ".offsets.npy"));
        ASSIGN_OR_RETURN(r->offsets_, OpenNpy(stem + ".offsets.npy", ofd));
        has_offsets = true;
      }
    }
    if (r->modality_.count != r->tokens_.count) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": ", r->tokens_.count, " tokens but ",
                                                     r->modality_.count, " modality ids"));
    }
    if (has_offsets) {
      std::vector<int64_t> ends;
      if (r->offsets_.count < 1) return absl::InvalidArgumentError(absl::StrCat(path, ": empty offsets"));
      RETURN_IF_ERROR(r->offsets_.Read(path, 0, 1, &ends));
      RETURN_IF_ERROR(r->offsets_.Read(path, r->offsets_.count - 1, 1, &r->last_offset_));
      if (ends[0] != 0 || r->last_offset_[0] != r->tokens_.count) {
        return absl::InvalidArgumentError(absl::StrCat(
            path, ": offsets must run from 0 to the number of tokens (", r->tokens_.count, ")"));
      }
      r->documents_ = r->offsets_.count - 1;
    } else {
      r->documents_ = (r->tokens_.count + r->document_tokens_ - 1) / r->document_tokens_;
    }
    r->has_offsets_ = has_offsets;
    return std::unique_ptr<CorpusFileReader>(std::move(r));
  }

  absl::StatusOr<bool> Next(RawDocument* doc) override {
    if (next_ >= documents_) return false;
    const int64_t d = next_++;
    int64_t begin = d * document_tokens_, end = std::min(tokens_.count, begin + document_tokens_);
    if (has_offsets_) {
      std::vector<int64_t> o;
      RETURN_IF_ERROR(offsets_.Read(path_, d, 2, &o));
      begin = o[0], end = o[1];
      if (begin > end || end > tokens_.count) {
        return absl::InvalidArgumentError(
            absl::StrCat(path_, ": document ", d + 1, ": offsets ", begin, "..", end, " out of order"));
      }
    }
    std::vector<int64_t> tokens, modality;
    RETURN_IF_ERROR(tokens_.Read(path_, begin, end - begin, &tokens));
    RETURN_IF_ERROR(modality_.Read(path_, begin, end - begin, &modality));
    doc->line = d + 1;
    doc->text.clear();
    doc->parsed = std::make_unique<CorpusDocument>();
    for (size_t i = 0; i < tokens.size(); ++i) {
      if (modality[i] < 0 || modality[i] >= kNumModalities) {
        return absl::InvalidArgumentError(absl::StrCat(path_, ": document ", d + 1,
                                                       ": modality id ", modality[i],
                                                       " (0 text, 1 image, 2 speech)"));
      }
      if (tokens[i] < 0 || tokens[i] > INT32_MAX) {
        return absl::InvalidArgumentError(
            absl::StrCat(path_, ": document ", d + 1, ": token id ", tokens[i]));
      }
      std::vector<Segment>& segs = doc->parsed->segments;
      if (segs.empty() || segs.back().modality != modality[i]) {
        segs.emplace_back();
        segs.back().kind = Segment::kTokens;
        segs.back().modality = static_cast<int>(modality[i]);
      }
      segs.back().tokens.push_back(static_cast<int32_t>(tokens[i]));
    }
    return true;
  }

 private:
  ArrayReader() = default;

  std::string path_;
  std::vector<int> fds_;
  IntArray tokens_, modality_, offsets_;
  bool has_offsets_ = false;
  std::vector<int64_t> last_offset_;
  int64_t document_tokens_ = 1;
  int64_t documents_ = 0;
  int64_t next_ = 0;
};

}  // namespace

absl::StatusOr<CorpusDocument> ParseDocumentLine(absl::string_view line,
                                                 const std::string& base_dir) {
  if (const size_t bad = InvalidUtf8Offset(line); bad != absl::string_view::npos) {
    return absl::InvalidArgumentError(absl::StrCat("invalid UTF-8 at byte offset ", bad));
  }
  json j;
  try {
    j = json::parse(line.begin(), line.end());
  } catch (const json::parse_error& e) {
    std::string what = e.what();
    const size_t colon = what.find("error: ");
    return absl::InvalidArgumentError(
        absl::StrCat("malformed JSON at column ", e.byte, ": ",
                     colon == std::string::npos ? what : what.substr(colon + 7)));
  }
  if (!j.is_array()) {
    return absl::InvalidArgumentError(
        "a document is a JSON array of segments ([{\"text\": ...}, {\"image\": ...}, ...])");
  }
  if (j.empty()) return absl::InvalidArgumentError("a document needs at least one segment");
  CorpusDocument doc;
  for (size_t i = 0; i < j.size(); ++i) {
    absl::StatusOr<Segment> seg = ParseSegment(j[i], base_dir);
    if (!seg.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("segment ", i + 1, ": ", seg.status().message()));
    }
    doc.segments.push_back(*std::move(seg));
  }
  return doc;
}

absl::StatusOr<std::vector<std::string>> ExpandInputs(const std::string& patterns) {
  std::vector<std::string> out;
  std::set<std::string> seen;
  for (absl::string_view pattern : absl::StrSplit(patterns, ',', absl::SkipEmpty())) {
    const std::string p(pattern);
    glob_t g;
    const int rc = glob(p.c_str(), GLOB_NOSORT, nullptr, &g);
    std::vector<std::string> matches;
    if (rc == 0) {
      for (size_t i = 0; i < g.gl_pathc; ++i) {
        const std::string m = g.gl_pathv[i];
        if (absl::EndsWith(m, ".modality.npy") || absl::EndsWith(m, ".offsets.npy")) continue;
        std::error_code ec;
        if (fs::is_regular_file(m, ec)) matches.push_back(m);
      }
    }
    globfree(&g);
    if (matches.empty()) {
      return absl::NotFoundError(absl::StrCat("input '", p, "' matches no file"));
    }
    std::sort(matches.begin(), matches.end());
    for (std::string& m : matches) {
      if (seen.insert(m).second) out.push_back(std::move(m));
    }
  }
  if (out.empty()) return absl::InvalidArgumentError("no input files given");
  return out;
}

absl::StatusOr<std::unique_ptr<CorpusFileReader>> CorpusFileReader::Open(
    const std::string& path, int64_t array_document_tokens) {
  if (absl::EndsWith(path, ".npy") || absl::EndsWith(path, ".safetensors")) {
    return ArrayReader::Open(path, array_document_tokens);
  }
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::NotFoundError(absl::StrCat(path, ": ", strerror(errno)));
  unsigned char magic[4] = {0, 0, 0, 0};
  const ssize_t got = pread(fd, magic, 4, 0);
  std::unique_ptr<ByteStream> stream;
  if (got >= 2 && magic[0] == 0x1f && magic[1] == 0x8b) {
    gzFile f = gzdopen(fd, "rb");
    if (f == nullptr) {
      close(fd);
      return absl::DataLossError(absl::StrCat(path, ": cannot open gzip"));
    }
    stream = std::make_unique<GzipStream>(path, f);
  } else if (got == 4 && magic[0] == 0x28 && magic[1] == 0xb5 && magic[2] == 0x2f &&
             magic[3] == 0xfd) {
    stream = std::make_unique<ZstdStream>(path, fd);
  } else {
    stream = std::make_unique<PlainStream>(path, fd);
  }
  return std::unique_ptr<CorpusFileReader>(new JsonlReader(std::move(stream), path));
}

}  // namespace modamba::data
