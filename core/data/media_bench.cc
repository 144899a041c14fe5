// Throughput of reading users' media: image decoding and resizing, audio
// decoding and resampling, VQ encoding, on fixtures written to a scratch
// directory. Median of repeated runs, one thread, printed as a table.
//
//   bazel run -c opt //core/data:media_bench -- --repeats=20
#include <sndfile.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "core/data/audio.h"
#include "core/data/image_io.h"
#include "core/data/image_tokenizer.h"
#include "core/data/png_io.h"
#include "core/data/test_util.h"
#include "core/rng.h"
#include "glog/logging.h"

ABSL_FLAG(int, repeats, 10, "timed runs of each case (after one warm-up run)");

namespace modamba::data {
namespace {

double MedianMs(const std::function<void()>& run) {
  run();
  std::vector<double> ms;
  for (int i = 0; i < absl::GetFlag(FLAGS_repeats); ++i) {
    const auto start = std::chrono::steady_clock::now();
    run();
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() -
                                                           start).count());
  }
  std::nth_element(ms.begin(), ms.begin() + ms.size() / 2, ms.end());
  return ms[ms.size() / 2];
}

// `units` of work took `ms`; the rate is printed per second.
void Row(const char* what, const char* unit, double units, double ms) {
  std::printf("| %-44s | %9.3f | %9.1f %-10s |\n", what, ms, units / ms * 1000, unit);
}

void WriteSound(const std::string& path, int rate, int channels, int format, int seconds) {
  SF_INFO info;
  std::memset(&info, 0, sizeof(info));
  info.samplerate = rate;
  info.channels = channels;
  info.format = format;
  std::vector<float> s(static_cast<size_t>(rate) * seconds * channels);
  for (size_t i = 0; i < s.size(); ++i) {
    s[i] = static_cast<float>(0.3 * std::sin(2 * M_PI * 440.0 * (i / channels) / rate));
  }
  SNDFILE* f = sf_open(path.c_str(), SFM_WRITE, &info);
  CHECK(f != nullptr) << sf_strerror(nullptr);
  sf_writef_float(f, s.data(), s.size() / channels);
  sf_close(f);
}

void Run() {
  const std::string dir = testing::ScratchDir("media_bench");
  // A 1024x768 photo-like RGB image: smooth gradients plus a little noise.
  constexpr int kWidth = 1024, kHeight = 768;
  std::vector<uint8_t> photo(kWidth * kHeight * 3);
  Rng rng(1);
  for (int y = 0; y < kHeight; ++y) {
    for (int x = 0; x < kWidth; ++x) {
      for (int c = 0; c < 3; ++c) {
        const double v = 127 + 100 * std::sin(x * 0.01 * (c + 1)) * std::cos(y * 0.013) +
                         rng.Uniform(-8, 8);
        photo[(y * kWidth + x) * 3 + c] = static_cast<uint8_t>(std::clamp(v, 0.0, 255.0));
      }
    }
  }
  CHECK(WritePng(dir + "/photo.png", kWidth, kHeight, 3, photo.data()).ok());
  testing::WriteJpeg(dir + "/photo.jpg", kWidth, kHeight, 3, photo, false, 90);
  WriteSound(dir + "/44k_stereo.flac", 44100, 2, SF_FORMAT_FLAC | SF_FORMAT_PCM_16, 10);
  WriteSound(dir + "/48k_stereo.ogg", 48000, 2, SF_FORMAT_OGG | SF_FORMAT_VORBIS, 10);
  WriteSound(dir + "/8k_mono.flac", 8000, 1, SF_FORMAT_FLAC | SF_FORMAT_PCM_16, 10);

  std::printf("| %-44s | %9s | %-20s |\n", "case", "ms", "throughput");
  std::printf("|%s|%s|%s|\n", std::string(46, '-').c_str(), std::string(11, '-').c_str(),
              std::string(22, '-').c_str());
  const double megapixels = kWidth * kHeight / 1e6;
  for (const char* file : {"photo.png", "photo.jpg"}) {
    const std::string path = dir + "/" + file;
    const double ms = MedianMs([&] { CHECK(ReadImage(path).ok()); });
    Row((std::string("ReadImage 1024x768 RGB ") + file).c_str(), "Mpx/s", megapixels, ms);
  }
  const Image image = *ReadImage(dir + "/photo.png");
  for (auto [h, w, c] : {std::tuple{28, 28, 1}, std::tuple{64, 64, 3}, std::tuple{256, 256, 3},
                         std::tuple{2048, 1536, 3}}) {
    const double ms = MedianMs([&] { ResizeImage(image, h, w, c); });
    const std::string what = "ResizeImage 1024x768x3 -> " + std::to_string(h) + "x" +
                             std::to_string(w) + "x" + std::to_string(c);
    Row(what.c_str(), "images/s", 1, ms);
  }
  for (auto [file, what] :
       {std::pair{"44k_stereo.flac", "ReadAudio 10 s 44.1 kHz stereo FLAC -> 8 kHz"},
        std::pair{"48k_stereo.ogg", "ReadAudio 10 s 48 kHz stereo OGG -> 8 kHz"},
        std::pair{"8k_mono.flac", "ReadAudio 10 s 8 kHz mono FLAC (as is)"}}) {
    const std::string path = dir + "/" + file;
    const double ms = MedianMs([&] { CHECK(ReadAudio(path, 8000).ok()); });
    Row(what, "x realtime", 10, ms);
  }
  // VQ encoding with K = 512 of 64x64 RGB images (256 patches of 48 values).
  const ImageShape shape{64, 64, 3};
  constexpr int kImages = 256;
  std::vector<uint8_t> images(kImages * shape.pixels());
  for (uint8_t& p : images) p = static_cast<uint8_t>(rng.Below(256));
  ImageVqOptions options;
  options.k = 512;
  options.iterations = 1;
  options.max_patches = 4096;
  const ImageVq vq = *ImageVq::Train(images.data(), kImages, shape, options);
  const double ms = MedianMs([&] { vq.Encode(images.data(), kImages); });
  Row("ImageVq::Encode K=512, 256 images 64x64x3", "images/s", kImages, ms);
}

}  // namespace
}  // namespace modamba::data

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  modamba::data::Run();
  return 0;
}
