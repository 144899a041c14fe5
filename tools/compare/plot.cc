#include "tools/compare/plot.h"

#include <png.h>
#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"

namespace modamba::plot {
namespace {

constexpr double kLeft = 78, kRight = 190, kTop = 34, kBottom = 52;
constexpr uint32_t kAxis = 0x333333, kGrid = 0xdddddd;

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

// A PSF1 console font: 256 or 512 glyphs 8 pixels wide, with a Unicode table.
class PsfFont {
 public:
  static std::unique_ptr<PsfFont> Load(const std::string& path) {
    gzFile f = gzopen(path.c_str(), "rb");
    if (f == nullptr) return nullptr;
    std::string bytes;
    char buf[4096];
    int n;
    while ((n = gzread(f, buf, sizeof buf)) > 0) bytes.append(buf, n);
    gzclose(f);
    if (bytes.size() < 4 || uint8_t(bytes[0]) != 0x36 || uint8_t(bytes[1]) != 0x04) return nullptr;
    auto font = std::make_unique<PsfFont>();
    const int mode = uint8_t(bytes[2]), count = (mode & 1) ? 512 : 256;
    font->height_ = uint8_t(bytes[3]);
    if (bytes.size() < 4 + size_t(count) * font->height_) return nullptr;
    font->glyphs_ = bytes.substr(4, size_t(count) * font->height_);
    size_t pos = 4 + size_t(count) * font->height_;
    for (int g = 0; g < count && (mode & 2); ++g) {  // Unicode table: code points per glyph
      while (pos + 1 < bytes.size()) {
        uint16_t u = uint8_t(bytes[pos]) | (uint8_t(bytes[pos + 1]) << 8);
        pos += 2;
        if (u == 0xffff) break;
        if (u < 128 && !font->index_.count(u)) font->index_[u] = g;
      }
    }
    if (!(mode & 2)) {
      for (int c = 0; c < 128; ++c) font->index_[c] = c;
    }
    return font;
  }
  int height() const { return height_; }
  // Row `row` of the glyph of `c` (bit 7 is the leftmost pixel).
  uint8_t Row(char c, int row) const {
    auto it = index_.find(static_cast<unsigned char>(c));
    if (it == index_.end()) it = index_.find('?');
    if (it == index_.end()) return 0;
    return uint8_t(glyphs_[size_t(it->second) * height_ + row]);
  }

 private:
  int height_ = 16;
  std::string glyphs_;
  std::map<int, int> index_;
};

class RasterCanvas : public Canvas {
 public:
  RasterCanvas(int w, int h, const PsfFont* font) : w_(w), h_(h), font_(font), rgb_(w * h * 3, 255) {}

  void Line(double x0, double y0, double x1, double y1, uint32_t rgb, double width,
            bool dashed) override {
    const double len = std::hypot(x1 - x0, y1 - y0);
    const int steps = std::max(1, static_cast<int>(std::ceil(len * 2)));
    const int r = std::max(0, static_cast<int>(std::round(width / 2 - 0.25)));
    for (int i = 0; i <= steps; ++i) {
      const double t = double(i) / steps;
      if (dashed && std::fmod(t * len, 10.0) > 6.0) continue;
      const int cx = int(std::lround(x0 + t * (x1 - x0))), cy = int(std::lround(y0 + t * (y1 - y0)));
      for (int dy = -r; dy <= r; ++dy)
        for (int dx = -r; dx <= r; ++dx) Blend(cx + dx, cy + dy, rgb, 1.0);
    }
  }
  void Fill(const std::vector<std::pair<double, double>>& pts, uint32_t rgb,
            double alpha) override {
    // Even-odd scanline fill.
    for (int y = 0; y < h_; ++y) {
      std::vector<double> xs;
      const double sy = y + 0.5;
      for (size_t i = 0; i < pts.size(); ++i) {
        auto [ax, ay] = pts[i];
        auto [bx, by] = pts[(i + 1) % pts.size()];
        if ((ay <= sy) != (by <= sy)) xs.push_back(ax + (sy - ay) / (by - ay) * (bx - ax));
      }
      std::sort(xs.begin(), xs.end());
      for (size_t i = 0; i + 1 < xs.size(); i += 2) {
        for (int x = int(std::ceil(xs[i] - 0.5)); x <= int(std::floor(xs[i + 1] - 0.5)); ++x) {
          Blend(x, y, rgb, alpha);
        }
      }
    }
  }
  void Text(double x, double y, const std::string& text, int anchor, uint32_t rgb) override {
    const int width = 8 * static_cast<int>(text.size()), h = font_->height();
    int left = int(x) - (anchor < 0 ? 0 : anchor > 0 ? width : width / 2);
    const int top = int(y) - h / 2;
    for (char c : text) {
      for (int row = 0; row < h; ++row) {
        const uint8_t bits = font_->Row(c, row);
        for (int col = 0; col < 8; ++col) {
          if (bits & (0x80 >> col)) Blend(left + col, top + row, rgb, 1.0);
        }
      }
      left += 8;
    }
  }
  absl::Status Save(const std::string& path) const {
    FILE* f = std::fopen(path.c_str(), "wb");
    if (f == nullptr) return absl::InternalError(absl::StrCat(path, ": cannot open for writing"));
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
    png_infop info = png_create_info_struct(png);
    if (setjmp(png_jmpbuf(png))) {
      png_destroy_write_struct(&png, &info);
      std::fclose(f);
      return absl::InternalError(absl::StrCat(path, ": PNG encoding failed"));
    }
    png_init_io(png, f);
    png_set_IHDR(png, info, w_, h_, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    for (int y = 0; y < h_; ++y) {
      png_write_row(png, const_cast<png_bytep>(&rgb_[size_t(y) * w_ * 3]));
    }
    png_write_end(png, nullptr);
    png_destroy_write_struct(&png, &info);
    return std::fclose(f) == 0 ? absl::OkStatus()
                               : absl::InternalError(absl::StrCat(path, ": write failed"));
  }

 private:
  void Blend(int x, int y, uint32_t rgb, double alpha) {
    if (x < 0 || y < 0 || x >= w_ || y >= h_) return;
    uint8_t* p = &rgb_[(size_t(y) * w_ + x) * 3];
    const int c[3] = {int(rgb >> 16) & 255, int(rgb >> 8) & 255, int(rgb) & 255};
    for (int k = 0; k < 3; ++k) p[k] = uint8_t(std::lround(p[k] * (1 - alpha) + c[k] * alpha));
  }

  int w_, h_;
  const PsfFont* font_;
  std::vector<uint8_t> rgb_;
};

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
  if (!(x_lo < x_hi)) x_hi = x_lo + 1;
  if (!(y_lo < y_hi)) y_hi = y_lo + 1;
  const double pad = 0.05 * (y_hi - y_lo);
  y_lo -= pad;
  y_hi += pad;
  const double pw = w - kLeft - kRight, ph = h - kTop - kBottom;
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
  const double lx = w - kRight + 12;
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
  const char* env = std::getenv("MODAMBA_FONT");
  const std::string font_path = env ? env : "/usr/share/consolefonts/Lat15-Fixed14.psf.gz";
  std::unique_ptr<PsfFont> font = PsfFont::Load(font_path);
  if (font == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat(
        font_path, ": no PSF console font (install Debian's kbd package or set MODAMBA_FONT)"));
  }
  RasterCanvas canvas(width, height, font.get());
  Layout(chart, width, height, &canvas);
  return canvas.Save(path);
}

}  // namespace modamba::plot
