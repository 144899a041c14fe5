#include "core/data/audio.h"

#include <sndfile.h>

#include <cmath>
#include <cstring>
#include <filesystem>

#include "core/data/test_util.h"
#include "glog/logging.h"
#include "gtest/gtest.h"

namespace modamba::data {
namespace {

using testing::CopyDamaged;
using testing::ScratchDir;

std::vector<float> Chirp(int n, int sample_rate) {
  std::vector<float> s(n);
  for (int i = 0; i < n; ++i) {
    const double t = static_cast<double>(i) / sample_rate;
    s[i] = static_cast<float>(0.5 * std::sin(2 * M_PI * (200 + 800 * t) * t));
  }
  return s;
}

void WriteFlac(const std::string& path, const std::vector<float>& samples, int channels = 1) {
  SF_INFO info;
  std::memset(&info, 0, sizeof(info));
  info.samplerate = 8000;
  info.channels = channels;
  info.format = SF_FORMAT_FLAC | SF_FORMAT_PCM_16;
  SNDFILE* f = sf_open(path.c_str(), SFM_WRITE, &info);
  ASSERT_NE(f, nullptr) << sf_strerror(nullptr);
  ASSERT_EQ(sf_writef_float(f, samples.data(), samples.size() / channels),
            static_cast<sf_count_t>(samples.size() / channels));
  sf_close(f);
}

// Mean absolute difference of two log-mel spectrograms over their common frames.
double LogMelDistance(const std::vector<float>& a, const std::vector<float>& b) {
  const size_t n = std::min(a.size(), b.size());
  double d = 0;
  for (size_t i = 0; i < n; ++i) d += std::fabs(a[i] - b[i]);
  return d / n;
}

TEST(AudioTest, ConvolveMatchesTheDirectSum) {
  std::vector<float> a(300), b(77);
  for (size_t i = 0; i < a.size(); ++i) a[i] = std::sin(0.1 * i) + 0.01f * i;
  for (size_t i = 0; i < b.size(); ++i) b[i] = std::exp(-0.05 * i) * ((i % 3) - 1.0);
  const std::vector<float> c = Convolve(a, b);
  ASSERT_EQ(c.size(), a.size() + b.size() - 1);
  for (size_t n = 0; n < c.size(); ++n) {
    double direct = 0;
    for (size_t k = 0; k < b.size(); ++k) {
      if (n >= k && n - k < a.size()) direct += double{a[n - k]} * b[k];
    }
    EXPECT_NEAR(c[n], direct, 1e-4) << n;
  }
  EXPECT_TRUE(Convolve({}, b).empty());
}

TEST(AudioTest, WavRoundTrip) {
  const std::string dir = ScratchDir("audio_wav");
  Audio audio{8000, Chirp(4321, 8000)};
  ASSERT_TRUE(WriteWavFile(dir + "/a.wav", audio).ok());
  absl::StatusOr<Audio> back = ReadAudioFile(dir + "/a.wav");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->sample_rate, 8000);
  ASSERT_EQ(back->samples.size(), audio.samples.size());
  for (size_t i = 0; i < audio.samples.size(); ++i) {
    ASSERT_NEAR(back->samples[i], audio.samples[i], 1.0 / 32768 + 1e-6);
  }
}

TEST(AudioTest, FlacErrorsNameTheFile) {
  const std::string dir = ScratchDir("audio_flac");
  WriteFlac(dir + "/good.flac", Chirp(16000, 8000));
  absl::StatusOr<Audio> good = ReadAudioFile(dir + "/good.flac");
  ASSERT_TRUE(good.ok()) << good.status();
  EXPECT_EQ(good->samples.size(), 16000u);

  const auto size = static_cast<long>(std::filesystem::file_size(dir + "/good.flac"));
  CopyDamaged(dir + "/good.flac", dir + "/truncated.flac", size / 2);
  absl::StatusOr<Audio> truncated = ReadAudioFile(dir + "/truncated.flac");
  ASSERT_FALSE(truncated.ok());
  EXPECT_NE(truncated.status().message().find(dir + "/truncated.flac"), std::string::npos)
      << truncated.status();

  CopyDamaged(dir + "/good.flac", dir + "/header.flac", 20);
  absl::StatusOr<Audio> header = ReadAudioFile(dir + "/header.flac");
  ASSERT_FALSE(header.ok());
  EXPECT_NE(header.status().message().find(dir + "/header.flac"), std::string::npos);

  CopyDamaged(dir + "/good.flac", dir + "/corrupt.flac", -1, size / 2);
  absl::StatusOr<Audio> corrupt = ReadAudioFile(dir + "/corrupt.flac");
  ASSERT_FALSE(corrupt.ok());
  EXPECT_NE(corrupt.status().message().find(dir + "/corrupt.flac"), std::string::npos)
      << corrupt.status();

  WriteFlac(dir + "/stereo.flac", Chirp(1000, 8000), 2);
  absl::StatusOr<Audio> stereo = ReadAudioFile(dir + "/stereo.flac");
  ASSERT_FALSE(stereo.ok());
  EXPECT_NE(stereo.status().message().find("mono"), std::string::npos);
}

TEST(AudioTest, FramesFollowTheHop) {
  const MelAnalyzer mel{MelConfig()};
  EXPECT_EQ(mel.NumFrames(8000), 100);
  EXPECT_EQ(mel.NumFrames(8039), 100);
  EXPECT_EQ(mel.NumFrames(8040), 101);
  EXPECT_EQ(mel.NumFrames(10), 1);
  EXPECT_EQ(mel.LogMel(Chirp(8000, 8000)).size(), 100u * 40);
}

TEST(AudioTest, GriffinLimKeepsDurationAndSpectrum) {
  const MelAnalyzer mel{MelConfig()};
  const std::vector<float> signal = Chirp(9876, 8000);
  const std::vector<float> log_mel = mel.LogMel(signal);
  const int frames = static_cast<int>(log_mel.size() / 40);
  const std::vector<float> out = mel.GriffinLim(log_mel.data(), frames, 32, 1);
  EXPECT_NEAR(static_cast<double>(out.size()) / signal.size(), 1.0, 0.01);
  EXPECT_LT(LogMelDistance(mel.LogMel(out), log_mel), 0.5);
  EXPECT_EQ(out, mel.GriffinLim(log_mel.data(), frames, 32, 1));  // deterministic
}

TEST(AudioTest, GriffinLimDurationOnRecordings) {
  const std::string raw = testing::RawDataDirOrEmpty();
  if (raw.empty()) GTEST_SKIP() << "raw data not found";
  const MelAnalyzer mel{MelConfig()};
  std::vector<std::string> files;
  for (int i = 1; i <= 3; ++i) {
    files.push_back(raw + "/cathy/recordings/arctic_a000" + std::to_string(i) + ".flac");
  }
  for (const char* name : {"0_george_0", "3_jackson_7", "7_nicolas_12", "9_theo_30"}) {
    files.push_back(raw + "/fsdd/recordings/" + name + ".flac");
  }
  for (const std::string& file : files) {
    absl::StatusOr<Audio> audio = ReadAudioFile(file);
    ASSERT_TRUE(audio.ok()) << audio.status();
    const std::vector<float> log_mel = mel.LogMel(audio->samples);
    const int frames = static_cast<int>(log_mel.size() / 40);
    const std::vector<float> out = mel.GriffinLim(log_mel.data(), frames, 32, 0);
    const double ratio = static_cast<double>(out.size()) / audio->samples.size();
    const double distance = LogMelDistance(mel.LogMel(out), log_mel);
    LOG(INFO) << file << ": " << audio->seconds() << " s, Griffin-Lim duration ratio " << ratio
              << ", log-mel distance " << distance;
    // Durations agree within hop / 2 = 5 ms: within 1% for clips of 0.5 s and more.
    if (audio->seconds() >= 0.5) {
      EXPECT_NEAR(ratio, 1.0, 0.01) << file;
    }
    EXPECT_NEAR(ratio, 1.0, 0.005 / audio->seconds() + 1e-9) << file;
    EXPECT_LT(distance, 1.0) << file;
  }
}

}  // namespace
}  // namespace modamba::data
