// Audio files (libsndfile), log-mel features (FFTW) and Griffin-Lim
// resynthesis, so speech units can be listened to.
//
// Framing: frame t covers the 10 ms hop [t*hop, (t+1)*hop) and its 25 ms Hann
// window is centred on that hop (zero outside the signal); a signal of n
// samples has round(n / hop) frames (at least one), and resynthesis of T
// frames gives T * hop samples, so durations survive within hop / 2.
#ifndef MODAMBA_CORE_DATA_AUDIO_H_
#define MODAMBA_CORE_DATA_AUDIO_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace modamba::data {

struct Audio {
  int sample_rate = 0;
  std::vector<float> samples;  // mono, in [-1, 1]
  double seconds() const {
    return sample_rate > 0 ? static_cast<double>(samples.size()) / sample_rate : 0;
  }
};

// Reads a mono sound file (FLAC, WAV, ...). Errors name the file: unreadable,
// not mono, or fewer frames than its header declares (truncated).
absl::StatusOr<Audio> ReadAudioFile(const std::string& path);

// Reads any sound file libsndfile decodes (WAV, FLAC, OGG Vorbis/Opus, ...)
// of any sample rate and channel count as mono at target_rate: the channels
// are averaged, then libsoxr resamples (resample.h) unless the file is
// already at target_rate, whose samples come back exactly as ReadAudioFile
// gives them. Errors name the file as ReadAudioFile's do.
absl::StatusOr<std::vector<float>> ReadAudio(const std::string& path, int target_rate);

// Writes 16-bit PCM WAV atomically (clipping to [-1, 1]).
absl::Status WriteWavFile(const std::string& path, const Audio& audio);

struct MelConfig {
  int sample_rate = 8000;
  int window = 200;  // 25 ms
  int hop = 80;      // 10 ms
  int n_fft = 256;
  int n_mels = 40;
  float f_min = 0;
  float f_max = 4000;
  float log_floor = 1e-6f;  // log(mel power + floor)
};

class MelAnalyzer {
 public:
  explicit MelAnalyzer(const MelConfig& config);

  const MelConfig& config() const { return config_; }
  int NumFrames(int64_t samples) const;

  // [frames, n_mels] log-mel power. Thread-safe.
  std::vector<float> LogMel(const std::vector<float>& samples) const;

  // Mel frames back to a waveform of frames * hop samples: the mel power is
  // mapped to a linear power spectrum by non-negative least squares, then
  // Griffin-Lim estimates a phase. Deterministic for a seed. Thread-safe.
  std::vector<float> GriffinLim(const float* log_mel, int frames, int iterations,
                                uint64_t seed) const;

 private:
  int bins() const { return config_.n_fft / 2 + 1; }
  // Power spectra [frames, bins] of a signal, and its inverse by overlap-add.
  std::vector<float> Stft(const std::vector<float>& samples, int frames,
                          std::vector<float>* phase) const;
  std::vector<float> Istft(const std::vector<float>& magnitude,
                           const std::vector<float>& phase, int frames) const;

  MelConfig config_;
  std::vector<float> window_;      // [window]
  std::vector<float> filterbank_;  // [n_mels, bins], triangles of peak 1
};

}  // namespace modamba::data

#endif  // MODAMBA_CORE_DATA_AUDIO_H_
