#include "core/data/mnist.h"

#include <zlib.h>

#include <string>

#include "core/data/test_util.h"
#include "core/rng.h"
#include "gtest/gtest.h"

namespace modamba::data {
namespace {

using testing::CopyDamaged;
using testing::ScratchDir;

void WriteGzip(const std::string& path, const std::string& bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  ASSERT_EQ(gzwrite(f, bytes.data(), bytes.size()), static_cast<int>(bytes.size()));
  ASSERT_EQ(gzclose(f), Z_OK);
}

std::string BigEndian(uint32_t v) {
  return std::string{static_cast<char>(v >> 24), static_cast<char>(v >> 16),
                     static_cast<char>(v >> 8), static_cast<char>(v)};
}

// Incompressible pixels, so that damage lands in the deflate stream.
char Pixel(int i) { return static_cast<char>(Rng(static_cast<uint64_t>(i)).NextU64() >> 56); }

// n random-looking 28x28 images and their labels as IDX.gz files.
void WriteIdx(const std::string& dir, int n) {
  std::string images = BigEndian(0x803) + BigEndian(n) + BigEndian(28) + BigEndian(28);
  for (int i = 0; i < n * kImagePixels; ++i) images.push_back(Pixel(i));
  std::string labels = BigEndian(0x801) + BigEndian(n);
  for (int i = 0; i < n; ++i) labels.push_back(static_cast<char>(i % 10));
  WriteGzip(dir + "/images.gz", images);
  WriteGzip(dir + "/labels.gz", labels);
}

TEST(MnistTest, ReadsIdxGzAndSlices) {
  const std::string dir = ScratchDir("mnist_read");
  WriteIdx(dir, 50);
  absl::StatusOr<MnistSet> set = ReadMnist(dir + "/images.gz", dir + "/labels.gz");
  ASSERT_TRUE(set.ok()) << set.status();
  ASSERT_EQ(set->count(), 50);
  EXPECT_EQ(set->labels[13], 3);
  EXPECT_EQ(set->image(1)[5], static_cast<uint8_t>(Pixel(kImagePixels + 5)));
  absl::StatusOr<MnistSet> slice = ReadMnist(dir + "/images.gz", dir + "/labels.gz", 7);
  ASSERT_TRUE(slice.ok());
  EXPECT_EQ(slice->count(), 7);
  EXPECT_EQ(slice->pixels.size(), 7u * kImagePixels);
}

TEST(MnistTest, TruncatedGzipNamesTheFile) {
  const std::string dir = ScratchDir("mnist_truncated");
  WriteIdx(dir, 50);
  CopyDamaged(dir + "/images.gz", dir + "/cut.gz", 20000);
  absl::StatusOr<MnistSet> set = ReadMnist(dir + "/cut.gz", dir + "/labels.gz");
  ASSERT_FALSE(set.ok());
  EXPECT_NE(set.status().message().find(dir + "/cut.gz"), std::string::npos) << set.status();
}

TEST(MnistTest, CorruptGzipNamesTheFile) {
  const std::string dir = ScratchDir("mnist_corrupt");
  WriteIdx(dir, 50);
  CopyDamaged(dir + "/images.gz", dir + "/bad.gz", -1, 20000);
  absl::StatusOr<MnistSet> set = ReadMnist(dir + "/bad.gz", dir + "/labels.gz");
  ASSERT_FALSE(set.ok());
  EXPECT_NE(set.status().message().find(dir + "/bad.gz"), std::string::npos) << set.status();
}

TEST(MnistTest, ShortPayloadAndMismatchedLabelsAreErrors) {
  const std::string dir = ScratchDir("mnist_short");
  WriteGzip(dir + "/images.gz", BigEndian(0x803) + BigEndian(2) + BigEndian(28) + BigEndian(28) +
                                    std::string(kImagePixels, '\0'));
  WriteGzip(dir + "/labels.gz", BigEndian(0x801) + BigEndian(2) + std::string(2, '\1'));
  absl::StatusOr<MnistSet> set = ReadMnist(dir + "/images.gz", dir + "/labels.gz");
  ASSERT_FALSE(set.ok());
  EXPECT_NE(set.status().message().find("truncated"), std::string::npos) << set.status();

  WriteIdx(dir, 5);
  WriteGzip(dir + "/labels.gz", BigEndian(0x801) + BigEndian(4) + std::string(4, '\1'));
  set = ReadMnist(dir + "/images.gz", dir + "/labels.gz");
  ASSERT_FALSE(set.ok());
  EXPECT_NE(set.status().message().find(dir + "/labels.gz"), std::string::npos) << set.status();
}

TEST(MnistTest, MissingFileNamesTheFile) {
  absl::StatusOr<MnistSet> set = ReadMnist("/nonexistent/images.gz", "/nonexistent/labels.gz");
  ASSERT_FALSE(set.ok());
  EXPECT_NE(set.status().message().find("/nonexistent/images.gz"), std::string::npos);
}

TEST(MnistTest, ReadsTheRealTestSet) {
  const std::string raw = testing::RawDataDirOrEmpty();
  if (raw.empty()) GTEST_SKIP() << "raw data not found";
  absl::StatusOr<MnistSet> set = ReadMnist(raw + "/mnist/t10k-images-idx3-ubyte.gz",
                                           raw + "/mnist/t10k-labels-idx1-ubyte.gz");
  ASSERT_TRUE(set.ok()) << set.status();
  EXPECT_EQ(set->count(), 10000);
  EXPECT_EQ(set->labels[0], 7);  // the first MNIST test digit is a seven
}

}  // namespace
}  // namespace modamba::data
