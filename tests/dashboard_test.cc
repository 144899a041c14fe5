// The dashboard in headless Chromium: the page loads from the coordinator,
// lists the job and draws its loss curves. The DOM is checked and a
// screenshot is kept under $TEST_UNDECLARED_OUTPUTS_DIR.
#include <cstdlib>
#include <string>

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
}

}  // namespace
}  // namespace modamba
