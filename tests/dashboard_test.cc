// The dashboard in headless Chromium: the page loads from the coordinator,
// lists the job and draws its loss curves with nice ticks and the legend
// inside the plot, shows the evaluator's image grids and plays its speech
// (WAV served by the coordinator). The DOM is checked, and a screenshot,
// kept under $TEST_UNDECLARED_OUTPUTS_DIR, is checked for drawn curves.
#include <png.h>

#include <cmath>
#include <cstdlib>
#include <regex>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/file_util.h"
#include "gtest/gtest.h"
#include "tests/cluster.h"

namespace modamba {
namespace {

constexpr char kChromium[] = "/usr/bin/chromium";

// Runs headless Chromium on `url` with `what` ("--dump-dom" or
// "--screenshot=FILE"); stdout goes to `out`.
int RunChromium(const std::string& profile, const std::string& what, const std::string& url,
                const std::string& out) {
  const std::string command =
      absl::StrCat("timeout 90 ", kChromium,
                   " --headless --no-sandbox --disable-gpu --disable-quic --no-first-run"
                   " --disable-background-networking --disable-component-update --disable-sync"
                   " --disable-dev-shm-usage --hide-scrollbars --window-size=1300,1500"
                   " --virtual-time-budget=8000 --user-data-dir=",
                   profile, " ", what, " '", url, "' > ", out, " 2>", out, ".stderr");
  return system(command.c_str());
}

struct Box {
  double x = 0, y = 0, w = 0, h = 0;
};

// The first <rect class="CLASS" x= y= width= height=> in `svg`.
bool FindBox(const std::string& svg, const std::string& cls, Box* box) {
  std::smatch m;
  const std::regex re("<rect class=\"" + cls +
                      "\" x=\"([-0-9.]+)\" y=\"([-0-9.]+)\" width=\"([-0-9.]+)\" height=\"([-0-9.]+)\"");
  if (!std::regex_search(svg, m, re)) return false;
  *box = {std::stod(m[1]), std::stod(m[2]), std::stod(m[3]), std::stod(m[4])};
  return true;
}

// The <svg id="ID" ...>...</svg> element of the DOM.
std::string Chart(const std::string& dom, const std::string& id) {
  const size_t begin = dom.find("<svg id=\"" + id + "\"");
  if (begin == std::string::npos) return "";
  return dom.substr(begin, dom.find("</svg>", begin) - begin);
}

// The y axis' tick labels (right-aligned ticks), top to bottom.
std::vector<std::string> YTicks(const std::string& svg) {
  std::vector<std::string> ticks;
  const std::regex re("text-anchor=\"end\" class=\"tick\">([^<]*)<");
  for (std::sregex_iterator it(svg.begin(), svg.end(), re), end; it != end; ++it) {
    ticks.push_back((*it)[1]);
  }
  return ticks;
}

// Pixels of the screenshot close to `rgb`.
int CountColour(const std::string& png_path, uint32_t rgb) {
  png_image image{};
  image.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_file(&image, png_path.c_str())) return -1;
  image.format = PNG_FORMAT_RGB;
  std::vector<uint8_t> pixels(PNG_IMAGE_SIZE(image));
  if (!png_image_finish_read(&image, nullptr, pixels.data(), 0, nullptr)) return -1;
  int n = 0;
  for (size_t i = 0; i + 2 < pixels.size(); i += 3) {
    n += std::abs(pixels[i] - int(rgb >> 16)) < 24 && std::abs(pixels[i + 1] - int(rgb >> 8 & 255)) < 24 &&
         std::abs(pixels[i + 2] - int(rgb & 255)) < 24;
  }
  return n;
}

TEST(DashboardTest, ShowsTheJobAndDrawsItsLossCurves) {
  if (!FileExists(kChromium)) GTEST_SKIP() << "no chromium (tools/setup.sh installs it)";
  auto started = Cluster::Start();
  ASSERT_TRUE(started.ok()) << started.status();
  Cluster& cluster = **started;
  const std::string dataset = cluster.MakeDataset("dash", "step_ms=5\n");
  auto job = cluster.Submit(Cluster::Spec("dashboard-demo", dataset, 60, 2, 1, 20));
  ASSERT_TRUE(job.ok()) << job.status();
  auto done = cluster.WaitFinished(job->id());
  ASSERT_TRUE(done.ok()) << done.status();
  ASSERT_EQ(done->state(), v1::JOB_SUCCEEDED) << done->reason();

  const std::string url = absl::StrCat("http://127.0.0.1:", cluster.http_port(),
                                       "/?token=", cluster.token(), "&job=", job->id());
  const std::string dom_file = cluster.root() + "/dom.html";
  ASSERT_EQ(RunChromium(cluster.root() + "/profile-dom", "--dump-dom", url, dom_file), 0)
      << ReadFile(dom_file + ".stderr").value_or("");
  const std::string dom = ReadFile(dom_file).value_or("");
  // The job row, its state, the charts and one drawn series per modality and kind.
  EXPECT_TRUE(absl::StrContains(dom, absl::StrCat("data-job-id=\"", job->id(), "\""))) << dom;
  EXPECT_TRUE(absl::StrContains(dom, "dashboard-demo"));
  EXPECT_TRUE(absl::StrContains(dom, "SUCCEEDED"));
  for (const char* chart : {"chart-loss-step", "chart-loss-flops", "chart-eval"}) {
    EXPECT_TRUE(absl::StrContains(dom, absl::StrCat("id=\"", chart, "\""))) << chart;
  }
  for (const char* series : {"train/text", "train/image", "train/speech", "val/text", "eval/speech",
                             "eval/digit_accuracy"}) {
    EXPECT_TRUE(absl::StrContains(dom, absl::StrCat("data-series=\"", series, "\""))) << series;
  }
  EXPECT_TRUE(absl::StrContains(dom, "<path d=\"M")) << "no curve was drawn";
  EXPECT_FALSE(absl::StrContains(dom, "HTTP 401"));

  for (const char* id : {"chart-loss-step", "chart-loss-flops", "chart-eval"}) {
    const std::string svg = Chart(dom, id);
    // The legend lies inside the plot area.
    Box area, legend;
    ASSERT_TRUE(FindBox(svg, "plot-area", &area)) << id << ": " << svg;
    ASSERT_TRUE(FindBox(svg, "legend-box", &legend)) << id << ": " << svg;
    EXPECT_GE(legend.x, area.x) << id;
    EXPECT_GE(legend.y, area.y) << id;
    EXPECT_LE(legend.x + legend.w, area.x + area.w) << id;
    EXPECT_LE(legend.y + legend.h, area.y + area.h) << id;
    EXPECT_GT(legend.w, 20) << id;
    // Ticks step by 1, 2, 2.5 or 5 times a power of ten, labelled exactly.
    const std::vector<std::string> ticks = YTicks(svg);
    ASSERT_GE(ticks.size(), 3u) << id << ": " << svg;
    const double step = std::stod(ticks[1]) - std::stod(ticks[0]);
    const double mantissa = step / std::pow(10, std::floor(std::log10(step)));
    EXPECT_TRUE(std::fabs(mantissa - 1) < 1e-6 || std::fabs(mantissa - 2) < 1e-6 ||
                std::fabs(mantissa - 2.5) < 1e-6 || std::fabs(mantissa - 5) < 1e-6)
        << id << ": step " << step;
    for (size_t i = 0; i < ticks.size(); ++i) {
      EXPECT_LE(ticks[i].size(), 5u) << id << ": " << ticks[i];
      EXPECT_NEAR(std::stod(ticks[i]), std::stod(ticks[0]) + i * step, step * 1e-6) << id;
    }
  }
  // The evaluator's image grid, and its speech in a player that loaded it.
  EXPECT_TRUE(absl::StrContains(dom, "<img src=\"data:image/png;base64,")) << dom;
  std::smatch audio;
  ASSERT_TRUE(std::regex_search(dom, audio, std::regex("<audio[^>]*>"))) << dom;
  EXPECT_TRUE(absl::StrContains(audio.str(), "/speech/")) << audio.str();
  EXPECT_TRUE(absl::StrContains(audio.str(), "data-duration=\"0.40\"")) << audio.str();
  EXPECT_TRUE(absl::StrContains(dom, "seven · 0.40 s")) << dom;

  const char* outputs = std::getenv("TEST_UNDECLARED_OUTPUTS_DIR");
  const std::string png =
      absl::StrCat(outputs != nullptr ? outputs : cluster.root().c_str(), "/dashboard.png");
  ASSERT_EQ(RunChromium(cluster.root() + "/profile-shot", "--screenshot=" + png, url,
                        cluster.root() + "/shot.txt"),
            0)
      << ReadFile(cluster.root() + "/shot.txt.stderr").value_or("");
  auto image = ReadFile(png);
  ASSERT_TRUE(image.ok()) << image.status();
  EXPECT_EQ(image->substr(0, 8), "\x89PNG\r\n\x1a\n");
  EXPECT_GT(image->size(), 20000u);
  // The text curves (and their legend swatches) are on screen.
  EXPECT_GT(CountColour(png, 0x1f77b4), 300);
}

}  // namespace
}  // namespace modamba
