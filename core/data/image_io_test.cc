#include "core/data/image_io.h"

#include <png.h>

#include <cstdio>
#include <filesystem>
#include <memory>

#include "core/data/png_io.h"
#include "core/data/test_util.h"
#include "core/rng.h"
#include "gtest/gtest.h"

namespace modamba::data {
namespace {

using testing::CopyDamaged;
using testing::ScratchDir;
using testing::WriteJpeg;

struct PngSpec {
  int width = 0, height = 0;
  int colour_type = PNG_COLOR_TYPE_GRAY;
  int bit_depth = 8;
  bool interlaced = false;
  std::vector<png_color> palette;
  std::vector<png_byte> transparency;  // tRNS alpha per palette entry
};

// Encodes `rows` (packed as libpng expects for the colour type and depth; 16-bit
// samples big-endian) with libpng directly, for what png_io does not write.
void EncodePng(const std::string& path, const PngSpec& spec,
               std::vector<std::vector<png_byte>> rows) {
  FILE* file = std::fopen(path.c_str(), "wb");
  ASSERT_NE(file, nullptr);
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png_create_info_struct(png);
  if (setjmp(png_jmpbuf(png))) FAIL() << path << ": libpng failed";
  png_init_io(png, file);
  png_set_IHDR(png, info, spec.width, spec.height, spec.bit_depth, spec.colour_type,
               spec.interlaced ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  if (!spec.palette.empty()) {
    png_set_PLTE(png, info, spec.palette.data(), static_cast<int>(spec.palette.size()));
  }
  if (!spec.transparency.empty()) {
    png_set_tRNS(png, info, spec.transparency.data(), static_cast<int>(spec.transparency.size()),
                 nullptr);
  }
  png_write_info(png, info);
  std::vector<png_bytep> pointers;
  for (auto& row : rows) pointers.push_back(row.data());
  png_write_image(png, pointers.data());
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  std::fclose(file);
}

// A smooth colour gradient, which JPEG keeps within a few levels.
std::vector<uint8_t> Gradient(int width, int height, int channels) {
  std::vector<uint8_t> pixels;
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      for (int c = 0; c < channels; ++c) {
        pixels.push_back(static_cast<uint8_t>(c == 0 ? 4 * x : c == 1 ? 4 * y : 2 * (x + y)));
      }
    }
  }
  return pixels;
}

double MeanAbsoluteDifference(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b) {
  EXPECT_EQ(a.size(), b.size());
  double d = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) d += std::abs(a[i] - b[i]);
  return d / a.size();
}

void ExpectErrorNames(const std::string& path, const std::string& what) {
  absl::StatusOr<Image> image = ReadImage(path);
  ASSERT_FALSE(image.ok()) << path;
  EXPECT_NE(image.status().message().find(path), std::string::npos) << image.status();
  EXPECT_NE(image.status().message().find(what), std::string::npos) << image.status();
}

TEST(ReadImageTest, EightBitPngsOfEveryChannelCount) {
  const std::string dir = ScratchDir("image_io_png8");
  for (int channels = 1; channels <= 4; ++channels) {
    std::vector<uint8_t> pixels(5 * 3 * channels);
    for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = static_cast<uint8_t>(i * 29 + 3);
    const std::string path = dir + "/c" + std::to_string(channels) + ".png";
    ASSERT_TRUE(WritePng(path, 5, 3, channels, pixels.data()).ok());
    absl::StatusOr<Image> image = ReadImage(path);
    ASSERT_TRUE(image.ok()) << image.status();
    EXPECT_EQ(image->width, 5);
    EXPECT_EQ(image->height, 3);
    EXPECT_EQ(image->channels, channels);
    EXPECT_EQ(image->pixels, pixels);
  }
}

TEST(ReadImageTest, PaletteLowDepthSixteenBitAndInterlacedPngs) {
  const std::string dir = ScratchDir("image_io_png_kinds");
  // 4-bit palette with a transparent entry: two pixels per byte.
  PngSpec palette{4, 1, PNG_COLOR_TYPE_PALETTE, 4};
  palette.palette = {{255, 0, 0}, {0, 255, 0}, {0, 0, 255}};
  palette.transparency = {255, 255, 0};
  EncodePng(dir + "/palette.png", palette, {{0x01, 0x20}});
  absl::StatusOr<Image> image = ReadImage(dir + "/palette.png");
  ASSERT_TRUE(image.ok()) << image.status();
  EXPECT_EQ(image->channels, 4);
  EXPECT_EQ(image->pixels, (std::vector<uint8_t>{255, 0, 0, 255, 0, 255, 0, 255,  //
                                                 0, 0, 255, 0, 255, 0, 0, 255}));

  // 1-bit grey: bits to 0 and 255.
  EncodePng(dir + "/bits.png", {8, 1, PNG_COLOR_TYPE_GRAY, 1}, {{0b10110001}});
  image = ReadImage(dir + "/bits.png");
  ASSERT_TRUE(image.ok()) << image.status();
  EXPECT_EQ(image->channels, 1);
  EXPECT_EQ(image->pixels, (std::vector<uint8_t>{255, 0, 255, 255, 0, 0, 0, 255}));

  // 16-bit RGB: k * 257 scales exactly to k; samples are big-endian.
  std::vector<png_byte> row;
  for (int v : {0, 1, 128, 200, 254, 255}) {
    row.push_back(static_cast<png_byte>(v * 257 >> 8));
    row.push_back(static_cast<png_byte>(v * 257 & 0xff));
  }
  EncodePng(dir + "/deep.png", {2, 1, PNG_COLOR_TYPE_RGB, 16}, {row});
  image = ReadImage(dir + "/deep.png");
  ASSERT_TRUE(image.ok()) << image.status();
  EXPECT_EQ(image->channels, 3);
  EXPECT_EQ(image->pixels, (std::vector<uint8_t>{0, 1, 128, 200, 254, 255}));

  // Adam7 interlacing.
  PngSpec interlaced{9, 7, PNG_COLOR_TYPE_GRAY, 8, true};
  std::vector<std::vector<png_byte>> rows(7);
  std::vector<uint8_t> expected;
  for (int y = 0; y < 7; ++y) {
    for (int x = 0; x < 9; ++x) {
      rows[y].push_back(static_cast<png_byte>(y * 9 + x));
      expected.push_back(static_cast<uint8_t>(y * 9 + x));
    }
  }
  EncodePng(dir + "/interlaced.png", interlaced, rows);
  image = ReadImage(dir + "/interlaced.png");
  ASSERT_TRUE(image.ok()) << image.status();
  EXPECT_EQ(image->pixels, expected);
}

TEST(ReadImageTest, JpegsBaselineProgressiveAndGrey) {
  const std::string dir = ScratchDir("image_io_jpeg");
  const std::vector<uint8_t> rgb = Gradient(48, 40, 3);
  for (bool progressive : {false, true}) {
    const std::string path = dir + (progressive ? "/progressive.jpg" : "/baseline.jpg");
    WriteJpeg(path, 48, 40, 3, rgb, progressive);
    absl::StatusOr<Image> image = ReadImage(path);
    ASSERT_TRUE(image.ok()) << image.status();
    EXPECT_EQ(image->width, 48);
    EXPECT_EQ(image->height, 40);
    EXPECT_EQ(image->channels, 3);
    const double mad = MeanAbsoluteDifference(image->pixels, rgb);
    RecordProperty(progressive ? "progressive_mad" : "baseline_mad", std::to_string(mad));
    EXPECT_LT(mad, 2.0) << path;
  }
  const std::vector<uint8_t> grey = Gradient(33, 17, 1);
  WriteJpeg(dir + "/grey.jpg", 33, 17, 1, grey, false);
  absl::StatusOr<Image> image = ReadImage(dir + "/grey.jpg");
  ASSERT_TRUE(image.ok()) << image.status();
  EXPECT_EQ(image->channels, 1);
  EXPECT_LT(MeanAbsoluteDifference(image->pixels, grey), 2.0);

  WriteJpeg(dir + "/cmyk.jpg", 8, 8, 4, std::vector<uint8_t>(256, 9), false);
  ExpectErrorNames(dir + "/cmyk.jpg", "CMYK");
}

TEST(ReadImageTest, FormatComesFromTheBytesNotTheName) {
  const std::string dir = ScratchDir("image_io_detect");
  const uint8_t pixels[4] = {1, 2, 3, 4};
  ASSERT_TRUE(WritePng(dir + "/png.jpg", 2, 2, 1, pixels).ok());
  absl::StatusOr<Image> image = ReadImage(dir + "/png.jpg");
  ASSERT_TRUE(image.ok()) << image.status();
  EXPECT_EQ(image->pixels, std::vector<uint8_t>(pixels, pixels + 4));
  WriteJpeg(dir + "/jpeg.png", 16, 16, 3, Gradient(16, 16, 3), false);
  image = ReadImage(dir + "/jpeg.png");
  ASSERT_TRUE(image.ok()) << image.status();
  EXPECT_EQ(image->channels, 3);
}

TEST(ReadImageTest, DamagedFilesAreErrorsNamingTheFile) {
  const std::string dir = ScratchDir("image_io_damaged");
  std::vector<uint8_t> pixels = Gradient(64, 64, 3);
  Rng rng(7);
  for (uint8_t& p : pixels) p ^= static_cast<uint8_t>(rng.Below(256));  // little to compress
  ASSERT_TRUE(WritePng(dir + "/good.png", 64, 64, 3, pixels.data()).ok());
  const long png_size = static_cast<long>(std::filesystem::file_size(dir + "/good.png"));
  CopyDamaged(dir + "/good.png", dir + "/truncated.png", png_size / 2);
  ExpectErrorNames(dir + "/truncated.png", "PNG");
  CopyDamaged(dir + "/good.png", dir + "/no_end.png", png_size - 6);  // inside IEND
  ExpectErrorNames(dir + "/no_end.png", "PNG");
  CopyDamaged(dir + "/good.png", dir + "/flipped.png", -1, png_size / 2);  // IDAT CRC
  ExpectErrorNames(dir + "/flipped.png", "PNG");

  WriteJpeg(dir + "/good.jpg", 64, 64, 3, pixels, false);
  const long jpeg_size = static_cast<long>(std::filesystem::file_size(dir + "/good.jpg"));
  CopyDamaged(dir + "/good.jpg", dir + "/truncated.jpg", jpeg_size / 2);
  ExpectErrorNames(dir + "/truncated.jpg", "Premature end of JPEG file");
  CopyDamaged(dir + "/good.jpg", dir + "/header.jpg", 40);
  ExpectErrorNames(dir + "/header.jpg", "JPEG");

  CopyDamaged(dir + "/good.png", dir + "/signature.png", 6);
  ExpectErrorNames(dir + "/signature.png", "not a PNG or JPEG");
  ExpectErrorNames(dir + "/missing.png", "");
}

}  // namespace
}  // namespace modamba::data
