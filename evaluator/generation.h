// Sampling on top of the recurrence: a Decoder runs a batch of independent
// streams through a RecurrentLM, samples discrete tokens (temperature, top-k,
// restricted to a set of ids) and samples Transfusion images by DDIM / DDPM
// inside the sequence.
//
// Each stream draws from its own random stream, so what a stream generates
// does not depend on how many other streams run beside it.
#ifndef MODAMBA_EVALUATOR_GENERATION_H_
#define MODAMBA_EVALUATOR_GENERATION_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/data/vocab.h"
#include "core/rng.h"
#include "evaluator/recurrent.h"

namespace modamba::eval {

struct SamplingOptions {
  float temperature = 1.f;  // <= 0: greedy (argmax)
  int top_k = 0;            // 0: no top-k cut
};

// Token ids a sample may take: a union of [begin, end) ranges; empty: any id.
struct TokenSet {
  std::vector<std::pair<int32_t, int32_t>> ranges;
  bool Contains(int32_t id) const;
};

// Draws an id from softmax(logits / temperature) over the allowed ids, kept
// to the top_k largest when top_k > 0.
int32_t SampleToken(const float* logits, int vocab_size, const TokenSet& allowed,
                    const SamplingOptions& options, Rng* rng);

// DDIM over a subsequence of the model's T diffusion steps. eta = 0 is
// deterministic DDIM, eta = 1 ancestral DDPM sampling on the same steps.
struct DiffusionOptions {
  int steps = 50;
  double eta = 0;
  // Clip the predicted x_0 to the patches' range [-1, 1] at every step.
  bool clip_x0 = true;
};

class Decoder {
 public:
  // Stream s draws from the random stream named (seed, first_index + s), so
  // sample i is the same whichever batch of streams it runs in.
  Decoder(const RecurrentLM* lm, const data::Vocab& vocab, int streams, uint64_t seed,
          int64_t first_index = 0);

  int streams() const { return state_.streams; }
  const RecurrentLM& lm() const { return *lm_; }
  // Next-token logits of a stream after the last token fed to it.
  const float* logits(int stream) const;

  // Feeds the same tokens (modality from the vocab) to every stream.
  absl::Status FeedAll(const std::vector<int32_t>& tokens);
  // Feeds prompts[s] to stream s (prompts may differ in length).
  absl::Status FeedPrompts(const std::vector<std::vector<int32_t>>& prompts);
  // Feeds tokens[i] to stream streams[i].
  absl::Status Feed(const std::vector<int>& streams, const std::vector<int32_t>& tokens);

  // Samples up to max_tokens tokens per stream from `allowed`, feeding each
  // back. A stream ends after sampling `stop` (fed, not returned; -1: none).
  // Returns each stream's tokens.
  absl::StatusOr<std::vector<std::vector<int32_t>>> Sample(const TokenSet& allowed, int32_t stop,
                                                           int max_tokens,
                                                           const SamplingOptions& options);

  // Transfusion: every stream has just been fed BOI. Samples n_patches patches
  // per stream ([streams, n_patches, patch_dim], in [-1, 1] when clipped):
  // each denoising step re-runs the image positions from the state after BOI
  // with the current x_t and t. Leaves every stream after the clean patches
  // (fed at step 1, the least noise training shows the model), ready for EOI.
  absl::StatusOr<std::vector<float>> SampleImage(int n_patches, const DiffusionOptions& options);

 private:
  int32_t ModalityOf(int32_t token) const;
  // Feeds one patch per stream (all streams) at `timestep`; eps may be null.
  absl::Status FeedPatches(const float* patches, int patch_stride, int32_t timestep, float* eps);

  const RecurrentLM* lm_;
  data::Vocab vocab_;
  RecurrentState state_;
  std::vector<float> logits_;  // [streams, V]
  std::vector<Rng> rngs_;
};

// One DDIM step of n values, x_t -> x_prev in place, from the predicted noise:
// x_0 = (x_t - sqrt(1 - abar) eps) / sqrt(abar) (clipped when asked; eps is
// then re-derived from it), x_prev = sqrt(abar_prev) x_0 +
// sqrt(1 - abar_prev - sigma^2) eps + sigma z, sigma = eta * sqrt((1 -
// abar_prev) / (1 - abar)) * sqrt(1 - abar / abar_prev).
void DdimUpdate(double abar, double abar_prev, const DiffusionOptions& options, size_t n,
                const float* eps, Rng* rng, float* x);

// The DDIM timesteps from T down to 1: `steps` distinct values, evenly spread.
std::vector<int32_t> DiffusionSchedule(int total_steps, int steps);

}  // namespace modamba::eval

#endif  // MODAMBA_EVALUATOR_GENERATION_H_
