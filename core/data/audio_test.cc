#include "core/data/audio.h"

#include <sndfile.h>

#include <cmath>
#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "core/data/test_util.h"
#include "core/file_util.h"
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

// `samples` interleaved.
void WriteFlac(const std::string& path, const std::vector<float>& samples, int channels = 1,
               int rate = 8000, int format = SF_FORMAT_FLAC | SF_FORMAT_PCM_16) {
  SF_INFO info;
  std::memset(&info, 0, sizeof(info));
  info.samplerate = rate;
  info.channels = channels;
  info.format = format;
  SNDFILE* f = sf_open(path.c_str(), SFM_WRITE, &info);
  ASSERT_NE(f, nullptr) << sf_strerror(nullptr);
  ASSERT_EQ(sf_writef_float(f, samples.data(), samples.size() / channels),
            static_cast<sf_count_t>(samples.size() / channels));
  sf_close(f);
}

std::vector<float> Sine(double hz, double amplitude, int rate, int n) {
  std::vector<float> s(n);
  for (int i = 0; i < n; ++i) {
    s[i] = static_cast<float>(amplitude * std::sin(2 * M_PI * hz * i / rate));
  }
  return s;
}

// RMS over the middle 80% of a signal (away from the resampler's edges).
double MiddleRms(const std::vector<float>& s) {
  double sum = 0;
  const size_t begin = s.size() / 10, end = s.size() - s.size() / 10;
  for (size_t i = begin; i < end; ++i) sum += double{s[i]} * s[i];
  return std::sqrt(sum / (end - begin));
}

// The frequency, in steps of 10 Hz below rate / 2, with the most energy.
double PeakFrequency(const std::vector<float>& s, int rate) {
  double best = 0, best_power = -1;
  for (double hz = 10; hz < rate / 2; hz += 10) {
    double re = 0, im = 0;
    for (size_t i = 0; i < s.size(); ++i) {
      re += s[i] * std::cos(2 * M_PI * hz * i / rate);
      im += s[i] * std::sin(2 * M_PI * hz * i / rate);
    }
    if (re * re + im * im > best_power) {
      best_power = re * re + im * im;
      best = hz;
    }
  }
  return best;
}

// Mean absolute difference of two log-mel spectrograms over their common frames.
double LogMelDistance(const std::vector<float>& a, const std::vector<float>& b) {
  const size_t n = std::min(a.size(), b.size());
  double d = 0;
  for (size_t i = 0; i < n; ++i) d += std::fabs(a[i] - b[i]);
  return d / n;
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

// 1.5 s of a 1 kHz tone at 44.1 kHz, 0.6 loud on the left and 0.2 on the
// right: mono at 8 kHz is the same tone 0.4 loud.
TEST(ReadAudioTest, StereoAt44kBecomesMonoAt8k) {
  const std::string dir = ScratchDir("read_audio_44k");
  constexpr int kFrames = 66150;
  const std::vector<float> left = Sine(1000, 0.6, 44100, kFrames);
  const std::vector<float> right = Sine(1000, 0.2, 44100, kFrames);
  std::vector<float> stereo;
  for (int i = 0; i < kFrames; ++i) stereo.insert(stereo.end(), {left[i], right[i]});
  const std::vector<float> expected = Sine(1000, 0.4, 8000, 12000);
  struct Case {
    const char* file;
    int format;
    double tolerance;  // RMS difference from the expected tone
  };
  for (const Case& c : {Case{"tone.wav", SF_FORMAT_WAV | SF_FORMAT_PCM_16, 1e-4},
                        Case{"tone.flac", SF_FORMAT_FLAC | SF_FORMAT_PCM_24, 1e-4},
                        Case{"tone.ogg", SF_FORMAT_OGG | SF_FORMAT_VORBIS, 2e-2}}) {
    const std::string path = dir + "/" + c.file;
    WriteFlac(path, stereo, 2, 44100, c.format);
    absl::StatusOr<std::vector<float>> mono = ReadAudio(path, 8000);
    ASSERT_TRUE(mono.ok()) << mono.status();
    ASSERT_EQ(mono->size(), expected.size()) << path;  // 66150 * 8000 / 44100
    std::vector<float> difference(expected.size());
    for (size_t i = 0; i < expected.size(); ++i) difference[i] = (*mono)[i] - expected[i];
    const double rms = MiddleRms(*mono), error = MiddleRms(difference);
    LOG(INFO) << c.file << ": RMS " << rms << " (tone " << 0.4 / std::sqrt(2.0)
              << "), RMS error " << error << ", peak " << PeakFrequency(*mono, 8000) << " Hz";
    RecordProperty(std::string(c.file) + "_rms_error", absl::StrCat(error));
    EXPECT_NEAR(rms, 0.4 / std::sqrt(2.0), 0.01 * 0.4) << path;
    EXPECT_LT(error, c.tolerance) << path;
    EXPECT_EQ(PeakFrequency(*mono, 8000), 1000) << path;
  }
}

// At the target rate nothing is resampled: the samples are ReadAudioFile's.
TEST(ReadAudioTest, MatchingRateIsReadAsIs) {
  const std::string dir = ScratchDir("read_audio_8k");
  std::vector<std::string> files = {dir + "/chirp.flac"};
  WriteFlac(files[0], Chirp(5000, 8000));
  const std::string raw = testing::RawDataDirOrEmpty();
  if (!raw.empty()) {
    files.push_back(raw + "/fsdd/recordings/3_jackson_7.flac");
    files.push_back(raw + "/cathy/recordings/arctic_a0001.flac");
  }
  for (const std::string& file : files) {
    absl::StatusOr<Audio> audio = ReadAudioFile(file);
    absl::StatusOr<std::vector<float>> samples = ReadAudio(file, 8000);
    ASSERT_TRUE(audio.ok() && samples.ok()) << file;
    ASSERT_EQ(audio->sample_rate, 8000);
    EXPECT_EQ(*samples, audio->samples) << file;
  }
}

TEST(ReadAudioTest, DamagedFilesNameTheFile) {
  const std::string dir = ScratchDir("read_audio_damaged");
  std::vector<float> stereo = Sine(440, 0.5, 44100, 2 * 44100);
  for (const char* name : {"good.flac", "good.ogg", "good.wav"}) {
    const std::string ext = std::filesystem::path(name).extension();
    const int format = ext == ".flac" ? SF_FORMAT_FLAC | SF_FORMAT_PCM_16
                       : ext == ".ogg" ? SF_FORMAT_OGG | SF_FORMAT_VORBIS
                                       : SF_FORMAT_WAV | SF_FORMAT_PCM_16;
    const std::string good = dir + "/" + name;
    WriteFlac(good, stereo, 2, 44100, format);
    ASSERT_TRUE(ReadAudio(good, 8000).ok()) << good;
    const long size = static_cast<long>(std::filesystem::file_size(good));
    for (const auto& [damage, keep] :
         {std::pair{"truncated", size / 2}, std::pair{"header", 30L}}) {
      const std::string path = dir + "/" + damage + ext;
      CopyDamaged(good, path, keep);
      absl::StatusOr<std::vector<float>> audio = ReadAudio(path, 8000);
      ASSERT_FALSE(audio.ok()) << path << " read as " << audio->size() << " samples";
      EXPECT_NE(audio.status().message().find(path), std::string::npos) << audio.status();
    }
  }
  // A streamed WAV leaves the data size unknown (0xffffffff): not truncated.
  absl::StatusOr<std::string> wav = ReadFile(dir + "/good.wav");
  ASSERT_TRUE(wav.ok());
  const size_t data = wav->find("data");
  ASSERT_NE(data, std::string::npos);
  wav->replace(data + 4, 4, "\xff\xff\xff\xff");
  ASSERT_TRUE(WriteFileAtomic(dir + "/streamed.wav", *wav).ok());
  absl::StatusOr<std::vector<float>> streamed = ReadAudio(dir + "/streamed.wav", 8000);
  ASSERT_TRUE(streamed.ok()) << streamed.status();
  EXPECT_EQ(streamed->size(), 8000u);  // 1 s

  absl::StatusOr<std::vector<float>> missing = ReadAudio(dir + "/missing.flac", 8000);
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find(dir + "/missing.flac"), std::string::npos);
}

}  // namespace
}  // namespace modamba::data
