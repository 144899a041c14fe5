#include "core/data/image.h"

#include <cstdint>
#include <vector>

#include "gtest/gtest.h"

namespace modamba::data {
namespace {

Image Grey(int height, int width, std::vector<uint8_t> pixels) {
  return Image{height, width, 1, std::move(pixels)};
}

TEST(ResizeImageTest, SameShapeIsACopy) {
  Image image{5, 7, 3, {}};
  for (int i = 0; i < 5 * 7 * 3; ++i) image.pixels.push_back(static_cast<uint8_t>(i * 37 % 256));
  EXPECT_EQ(ResizeImage(image, 5, 7, 3).pixels, image.pixels);
  Image grey = Grey(3, 2, {0, 1, 127, 128, 254, 255});
  EXPECT_EQ(ResizeImage(grey, 3, 2, 1).pixels, grey.pixels);
}

TEST(ResizeImageTest, ShrinkingAveragesTheCoveredArea) {
  // 2x2 blocks of a 4x4 image.
  const Image image = Grey(4, 4, {10, 20, 0, 0,      //
                                  30, 40, 0, 255,    //
                                  100, 100, 7, 9,    //
                                  100, 100, 11, 13});
  const Image half = ResizeImage(image, 2, 2, 1);
  EXPECT_EQ(half.pixels, (std::vector<uint8_t>{25, 64, 100, 10}));  // 63.75 rounds up
  // 3 -> 2: each output covers 1.5 inputs, the middle one split in halves.
  const Image row = ResizeImage(Grey(1, 3, {0, 90, 180}), 1, 2, 1);
  EXPECT_EQ(row.pixels, (std::vector<uint8_t>{30, 150}));
  // A fine checkerboard becomes flat grey instead of aliasing.
  Image board = Grey(8, 8, std::vector<uint8_t>(64));
  for (int y = 0; y < 8; ++y) {
    for (int x = 0; x < 8; ++x) board.pixels[y * 8 + x] = (x + y) % 2 ? 255 : 0;
  }
  EXPECT_EQ(ResizeImage(board, 4, 4, 1).pixels, std::vector<uint8_t>(16, 128));
}

TEST(ResizeImageTest, GrowingInterpolatesBetweenPixelCentres) {
  // Output centres at input -0.25, 0.25, 0.75, 1.25: the ends clamp to the edges.
  EXPECT_EQ(ResizeImage(Grey(1, 2, {0, 100}), 1, 4, 1).pixels,
            (std::vector<uint8_t>{0, 25, 75, 100}));
  // Both axes at once, and one axis shrinking while the other grows.
  const Image square = ResizeImage(Grey(2, 2, {0, 100, 100, 200}), 4, 4, 1);
  EXPECT_EQ(square.pixels, (std::vector<uint8_t>{0, 25, 75, 100,     //
                                                 25, 50, 100, 125,   //
                                                 75, 100, 150, 175,  //
                                                 100, 125, 175, 200}));
  const Image mixed = ResizeImage(Grey(2, 4, {0, 20, 40, 60, 100, 120, 140, 160}), 4, 2, 1);
  EXPECT_EQ(mixed.pixels, (std::vector<uint8_t>{10, 50, 35, 75, 85, 125, 110, 150}));
}

TEST(ResizeImageTest, ConstantImagesStayConstant) {
  const Image flat{37, 53, 3, std::vector<uint8_t>(37 * 53 * 3, 200)};
  for (auto [h, w] : {std::pair{28, 28}, std::pair{100, 64}, std::pair{1, 1}}) {
    const Image out = ResizeImage(flat, h, w, 3);
    ASSERT_EQ(out.pixels.size(), static_cast<size_t>(h) * w * 3);
    EXPECT_EQ(out.pixels, std::vector<uint8_t>(out.pixels.size(), 200)) << h << "x" << w;
  }
}

TEST(ResizeImageTest, ConvertsChannels) {
  // RGB -> grey is the BT.601 luma: red 76.2, green 149.7, blue 29.1, white 255.
  const Image rgb{1, 4, 3, {255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 255}};
  EXPECT_EQ(ResizeImage(rgb, 1, 4, 1).pixels, (std::vector<uint8_t>{76, 150, 29, 255}));
  // Grey -> RGB repeats the value, also after resampling.
  EXPECT_EQ(ResizeImage(Grey(1, 2, {0, 100}), 1, 1, 3).pixels,
            (std::vector<uint8_t>{50, 50, 50}));
  // Alpha composites over black: opaque, half and fully transparent white.
  const Image rgba{1, 3, 4, {255, 255, 255, 255, 255, 255, 255, 128, 255, 255, 255, 0}};
  EXPECT_EQ(ResizeImage(rgba, 1, 3, 3).pixels,
            (std::vector<uint8_t>{255, 255, 255, 128, 128, 128, 0, 0, 0}));
  const Image grey_alpha{1, 2, 2, {200, 255, 200, 51}};
  EXPECT_EQ(ResizeImage(grey_alpha, 1, 2, 1).pixels, (std::vector<uint8_t>{200, 40}));
}

}  // namespace
}  // namespace modamba::data
