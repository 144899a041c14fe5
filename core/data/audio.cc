#include "core/data/audio.h"

#include <fftw3.h>
#include <sndfile.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <memory>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "core/data/resample.h"
#include "core/file_util.h"
#include "core/rng.h"
#include "core/status_macros.h"

namespace modamba::data {
namespace {

// libsndfile writes into this in-memory file so that WriteFileAtomic can put
// the finished bytes in place in one rename.
struct MemoryFile {
  std::string bytes;
  sf_count_t position = 0;
};

sf_count_t MemLength(void* user) { return static_cast<MemoryFile*>(user)->bytes.size(); }

sf_count_t MemSeek(sf_count_t offset, int whence, void* user) {
  auto* f = static_cast<MemoryFile*>(user);
  sf_count_t base = whence == SEEK_CUR ? f->position
                    : whence == SEEK_END ? static_cast<sf_count_t>(f->bytes.size())
                                         : 0;
  f->position = std::max<sf_count_t>(0, base + offset);
  return f->position;
}

sf_count_t MemRead(void* ptr, sf_count_t count, void* user) {
  auto* f = static_cast<MemoryFile*>(user);
  const sf_count_t available =
      std::max<sf_count_t>(0, static_cast<sf_count_t>(f->bytes.size()) - f->position);
  const sf_count_t n = std::min(count, available);
  std::memcpy(ptr, f->bytes.data() + f->position, n);
  f->position += n;
  return n;
}

sf_count_t MemWrite(const void* ptr, sf_count_t count, void* user) {
  auto* f = static_cast<MemoryFile*>(user);
  if (f->position + count > static_cast<sf_count_t>(f->bytes.size())) {
    f->bytes.resize(f->position + count);
  }
  std::memcpy(&f->bytes[f->position], ptr, count);
  f->position += count;
  return count;
}

sf_count_t MemTell(void* user) { return static_cast<MemoryFile*>(user)->position; }

float HzToMel(float hz) { return 2595.0f * std::log10(1.0f + hz / 700.0f); }
float MelToHz(float mel) { return 700.0f * (std::pow(10.0f, mel / 2595.0f) - 1.0f); }

struct FftwFree {
  void operator()(void* p) const { fftwf_free(p); }
};
using RealBuffer = std::unique_ptr<float, FftwFree>;
using ComplexBuffer = std::unique_ptr<fftwf_complex, FftwFree>;

// FFTW's planner is not thread-safe (executing a plan is). FFTW_ESTIMATE picks
// a plan without timing anything, so results are the same on every run.
std::mutex& PlannerMutex() {
  static std::mutex* mutex = new std::mutex;
  return *mutex;
}

struct PlanDestroyer {
  void operator()(fftwf_plan_s* plan) const {
    std::lock_guard<std::mutex> lock(PlannerMutex());
    fftwf_destroy_plan(plan);
  }
};
using Plan = std::unique_ptr<fftwf_plan_s, PlanDestroyer>;

Plan ForwardPlan(int n, float* in, fftwf_complex* out) {
  std::lock_guard<std::mutex> lock(PlannerMutex());
  return Plan(fftwf_plan_dft_r2c_1d(n, in, out, FFTW_ESTIMATE));
}

Plan InversePlan(int n, fftwf_complex* in, float* out) {
  std::lock_guard<std::mutex> lock(PlannerMutex());
  return Plan(fftwf_plan_dft_c2r_1d(n, in, out, FFTW_ESTIMATE));
}

uint32_t LittleEndian32(const char* p) {
  const auto* u = reinterpret_cast<const unsigned char*>(p);
  return u[0] | u[1] << 8 | u[2] << 16 | static_cast<uint32_t>(u[3]) << 24;
}

// libsndfile reads a WAV file cut short as a shorter file (it trusts the file
// length over the header), so the data chunk's declared size is checked
// against the bytes present. Sizes 0 and 0xffffffff mean "unknown" (streamed
// writers leave them so) and are not checked.
absl::Status CheckWavLength(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  in.seekg(0, std::ios::end);
  const int64_t file_size = in.tellg();
  in.seekg(0);
  char header[12];
  if (!in.read(header, sizeof(header)) || std::memcmp(header, "RIFF", 4) != 0) {
    return absl::OkStatus();  // RF64 and friends: libsndfile's word stands
  }
  for (int64_t offset = 12; offset + 8 <= file_size;) {
    char chunk[8];
    in.seekg(offset);
    if (!in.read(chunk, sizeof(chunk))) break;
    const uint32_t size = LittleEndian32(chunk + 4);
    if (std::memcmp(chunk, "data", 4) == 0) {
      const int64_t present = file_size - offset - 8;
      if (size != 0 && size != 0xffffffffu && size > present) {
        return absl::DataLossError(absl::StrCat(path, ": truncated WAV: its data chunk declares ",
                                                size, " bytes, the file holds ", present));
      }
      break;
    }
    offset += 8 + int64_t{size} + (size & 1);
  }
  return absl::OkStatus();
}

// All frames of a sound file, channels interleaved; `channels` and `rate` set.
absl::StatusOr<std::vector<float>> ReadFrames(const std::string& path, int* channels,
                                              int* rate) {
  SF_INFO info;
  std::memset(&info, 0, sizeof(info));
  SNDFILE* file = sf_open(path.c_str(), SFM_READ, &info);
  if (file == nullptr) {
    return absl::DataLossError(absl::StrCat(path, ": cannot read audio: ", sf_strerror(nullptr)));
  }
  std::unique_ptr<SNDFILE, int (*)(SNDFILE*)> closer(file, sf_close);
  const int container = info.format & SF_FORMAT_TYPEMASK;
  if (container == SF_FORMAT_WAV || container == SF_FORMAT_WAVEX) {
    RETURN_IF_ERROR(CheckWavLength(path));
  }
  // A damaged header can declare any length: refuse before allocating it.
  constexpr int64_t kMaxSamples = int64_t{1} << 31;
  if (info.frames > kMaxSamples / std::max(1, info.channels)) {
    return absl::DataLossError(absl::StrCat(path, ": declares ", info.frames, " frames of ",
                                            info.channels, " channels, more than the ",
                                            kMaxSamples, " samples read at most"));
  }
  std::vector<float> samples(static_cast<size_t>(info.frames) * info.channels);
  const sf_count_t read = sf_readf_float(file, samples.data(), info.frames);
  if (read != info.frames || sf_error(file) != SF_ERR_NO_ERROR) {
    return absl::DataLossError(absl::StrCat(path, ": corrupt or truncated audio: read ", read,
                                            " of ", info.frames, " frames (",
                                            sf_strerror(file), ")"));
  }
  if (info.frames == 0) return absl::DataLossError(absl::StrCat(path, ": no audio frames"));
  *channels = info.channels;
  *rate = info.samplerate;
  return samples;
}

}  // namespace

absl::StatusOr<Audio> ReadAudioFile(const std::string& path) {
  Audio audio;
  int channels = 0;
  ASSIGN_OR_RETURN(audio.samples, ReadFrames(path, &channels, &audio.sample_rate));
  if (channels != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": expected mono audio, got ", channels, " channels"));
  }
  return audio;
}

absl::StatusOr<std::vector<float>> ReadAudio(const std::string& path, int target_rate) {
  int channels = 0, rate = 0;
  ASSIGN_OR_RETURN(std::vector<float> samples, ReadFrames(path, &channels, &rate));
  if (channels > 1) {
    const size_t frames = samples.size() / channels;
    for (size_t t = 0; t < frames; ++t) {
      float sum = 0;
      for (int c = 0; c < channels; ++c) sum += samples[t * channels + c];
      samples[t] = sum / channels;
    }
    samples.resize(frames);
  }
  absl::StatusOr<std::vector<float>> resampled = Resample(samples, rate, target_rate);
  if (!resampled.ok()) {
    return absl::Status(resampled.status().code(),
                        absl::StrCat(path, ": ", resampled.status().message()));
  }
  return resampled;
}

absl::Status WriteWavFile(const std::string& path, const Audio& audio) {
  MemoryFile memory;
  SF_VIRTUAL_IO io = {MemLength, MemSeek, MemRead, MemWrite, MemTell};
  SF_INFO info;
  std::memset(&info, 0, sizeof(info));
  info.samplerate = audio.sample_rate;
  info.channels = 1;
  info.format = SF_FORMAT_WAV | SF_FORMAT_PCM_16;
  SNDFILE* file = sf_open_virtual(&io, SFM_WRITE, &info, &memory);
  if (file == nullptr) {
    return absl::InternalError(absl::StrCat(path, ": cannot encode WAV: ", sf_strerror(nullptr)));
  }
  sf_command(file, SFC_SET_CLIPPING, nullptr, SF_TRUE);
  const sf_count_t n = static_cast<sf_count_t>(audio.samples.size());
  const sf_count_t written = sf_writef_float(file, audio.samples.data(), n);
  sf_close(file);
  if (written != n) return absl::InternalError(absl::StrCat(path, ": short WAV encode"));
  return WriteFileAtomic(path, memory.bytes);
}

MelAnalyzer::MelAnalyzer(const MelConfig& config) : config_(config) {
  window_.resize(config_.window);
  for (int i = 0; i < config_.window; ++i) {
    window_[i] = 0.5f - 0.5f * std::cos(2.0f * static_cast<float>(M_PI) * i / config_.window);
  }
  const int nb = bins();
  filterbank_.assign(static_cast<size_t>(config_.n_mels) * nb, 0.0f);
  const float mel_lo = HzToMel(config_.f_min);
  const float mel_hi = HzToMel(config_.f_max);
  std::vector<float> edges(config_.n_mels + 2);
  for (int i = 0; i < config_.n_mels + 2; ++i) {
    edges[i] = MelToHz(mel_lo + (mel_hi - mel_lo) * i / (config_.n_mels + 1));
  }
  for (int m = 0; m < config_.n_mels; ++m) {
    for (int b = 0; b < nb; ++b) {
      const float hz = static_cast<float>(b) * config_.sample_rate / config_.n_fft;
      const float rise = (hz - edges[m]) / (edges[m + 1] - edges[m]);
      const float fall = (edges[m + 2] - hz) / (edges[m + 2] - edges[m + 1]);
      filterbank_[static_cast<size_t>(m) * nb + b] = std::max(0.0f, std::min(rise, fall));
    }
  }
}

int MelAnalyzer::NumFrames(int64_t samples) const {
  const int64_t frames = (samples + config_.hop / 2) / config_.hop;
  return static_cast<int>(std::max<int64_t>(1, frames));
}

std::vector<float> MelAnalyzer::Stft(const std::vector<float>& samples, int frames,
                                     std::vector<float>* phase) const {
  const int n_fft = config_.n_fft;
  const int nb = bins();
  const int offset = (n_fft - config_.window) / 2;
  RealBuffer in(fftwf_alloc_real(n_fft));
  ComplexBuffer out(fftwf_alloc_complex(nb));
  Plan plan = ForwardPlan(n_fft, in.get(), out.get());
  std::vector<float> power(static_cast<size_t>(frames) * nb);
  if (phase != nullptr) phase->resize(power.size());
  const int64_t n = static_cast<int64_t>(samples.size());
  for (int t = 0; t < frames; ++t) {
    std::fill(in.get(), in.get() + n_fft, 0.0f);
    const int64_t start = static_cast<int64_t>(t) * config_.hop + config_.hop / 2 -
                          config_.window / 2;
    for (int i = 0; i < config_.window; ++i) {
      const int64_t s = start + i;
      if (s >= 0 && s < n) in.get()[offset + i] = samples[s] * window_[i];
    }
    fftwf_execute(plan.get());
    for (int b = 0; b < nb; ++b) {
      const float re = out.get()[b][0];
      const float im = out.get()[b][1];
      power[static_cast<size_t>(t) * nb + b] = re * re + im * im;
      if (phase != nullptr) (*phase)[static_cast<size_t>(t) * nb + b] = std::atan2(im, re);
    }
  }
  return power;
}

std::vector<float> MelAnalyzer::LogMel(const std::vector<float>& samples) const {
  const int frames = NumFrames(samples.size());
  const int nb = bins();
  const std::vector<float> power = Stft(samples, frames, nullptr);
  std::vector<float> mel(static_cast<size_t>(frames) * config_.n_mels);
  for (int t = 0; t < frames; ++t) {
    for (int m = 0; m < config_.n_mels; ++m) {
      double s = 0;
      for (int b = 0; b < nb; ++b) {
        s += double{filterbank_[static_cast<size_t>(m) * nb + b]} * power[static_cast<size_t>(t) * nb + b];
      }
      mel[static_cast<size_t>(t) * config_.n_mels + m] =
          std::log(static_cast<float>(s) + config_.log_floor);
    }
  }
  return mel;
}

std::vector<float> MelAnalyzer::Istft(const std::vector<float>& magnitude,
                                      const std::vector<float>& phase, int frames) const {
  const int n_fft = config_.n_fft;
  const int nb = bins();
  const int offset = (n_fft - config_.window) / 2;
  ComplexBuffer in(fftwf_alloc_complex(nb));
  RealBuffer out(fftwf_alloc_real(n_fft));
  Plan plan = InversePlan(n_fft, in.get(), out.get());
  const int64_t n = static_cast<int64_t>(frames) * config_.hop;
  std::vector<float> signal(n, 0.0f);
  std::vector<float> weight(n, 0.0f);
  for (int t = 0; t < frames; ++t) {
    for (int b = 0; b < nb; ++b) {
      const size_t i = static_cast<size_t>(t) * nb + b;
      in.get()[b][0] = magnitude[i] * std::cos(phase[i]);
      in.get()[b][1] = magnitude[i] * std::sin(phase[i]);
    }
    fftwf_execute(plan.get());  // unnormalised: divide by n_fft
    const int64_t start = static_cast<int64_t>(t) * config_.hop + config_.hop / 2 -
                          config_.window / 2;
    for (int i = 0; i < config_.window; ++i) {
      const int64_t s = start + i;
      if (s < 0 || s >= n) continue;
      signal[s] += out.get()[offset + i] / n_fft * window_[i];
      weight[s] += window_[i] * window_[i];
    }
  }
  for (int64_t s = 0; s < n; ++s) {
    if (weight[s] > 1e-6f) signal[s] /= weight[s];
  }
  return signal;
}

std::vector<float> MelAnalyzer::GriffinLim(const float* log_mel, int frames, int iterations,
                                           uint64_t seed) const {
  const int nb = bins();
  const int n_mels = config_.n_mels;
  // Non-negative least squares for the linear power P with mel = F P, by
  // multiplicative updates P <- P * (F^T mel) / (F^T F P), started from the
  // filter-weighted spread of each mel band over its bins.
  std::vector<float> filter_mass(n_mels, 0.0f);
  for (int m = 0; m < n_mels; ++m) {
    for (int b = 0; b < nb; ++b) filter_mass[m] += filterbank_[static_cast<size_t>(m) * nb + b];
  }
  std::vector<float> magnitude(static_cast<size_t>(frames) * nb);
  std::vector<float> mel(n_mels), ft_mel(nb), power(nb), estimate(n_mels);
  for (int t = 0; t < frames; ++t) {
    for (int m = 0; m < n_mels; ++m) {
      mel[m] = std::max(0.0f, std::exp(log_mel[static_cast<size_t>(t) * n_mels + m]) -
                                  config_.log_floor);
    }
    for (int b = 0; b < nb; ++b) {
      float numerator = 0, spread = 0;
      for (int m = 0; m < n_mels; ++m) {
        const float f = filterbank_[static_cast<size_t>(m) * nb + b];
        numerator += f * mel[m];
        if (filter_mass[m] > 0) spread += f * mel[m] / filter_mass[m];
      }
      ft_mel[b] = numerator;
      power[b] = spread;
    }
    for (int iter = 0; iter < 30; ++iter) {
      for (int m = 0; m < n_mels; ++m) {
        float s = 0;
        for (int b = 0; b < nb; ++b) s += filterbank_[static_cast<size_t>(m) * nb + b] * power[b];
        estimate[m] = s;
      }
      for (int b = 0; b < nb; ++b) {
        float denominator = 0;
        for (int m = 0; m < n_mels; ++m) {
          denominator += filterbank_[static_cast<size_t>(m) * nb + b] * estimate[m];
        }
        power[b] = denominator > 0 ? power[b] * ft_mel[b] / denominator : 0.0f;
      }
    }
    for (int b = 0; b < nb; ++b) {
      magnitude[static_cast<size_t>(t) * nb + b] = std::sqrt(std::max(0.0f, power[b]));
    }
  }

  Rng rng(seed);
  std::vector<float> phase(magnitude.size());
  for (float& p : phase) p = static_cast<float>(2 * M_PI * rng.Uniform());
  std::vector<float> signal = Istft(magnitude, phase, frames);
  for (int iter = 0; iter < iterations; ++iter) {
    Stft(signal, frames, &phase);
    signal = Istft(magnitude, phase, frames);
  }
  return signal;
}

}  // namespace modamba::data
