// Line charts as SVG and PNG, drawn by Modamba itself: one layout (axes,
// ticks, legend, series, shaded bands) over two canvases, an SVG writer and a
// raster drawn by Cairo (text in DejaVu Sans through fontconfig) and saved as PNG.
#ifndef MODAMBA_TOOLS_COMPARE_PLOT_H_
#define MODAMBA_TOOLS_COMPARE_PLOT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace modamba::plot {

struct Series {
  std::string label;
  std::vector<double> x, y;
  // Optional band drawn under the line (e.g. min and max over seeds).
  std::vector<double> y_low, y_high;
  uint32_t rgb = 0x1f77b4;
  bool dashed = false;
  // A marker (e.g. where MoM reaches the dense loss); x < 0: none.
  double marker_x = -1, marker_y = 0;
};

struct Chart {
  std::string title, x_label, y_label;
  bool log_x = false;
  // A horizontal reference line (e.g. the dense run's final loss); NaN: none.
  double reference_y = 0.0 / 0.0;
  std::string reference_label;
  std::vector<Series> series;
};

std::string RenderSvg(const Chart& chart, int width = 720, int height = 450);
absl::Status WritePng(const Chart& chart, const std::string& path, int width = 720,
                      int height = 450);

// "1.2e15"-style labels of a nice tick spacing.
std::vector<double> NiceTicks(double lo, double hi, int target);

}  // namespace modamba::plot

#endif  // MODAMBA_TOOLS_COMPARE_PLOT_H_
