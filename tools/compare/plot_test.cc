#include "tools/compare/plot.h"

#include <cairo/cairo.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace modamba::plot {
namespace {

Chart TwoSeries(const std::string& title) {
  Chart chart;
  chart.title = title;
  chart.x_label = "FLOPs";
  chart.y_label = "loss";
  chart.series.push_back({"dense", {1, 2, 3}, {3, 2, 1.5}});
  chart.series.push_back({"MoM", {1, 2, 3}, {2.8, 1.8, 1.2}});
  chart.series.back().rgb = 0xd62728;
  return chart;
}

// Pixels in [x0, x1) x [y0, y1) that are neither white nor pure black, and the
// darkest grey among them: anti-aliased glyphs have both.
struct Ink {
  int grey_pixels = 0;
  int darkest = 255;
};

Ink InkIn(const std::string& png, int x0, int y0, int x1, int y1) {
  cairo_surface_t* s = cairo_image_surface_create_from_png(png.c_str());
  EXPECT_EQ(cairo_surface_status(s), CAIRO_STATUS_SUCCESS) << png;
  Ink ink;
  const unsigned char* data = cairo_image_surface_get_data(s);
  const int stride = cairo_image_surface_get_stride(s);
  for (int y = y0; y < y1; ++y) {
    for (int x = x0; x < x1; ++x) {
      const uint32_t px = *reinterpret_cast<const uint32_t*>(data + y * stride + x * 4);
      const int g = (((px >> 16) & 255) + ((px >> 8) & 255) + (px & 255)) / 3;
      if (g < 250 && g > 5) ++ink.grey_pixels;
      ink.darkest = std::min(ink.darkest, g);
    }
  }
  cairo_surface_destroy(s);
  return ink;
}

TEST(Plot, PngDrawsTextWithARealFont) {
  const std::string dir = std::getenv("TEST_TMPDIR");
  const std::string with = dir + "/titled.png", without = dir + "/untitled.png";
  ASSERT_TRUE(WritePng(TwoSeries("Validation loss of every run"), with).ok());
  ASSERT_TRUE(WritePng(TwoSeries(""), without).ok());
  // The title band (the top 24 rows, centred) holds anti-aliased text only when titled.
  const Ink titled = InkIn(with, 200, 0, 520, 24), untitled = InkIn(without, 200, 0, 520, 24);
  EXPECT_GT(titled.grey_pixels, 40);
  EXPECT_LT(titled.darkest, 100);
  EXPECT_EQ(untitled.grey_pixels, 0);
  // The legend labels are drawn to the right of the plot.
  EXPECT_GT(InkIn(with, 560, 34, 720, 80).grey_pixels, 20);
}

TEST(Plot, SvgKeepsTheSameLayout) {
  const std::string svg = RenderSvg(TwoSeries("t"));
  EXPECT_NE(svg.find(">dense</text>"), std::string::npos);
  EXPECT_NE(svg.find(">MoM</text>"), std::string::npos);
  EXPECT_NE(svg.find("stroke=\"#d62728\""), std::string::npos);
}

}  // namespace
}  // namespace modamba::plot
