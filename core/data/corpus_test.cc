#include "core/data/corpus.h"

#include <zlib.h>
#include <zstd.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "core/data/test_util.h"
#include "core/data/vocab.h"
#include "core/file_util.h"
#include "gtest/gtest.h"

namespace modamba::data {
namespace {

namespace fs = std::filesystem;

std::string ErrorOf(absl::string_view line) {
  absl::StatusOr<CorpusDocument> doc = ParseDocumentLine(line, "/base");
  EXPECT_FALSE(doc.ok()) << line;
  return std::string(doc.status().message());
}

TEST(CorpusTest, ParsesEverySegmentKind) {
  absl::StatusOr<CorpusDocument> doc = ParseDocumentLine(
      R"([{"text": "h\u00e9"}, {"image": "img/a.png"}, {"audio": "/abs/b.flac"},)"
      R"( {"tokens": [1, 2, 3], "modality": "speech"}])",
      "/base");
  ASSERT_TRUE(doc.ok()) << doc.status();
  ASSERT_EQ(doc->segments.size(), 4u);
  EXPECT_EQ(doc->segments[0].kind, Segment::kText);
  EXPECT_EQ(doc->segments[0].value, "h\xc3\xa9");
  EXPECT_EQ(doc->segments[1].value, "/base/img/a.png");  // relative to the file
  EXPECT_EQ(doc->segments[2].value, "/abs/b.flac");
  EXPECT_EQ(doc->segments[3].kind, Segment::kTokens);
  EXPECT_EQ(doc->segments[3].modality, kSpeech);
  EXPECT_EQ(doc->segments[3].tokens, (std::vector<int32_t>{1, 2, 3}));
}

TEST(CorpusTest, BadLinesSayWhatIsWrong) {
  EXPECT_NE(ErrorOf(R"([{"text": "a"})").find("malformed JSON at column"), std::string::npos);
  EXPECT_NE(ErrorOf("[{\"text\": \"a\xff\"}]").find("invalid UTF-8 at byte offset 12"), std::string::npos);
  EXPECT_NE(ErrorOf(R"({"text": "a"})").find("JSON array of segments"), std::string::npos);
  EXPECT_NE(ErrorOf("[]").find("at least one segment"), std::string::npos);
  EXPECT_NE(ErrorOf(R"([{"text": "a"}, {"img": "x.png"}])").find("segment 2: unknown key 'img'"),
            std::string::npos);
  EXPECT_NE(ErrorOf(R"([{"text": "a", "image": "x.png"}])").find("exactly one of"), std::string::npos);
  EXPECT_NE(ErrorOf(R"([{"tokens": [1]}])").find("tokens and modality go together"), std::string::npos);
  EXPECT_NE(ErrorOf(R"([{"tokens": [-1], "modality": "image"}])").find("not an id"), std::string::npos);
  EXPECT_NE(ErrorOf(R"([{"tokens": [1], "modality": "video"}])").find("modality 'video'"),
            std::string::npos);
  EXPECT_NE(ErrorOf(R"([{"image": 3}])").find("image is not a string"), std::string::npos);
}

std::vector<RawDocument> ReadAll(const std::string& path) {
  absl::StatusOr<std::unique_ptr<CorpusFileReader>> reader = CorpusFileReader::Open(path, 4);
  EXPECT_TRUE(reader.ok()) << reader.status();
  std::vector<RawDocument> docs;
  while (true) {
    RawDocument d;
    absl::StatusOr<bool> more = (*reader)->Next(&d);
    EXPECT_TRUE(more.ok()) << more.status();
    if (!more.ok() || !*more) break;
    docs.push_back(std::move(d));
  }
  return docs;
}

TEST(CorpusTest, ReadsPlainGzipAndZstdLinesWithTheirNumbers) {
  const std::string dir = testing::ScratchDir("corpus_lines");
  std::string text = "[{\"text\": \"one\"}]\n\n  \r\n[{\"text\": \"three\"}]\r\n[{\"text\": \"";
  text += std::string(100000, 'x') + "\"}]";  // longer than a read buffer, no final newline
  ASSERT_TRUE(WriteFileAtomic(dir + "/a.jsonl", text).ok());
  gzFile gz = gzopen((dir + "/a.jsonl.gz").c_str(), "wb");
  gzwrite(gz, text.data(), text.size());
  gzclose(gz);
  std::string zst(ZSTD_compressBound(text.size()), '\0');
  zst.resize(ZSTD_compress(zst.data(), zst.size(), text.data(), text.size(), 3));
  ASSERT_TRUE(WriteFileAtomic(dir + "/a.jsonl.zst", zst).ok());
  for (const char* name : {"/a.jsonl", "/a.jsonl.gz", "/a.jsonl.zst"}) {
    const std::vector<RawDocument> docs = ReadAll(dir + name);
    ASSERT_EQ(docs.size(), 3u) << name;
    EXPECT_EQ(docs[0].line, 1);
    EXPECT_EQ(docs[1].line, 4);  // blank lines count but are skipped
    EXPECT_EQ(docs[1].text, "[{\"text\": \"three\"}]");
    EXPECT_EQ(docs[2].line, 5);
    EXPECT_EQ(docs[2].text.size(), 100000u + 14);
  }
}

TEST(CorpusTest, TruncatedCompressedFilesAreErrorsNamingTheFile) {
  const std::string dir = testing::ScratchDir("corpus_truncated");
  std::string text;
  for (int i = 0; i < 2000; ++i) text += "[{\"text\": \"line " + std::to_string(i) + "\"}]\n";
  gzFile gz = gzopen((dir + "/full.gz").c_str(), "wb");
  gzwrite(gz, text.data(), text.size());
  gzclose(gz);
  std::string zst(ZSTD_compressBound(text.size()), '\0');
  zst.resize(ZSTD_compress(zst.data(), zst.size(), text.data(), text.size(), 3));
  ASSERT_TRUE(WriteFileAtomic(dir + "/full.zst", zst).ok());
  for (const std::string name : {"full.gz", "full.zst"}) {
    const std::string cut = dir + "/cut-" + name;
    testing::CopyDamaged(dir + "/" + name, cut, static_cast<long>(fs::file_size(dir + "/" + name) / 2));
    absl::StatusOr<std::unique_ptr<CorpusFileReader>> reader = CorpusFileReader::Open(cut, 4);
    ASSERT_TRUE(reader.ok());
    absl::Status status;
    RawDocument d;
    while (status.ok()) {
      absl::StatusOr<bool> more = (*reader)->Next(&d);
      if (!more.ok()) status = more.status();
      if (more.ok() && !*more) break;
    }
    EXPECT_FALSE(status.ok()) << name;
    EXPECT_NE(status.message().find(cut), std::string::npos) << status;
    EXPECT_NE(status.message().find("truncated"), std::string::npos) << status;
  }
}

// A 1-D .npy file of int32 or uint8 values.
template <typename T>
void WriteNpy(const std::string& path, const std::vector<T>& values) {
  std::string header = std::string("{'descr': '") + (sizeof(T) == 4 ? "<i4" : "|u1") +
                       "', 'fortran_order': False, 'shape': (" + std::to_string(values.size()) +
                       ",), }";
  while ((10 + header.size() + 1) % 64 != 0) header += ' ';
  header += '\n';
  std::string bytes = "\x93NUMPY\x01";
  bytes.push_back('\0');
  bytes.push_back(static_cast<char>(header.size() & 0xff));
  bytes.push_back(static_cast<char>(header.size() >> 8));
  bytes += header;
  bytes.append(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(T));
  ASSERT_TRUE(WriteFileAtomic(path, bytes).ok());
}

TEST(CorpusTest, PreTokenizedArraysBecomeTokenSegmentsPerModalityRun) {
  const std::string dir = testing::ScratchDir("corpus_arrays");
  WriteNpy<int32_t>(dir + "/c.npy", {5, 6, 1, 2, 7, 9, 9});
  WriteNpy<uint8_t>(dir + "/c.modality.npy", {0, 0, 1, 1, 0, 2, 2});
  WriteNpy<int32_t>(dir + "/c.offsets.npy", {0, 5, 7});
  absl::StatusOr<std::vector<std::string>> files = ExpandInputs(dir + "/*.npy");
  ASSERT_TRUE(files.ok()) << files.status();
  EXPECT_EQ(*files, std::vector<std::string>{dir + "/c.npy"});  // sidecars are not inputs
  std::vector<RawDocument> docs = ReadAll(dir + "/c.npy");
  ASSERT_EQ(docs.size(), 2u);
  const std::vector<Segment>& a = docs[0].parsed->segments;
  ASSERT_EQ(a.size(), 3u);
  EXPECT_EQ(a[0].modality, kText);
  EXPECT_EQ(a[0].tokens, (std::vector<int32_t>{5, 6}));
  EXPECT_EQ(a[1].modality, kImage);
  EXPECT_EQ(a[2].tokens, (std::vector<int32_t>{7}));
  EXPECT_EQ(docs[1].parsed->segments[0].modality, kSpeech);
  EXPECT_EQ(docs[1].line, 2);

  // Without offsets: documents of 4 tokens (the reader's document size).
  fs::remove(dir + "/c.offsets.npy");
  EXPECT_EQ(ReadAll(dir + "/c.npy").size(), 2u);

  WriteNpy<uint8_t>(dir + "/c.modality.npy", {0, 0, 1});
  absl::StatusOr<std::unique_ptr<CorpusFileReader>> bad = CorpusFileReader::Open(dir + "/c.npy", 4);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("7 tokens but 3 modality ids"), std::string::npos);
}

TEST(CorpusTest, SafetensorsArrays) {
  const std::string dir = testing::ScratchDir("corpus_safetensors");
  const std::string header =
      R"({"tokens":{"dtype":"I64","shape":[3],"data_offsets":[0,24]},)"
      R"("modality":{"dtype":"U8","shape":[3],"data_offsets":[24,27]}})";
  std::string bytes(8, '\0');
  const uint64_t n = header.size();
  std::memcpy(bytes.data(), &n, 8);
  bytes += header;
  const int64_t tokens[3] = {1, 2, 3};
  bytes.append(reinterpret_cast<const char*>(tokens), sizeof(tokens));
  bytes += std::string("\x00\x01\x01", 3);
  ASSERT_TRUE(WriteFileAtomic(dir + "/d.safetensors", bytes).ok());
  std::vector<RawDocument> docs = ReadAll(dir + "/d.safetensors");
  ASSERT_EQ(docs.size(), 1u);  // 3 tokens, documents of 4
  ASSERT_EQ(docs[0].parsed->segments.size(), 2u);
  EXPECT_EQ(docs[0].parsed->segments[1].tokens, (std::vector<int32_t>{2, 3}));
  ASSERT_TRUE(WriteFileAtomic(dir + "/d.safetensors", bytes.substr(0, bytes.size() - 2)).ok());
  EXPECT_FALSE(CorpusFileReader::Open(dir + "/d.safetensors", 4).ok());
}

TEST(CorpusTest, GlobsAreSortedAndAPatternMatchingNothingIsAnError) {
  const std::string dir = testing::ScratchDir("corpus_globs");
  for (const char* name : {"b.jsonl", "a.jsonl", "c.jsonl.gz"}) {
    ASSERT_TRUE(WriteFileAtomic(dir + "/" + name, "").ok());
  }
  absl::StatusOr<std::vector<std::string>> files =
      ExpandInputs(dir + "/*.jsonl," + dir + "/*.gz," + dir + "/a.jsonl");
  ASSERT_TRUE(files.ok());
  EXPECT_EQ(*files, (std::vector<std::string>{dir + "/a.jsonl", dir + "/b.jsonl", dir + "/c.jsonl.gz"}));
  absl::StatusOr<std::vector<std::string>> none = ExpandInputs(dir + "/*.txt");
  ASSERT_FALSE(none.ok());
  EXPECT_NE(none.status().message().find("*.txt' matches no file"), std::string::npos);
}

}  // namespace
}  // namespace modamba::data
