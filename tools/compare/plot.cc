#include "tools/compare/plot.h"

#include <cairo/cairo.h>
#include <fontconfig/fontconfig.h>

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"

namespace modamba::plot {
namespace {

constexpr double kLeft = 78, kRight = 190, kTop = 34, kBottom = 52;
constexpr uint32_t kAxis = 0x333333, kGrid = 0xdddddd;
constexpr char kFontFamily[] = "DejaVu Sans";

// What a chart is drawn on.
class Canvas {
 public:
  virtual ~Canvas() = default;
  virtual void Line(double x0, double y0, double x1, double y1, uint32_t rgb, double width,
                    bool dashed) = 0;
  // A filled polygon at the given opacity.
  virtual void Fill(const std::vector<std::pair<double, double>>& points, uint32_t rgb,
                    double alpha) = 0;
  // anchor: -1 left, 0 centre, 1 right; y is the text's vertical middle.
  virtual void Text(double x, double y, const std::string& text, int anchor, uint32_t rgb) = 0;
};

std::string Hex(uint32_t rgb) { return absl::StrFormat("#%06x", rgb); }

std::string Escape(const std::string& s) {
  return absl::StrReplaceAll(s, {{"&", "&amp;"}, {"<", "&lt;"}, {">", "&gt;"}});
}

class SvgCanvas : public Canvas {
 public:
  void Line(double x0, double y0, double x1, double y1, uint32_t rgb, double width,
            bool dashed) override {
    absl::StrAppendFormat(&body_,
                          "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" "
                          "stroke-width=\"%.1f\"%s/>\n",
                          x0, y0, x1, y1, Hex(rgb), width,
                          dashed ? " stroke-dasharray=\"6,4\"" : "");
  }
  void Fill(const std::vector<std::pair<double, double>>& points, uint32_t rgb,
            double alpha) override {
    std::string pts;
    for (auto [x, y] : points) absl::StrAppendFormat(&pts, "%.1f,%.1f ", x, y);
    absl::StrAppendFormat(&body_, "<polygon points=\"%s\" fill=\"%s\" fill-opacity=\"%.2f\"/>\n",
                          pts, Hex(rgb), alpha);
  }
  void Text(double x, double y, const std::string& text, int anchor, uint32_t rgb) override {
    const char* a = anchor < 0 ? "start" : anchor > 0 ? "end" : "middle";
    absl::StrAppendFormat(&body_,
                          "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"%s\" dominant-baseline=\"middle\" "
                          "font-family=\"sans-serif\" font-size=\"12\" fill=\"%s\">%s</text>\n",
                          x, y, a, Hex(rgb), Escape(text));
  }
  std::string Finish(int w, int h) const {
    return absl::StrFormat(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\">\n"
        "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n%s</svg>\n",
        w, h, w, h, body_);
  }

 private:
  std::string body_;
};

// The raster canvas is Cairo: anti-aliased lines and fills, text in DejaVu Sans
// (Debian's fonts-dejavu-core) through fontconfig and FreeType, PNG output.
class CairoCanvas : public Canvas {
 public:
  CairoCanvas(int w, int h)
      : surface_(cairo_image_surface_create(CAIRO_FORMAT_RGB24, w, h)),
        cr_(cairo_create(surface_)) {
    cairo_set_source_rgb(cr_, 1, 1, 1);
    cairo_paint(cr_);
    cairo_select_font_face(cr_, kFontFamily, CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_NORMAL);
    cairo_set_font_size(cr_, 12);
  }
  ~CairoCanvas() override {
    cairo_destroy(cr_);
    cairo_surface_destroy(surface_);
  }

  void Line(double x0, double y0, double x1, double y1, uint32_t rgb, double width,
            bool dashed) override {
    const double dash[] = {6, 4};
    cairo_set_dash(cr_, dash, dashed ? 2 : 0, 0);
    cairo_set_line_width(cr_, width);
    SetColour(rgb, 1);
    cairo_move_to(cr_, x0, y0);
    cairo_line_to(cr_, x1, y1);
    cairo_stroke(cr_);
  }
  void Fill(const std::vector<std::pair<double, double>>& pts, uint32_t rgb,
            double alpha) override {
    if (pts.empty()) return;
    cairo_move_to(cr_, pts[0].first, pts[0].second);
    for (size_t i = 1; i < pts.size(); ++i) cairo_line_to(cr_, pts[i].first, pts[i].second);
    cairo_close_path(cr_);
    SetColour(rgb, alpha);
    cairo_fill(cr_);
  }
  void Text(double x, double y, const std::string& text, int anchor, uint32_t rgb) override {
    cairo_text_extents_t ext;
    cairo_text_extents(cr_, text.c_str(), &ext);
    const double width = ext.x_advance;
    const double left = x - (anchor < 0 ? 0 : anchor > 0 ? width : width / 2);
    cairo_font_extents_t font;
    cairo_font_extents(cr_, &font);
    SetColour(rgb, 1);
    cairo_move_to(cr_, left, y + (font.ascent - font.descent) / 2);  // y is the middle
    cairo_show_text(cr_, text.c_str());
  }
  absl::Status Save(const std::string& path) const {
    cairo_surface_flush(surface_);
    const cairo_status_t status = cairo_surface_write_to_png(surface_, path.c_str());
    if (status != CAIRO_STATUS_SUCCESS) {
      return absl::InternalError(
          absl::StrCat(path, ": cannot write PNG: ", cairo_status_to_string(status)));
    }
    return absl::OkStatus();
  }

 private:
  void SetColour(uint32_t rgb, double alpha) {
    cairo_set_source_rgba(cr_, ((rgb >> 16) & 255) / 255.0, ((rgb >> 8) & 255) / 255.0,
                          (rgb & 255) / 255.0, alpha);
  }

  cairo_surface_t* surface_;
  cairo_t* cr_;
};

// Cairo silently falls back to any font fontconfig has, and draws no text at
// all when it has none: refuse that instead of writing a chart without labels.
absl::Status CheckFontInstalled() {
  FcConfig* config = FcInitLoadConfigAndFonts();
  FcPattern* pattern = FcNameParse(reinterpret_cast<const FcChar8*>(kFontFamily));
  FcConfigSubstitute(config, pattern, FcMatchPattern);
  FcDefaultSubstitute(pattern);
  FcResult result;
  FcPattern* match = FcFontMatch(config, pattern, &result);
  FcChar8* family = nullptr;
  const bool found = match != nullptr &&
                     FcPatternGetString(match, FC_FAMILY, 0, &family) == FcResultMatch &&
                     std::string(reinterpret_cast<char*>(family)) == kFontFamily;
  if (match != nullptr) FcPatternDestroy(match);
  FcPatternDestroy(pattern);
  FcConfigDestroy(config);
  if (!found) {
    return absl::FailedPreconditionError(absl::StrCat(
        "fontconfig finds no \"", kFontFamily,
        "\" font for chart text (install Debian's fonts-dejavu-core; tools/setup.sh does)"));
  }
  return absl::OkStatus();
}

std::string TickLabel(double v) { return absl::StrFormat("%.2g", v); }

// Draws `chart` on `canvas` of w x h pixels.
void Layout(const Chart& chart, int w, int h, Canvas* canvas) {
  auto tx = [&](double x) { return chart.log_x ? std::log10(std::max(x, 1e-300)) : x; };
  double x_lo = INFINITY, x_hi = -INFINITY, y_lo = INFINITY, y_hi = -INFINITY;
  for (const Series& s : chart.series) {
    for (size_t i = 0; i < s.x.size(); ++i) {
      x_lo = std::min(x_lo, tx(s.x[i]));
      x_hi = std::max(x_hi, tx(s.x[i]));
      y_lo = std::min(y_lo, s.y[i]);
      y_hi = std::max(y_hi, s.y[i]);
      if (i < s.y_low.size()) y_lo = std::min(y_lo, s.y_low[i]);
      if (i < s.y_high.size()) y_hi = std::max(y_hi, s.y_high[i]);
    }
  }
  if (!std::isnan(chart.reference_y)) {
    y_lo = std::min(y_lo, chart.reference_y);
    y_hi = std::max(y_hi, chart.reference_y);
  }
  if (!(x_lo < x_hi)) {  // one x: centred
    x_lo -= 0.5;
    x_hi += 0.5;
  }
  if (!(y_lo < y_hi)) y_hi = y_lo + 1;
  const double pad = 0.05 * (y_hi - y_lo);
  y_lo -= pad;
  y_hi += pad;
  // The legend's column widens for long labels (about 7 px a character).
  size_t longest = chart.reference_label.size();
  for (const Series& s : chart.series) longest = std::max(longest, s.label.size());
  const double right = std::max(kRight, 48 + 7.0 * longest);
  const double pw = w - kLeft - right, ph = h - kTop - kBottom;
  auto px = [&](double x) { return kLeft + (tx(x) - x_lo) / (x_hi - x_lo) * pw; };
  auto py = [&](double y) { return kTop + (y_hi - y) / (y_hi - y_lo) * ph; };

  // Grid, ticks and labels.
  std::vector<double> xticks;
  if (chart.log_x) {
    for (double e = std::ceil(x_lo); e <= std::floor(x_hi); ++e) xticks.push_back(std::pow(10, e));
    if (xticks.size() < 2) {
      for (double v : NiceTicks(std::pow(10, x_lo), std::pow(10, x_hi), 5)) xticks.push_back(v);
    }
  } else {
    xticks = NiceTicks(x_lo, x_hi, 6);
  }
  double last_label_x = -1e9;
  for (double v : xticks) {
    if (tx(v) < x_lo - 1e-9 || tx(v) > x_hi + 1e-9) continue;
    canvas->Line(px(v), kTop, px(v), kTop + ph, kGrid, 1, false);
    if (px(v) - last_label_x < 64) continue;  // labels never overlap
    canvas->Text(px(v), kTop + ph + 14, TickLabel(v), 0, kAxis);
    last_label_x = px(v);
  }
  for (double v : NiceTicks(y_lo, y_hi, 6)) {
    canvas->Line(kLeft, py(v), kLeft + pw, py(v), kGrid, 1, false);
    canvas->Text(kLeft - 6, py(v), TickLabel(v), 1, kAxis);
  }
  canvas->Line(kLeft, kTop + ph, kLeft + pw, kTop + ph, kAxis, 1, false);
  canvas->Line(kLeft, kTop, kLeft, kTop + ph, kAxis, 1, false);
  canvas->Text(w / 2.0, 14, chart.title, 0, 0x000000);
  canvas->Text(kLeft + pw / 2, h - 14, chart.x_label, 0, kAxis);
  canvas->Text(8, kTop - 12, chart.y_label, -1, kAxis);

  if (!std::isnan(chart.reference_y)) {
    canvas->Line(kLeft, py(chart.reference_y), kLeft + pw, py(chart.reference_y), 0x888888, 1, true);
  }
  for (const Series& s : chart.series) {
    if (!s.y_low.empty() && s.y_low.size() == s.x.size()) {
      std::vector<std::pair<double, double>> band;
      for (size_t i = 0; i < s.x.size(); ++i) band.emplace_back(px(s.x[i]), py(s.y_high[i]));
      for (size_t i = s.x.size(); i-- > 0;) band.emplace_back(px(s.x[i]), py(s.y_low[i]));
      canvas->Fill(band, s.rgb, 0.18);
    }
    for (size_t i = 0; i + 1 < s.x.size(); ++i) {
      canvas->Line(px(s.x[i]), py(s.y[i]), px(s.x[i + 1]), py(s.y[i + 1]), s.rgb, 2, s.dashed);
    }
    if (s.x.size() == 1) {  // a lone point has no segment: a cross
      const double cx = px(s.x[0]), cy = py(s.y[0]);
      canvas->Line(cx - 4, cy - 4, cx + 4, cy + 4, s.rgb, 2, false);
      canvas->Line(cx - 4, cy + 4, cx + 4, cy - 4, s.rgb, 2, false);
    }
    if (s.marker_x >= 0) {
      const double mx = px(s.marker_x), my = py(s.marker_y);
      canvas->Line(mx - 5, my, mx, my - 5, s.rgb, 2, false);
      canvas->Line(mx, my - 5, mx + 5, my, s.rgb, 2, false);
      canvas->Line(mx + 5, my, mx, my + 5, s.rgb, 2, false);
      canvas->Line(mx, my + 5, mx - 5, my, s.rgb, 2, false);
    }
  }
  // Legend.
  double ly = kTop + 10;
  const double lx = w - right + 12;
  for (const Series& s : chart.series) {
    canvas->Line(lx, ly, lx + 22, ly, s.rgb, 2, s.dashed);
    canvas->Text(lx + 28, ly, s.label, -1, 0x000000);
    ly += 20;
  }
  if (!std::isnan(chart.reference_y)) {
    canvas->Line(lx, ly, lx + 22, ly, 0x888888, 1, true);
    canvas->Text(lx + 28, ly, chart.reference_label, -1, 0x000000);
  }
}

}  // namespace

std::vector<double> NiceTicks(double lo, double hi, int target) {
  const double span = hi - lo;
  if (!(span > 0)) return {lo};
  const double raw = span / std::max(1, target);
  const double mag = std::pow(10, std::floor(std::log10(raw)));
  double step = mag;
  for (double m : {1.0, 2.0, 2.5, 5.0, 10.0}) {
    if (m * mag >= raw) {
      step = m * mag;
      break;
    }
  }
  std::vector<double> ticks;
  for (double v = std::ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) {
    ticks.push_back(std::fabs(v) < step * 1e-9 ? 0 : v);
  }
  return ticks;
}

std::string RenderSvg(const Chart& chart, int width, int height) {
  SvgCanvas canvas;
  Layout(chart, width, height, &canvas);
  return canvas.Finish(width, height);
}

absl::Status WritePng(const Chart& chart, const std::string& path, int width, int height) {
  if (absl::Status font = CheckFontInstalled(); !font.ok()) return font;
  CairoCanvas canvas(width, height);
  Layout(chart, width, height, &canvas);
  return canvas.Save(path);
}

}  // namespace modamba::plot
