// The augmentations the digit judges are trained with, so that they score a
// digit drawn in another style or a word said by another voice as what it is
// (evaluator/digit_classifiers.h). Every function draws only from the Rng it
// is given, so an augmented set is the same for a seed.
//
// Images (28x28, values in [0, 1]), one resampling for the geometry:
//   affine:     rotation, isotropic scale, horizontal shear and shift about
//               the image centre
//   elastic:    a smooth displacement field (Gaussian offsets on a coarse
//               grid, bilinearly interpolated), as in Simard et al. 2003
//   stroke:     thicker or thinner strokes, a blend towards the grey-level
//               dilation or erosion (3x3 cross)
//   contrast:   a gamma and a gain on the ink, clipped to [0, 1]
// Speech (the waveform, then its log-mel frames):
//   speed:      resampling by a factor (tempo and pitch together, as Kaldi's
//               speed perturbation)
//   pitch:      a warp of the mel frequency axis (formants and pitch move
//               together)
//   vocal tract length perturbation (Jaitly and Hinton 2013): the linear
//               frequency axis scaled by a factor, piecewise linear so that
//               it still ends at the top band, applied to the log-mel bands
//               by interpolation at each band's source frequency
//   loudness:   a gain in dB
//   noise:      white Gaussian noise at a random signal-to-noise ratio
//   reverb:     convolution with a synthetic room impulse response: a direct
//               path and exponentially decaying Gaussian noise (RT60 drawn)
//   SpecAugment (Park et al. 2019): time and frequency bands of the
//               resampled log-mel frames set to their mean (training only)
#ifndef MODAMBA_EVALUATOR_AUGMENT_H_
#define MODAMBA_EVALUATOR_AUGMENT_H_

#include <vector>

#include "core/data/audio.h"
#include "core/rng.h"

namespace modamba::eval {

struct ImageAugmentation {
  double max_rotation_deg = 12;
  double max_scale = 0.1;     // scale in [1 - s, 1 + s]
  double max_shear = 0.2;     // x += shear * y
  double max_shift = 2;       // pixels, each axis
  double elastic_sigma = 0.8; // pixels, std of the coarse grid's offsets
  int elastic_grid = 4;       // control points per side
  double max_stroke = 0.7;    // blend weight towards dilation / erosion
  double min_gain = 0.6, max_gamma = 1.6;  // ink * gain^..; gamma in [1/g, g]
};

// Augments one 28x28 image in place.
void AugmentImage(const ImageAugmentation& a, Rng* rng, float* image);

struct SpeechAugmentation {
  double max_speed = 0.1;        // factor in [1 - s, 1 + s]
  double max_pitch = 0.12;      // mel-axis warp factor in [1 - p, 1 + p]
  double max_vtlp = 0;          // frequency-axis warp factor in [1 - v, 1 + v] (0: none)
  double vtlp_knee = 0.8;       // share of f_max up to which the warp is a pure scaling
  double min_gain_db = -12, max_gain_db = 6;
  double min_snr_db = 15, max_snr_db = 40;
  double noise_probability = 0.5;
  double min_rt60 = 0.05, max_rt60 = 0.3;  // seconds
  double reverb_probability = 0.5;
  int time_masks = 2, max_time_mask = 4;    // of kSpeechFrames frames
  int freq_masks = 2, max_freq_mask = 5;    // of n_mels bands
};

// Speed, loudness, noise and reverb of a waveform at `sample_rate`.
std::vector<float> AugmentWaveform(const SpeechAugmentation& a, int sample_rate, Rng* rng,
                                   const std::vector<float>& samples);
// The pitch warp of log-mel frames [frames, n_mels], in place.
void WarpMelAxis(const SpeechAugmentation& a, int n_mels, Rng* rng, std::vector<float>* log_mel);
// Vocal tract length perturbation of log-mel frames [frames, config.n_mels],
// in place: band m, centred at frequency f, takes the input at W^-1(f),
// where W(f) = alpha f up to the knee and then linear to W(f_max) = f_max.
void WarpVocalTract(const SpeechAugmentation& a, const data::MelConfig& config, Rng* rng,
                    std::vector<float>* log_mel);
// SpecAugment masks on log-mel frames [frames, n_mels], in place.
void MaskSpeechInput(const SpeechAugmentation& a, int frames, int n_mels, Rng* rng, float* input);

}  // namespace modamba::eval

#endif  // MODAMBA_EVALUATOR_AUGMENT_H_
