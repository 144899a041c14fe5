#include "evaluator/generation.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "core/diffusion.h"
#include "core/status_macros.h"

namespace modamba::eval {

bool TokenSet::Contains(int32_t id) const {
  if (ranges.empty()) return true;
  for (const auto& [begin, end] : ranges) {
    if (id >= begin && id < end) return true;
  }
  return false;
}

int32_t SampleToken(const float* logits, int vocab_size, const TokenSet& allowed,
                    const SamplingOptions& options, Rng* rng) {
  std::vector<int32_t> ids;
  for (int32_t id = 0; id < vocab_size; ++id) {
    if (allowed.Contains(id)) ids.push_back(id);
  }
  if (ids.empty()) return -1;
  auto larger = [&](int32_t a, int32_t b) { return logits[a] > logits[b]; };
  if (options.temperature <= 0) return *std::min_element(ids.begin(), ids.end(), larger);
  if (options.top_k > 0 && options.top_k < static_cast<int>(ids.size())) {
    std::nth_element(ids.begin(), ids.begin() + options.top_k, ids.end(), larger);
    ids.resize(options.top_k);
  }
  double top = logits[ids[0]];
  for (int32_t id : ids) top = std::max(top, static_cast<double>(logits[id]));
  std::vector<double> p(ids.size());
  double sum = 0;
  for (size_t i = 0; i < ids.size(); ++i) {
    p[i] = std::exp((logits[ids[i]] - top) / options.temperature);
    sum += p[i];
  }
  double u = rng->Uniform() * sum;
  for (size_t i = 0; i < ids.size(); ++i) {
    u -= p[i];
    if (u < 0) return ids[i];
  }
  return ids.back();
}

std::vector<int32_t> DiffusionSchedule(int total_steps, int steps) {
  steps = std::clamp(steps, 1, total_steps);
  std::vector<int32_t> out;
  for (int i = 0; i < steps; ++i) {
    // From T down to 1 inclusive.
    const double t = steps == 1 ? total_steps
                                : total_steps - i * (total_steps - 1.0) / (steps - 1);
    const int32_t step = static_cast<int32_t>(std::lround(t));
    if (out.empty() || step < out.back()) out.push_back(step);
  }
  return out;
}

void DdimUpdate(double abar, double abar_prev, const DiffusionOptions& options, size_t n,
                const float* eps, Rng* rng, float* x) {
  const double sigma = options.eta * std::sqrt((1 - abar_prev) / (1 - abar)) *
                       std::sqrt(std::max(0.0, 1 - abar / abar_prev));
  const double direction = std::sqrt(std::max(0.0, 1 - abar_prev - sigma * sigma));
  for (size_t i = 0; i < n; ++i) {
    double x0 = (x[i] - std::sqrt(1 - abar) * eps[i]) / std::sqrt(abar);
    if (options.clip_x0) x0 = std::clamp(x0, -1.0, 1.0);
    const double e = (x[i] - std::sqrt(abar) * x0) / std::sqrt(1 - abar);
    double next = std::sqrt(abar_prev) * x0 + direction * e;
    if (sigma > 0) next += sigma * rng->Normal(0, 1);
    x[i] = static_cast<float>(next);
  }
}

Decoder::Decoder(const RecurrentLM* lm, const data::Vocab& vocab, int streams, uint64_t seed,
                 int64_t first_index)
    : lm_(lm), vocab_(vocab), state_(lm->NewState(streams)),
      logits_(static_cast<size_t>(streams) * lm->vocab_size(), 0.f) {
  for (int s = 0; s < streams; ++s) {
    rngs_.push_back(Rng::ForName(seed, absl::StrCat("stream/", first_index + s)));
  }
}

const float* Decoder::logits(int stream) const {
  return &logits_[static_cast<size_t>(stream) * lm_->vocab_size()];
}

int32_t Decoder::ModalityOf(int32_t token) const { return vocab_.ModalityOfId(token); }

absl::Status Decoder::Feed(const std::vector<int>& streams, const std::vector<int32_t>& tokens) {
  if (streams.size() != tokens.size()) {
    return absl::InvalidArgumentError("Decoder::Feed: one token per stream");
  }
  if (streams.empty()) return absl::OkStatus();
  std::vector<StepInput> inputs(streams.size());
  for (size_t i = 0; i < streams.size(); ++i) {
    inputs[i].stream = streams[i];
    inputs[i].token = tokens[i];
    inputs[i].modality = ModalityOf(tokens[i]);
  }
  const int v = lm_->vocab_size();
  std::vector<float> out(streams.size() * v);
  RETURN_IF_ERROR(lm_->Step(inputs, &state_, out.data(), nullptr));
  for (size_t i = 0; i < streams.size(); ++i) {
    std::copy_n(&out[i * v], v, &logits_[static_cast<size_t>(streams[i]) * v]);
  }
  return absl::OkStatus();
}

absl::Status Decoder::FeedAll(const std::vector<int32_t>& tokens) {
  std::vector<int> all(streams());
  std::iota(all.begin(), all.end(), 0);
  for (int32_t token : tokens) {
    RETURN_IF_ERROR(Feed(all, std::vector<int32_t>(all.size(), token)));
  }
  return absl::OkStatus();
}

absl::Status Decoder::FeedPrompts(const std::vector<std::vector<int32_t>>& prompts) {
  if (static_cast<int>(prompts.size()) != streams()) {
    return absl::InvalidArgumentError(absl::StrCat("Decoder::FeedPrompts: ", prompts.size(),
                                                   " prompts for ", streams(), " streams"));
  }
  for (size_t j = 0;; ++j) {
    std::vector<int> streams;
    std::vector<int32_t> tokens;
    for (size_t s = 0; s < prompts.size(); ++s) {
      if (j >= prompts[s].size()) continue;
      streams.push_back(static_cast<int>(s));
      tokens.push_back(prompts[s][j]);
    }
    if (streams.empty()) return absl::OkStatus();
    RETURN_IF_ERROR(Feed(streams, tokens));
  }
}

absl::StatusOr<std::vector<std::vector<int32_t>>> Decoder::Sample(const TokenSet& allowed,
                                                                  int32_t stop, int max_tokens,
                                                                  const SamplingOptions& options) {
  std::vector<std::vector<int32_t>> out(streams());
  std::vector<int> active(streams());
  std::iota(active.begin(), active.end(), 0);
  for (int step = 0; step < max_tokens && !active.empty(); ++step) {
    std::vector<int32_t> tokens;
    for (int s : active) {
      const int32_t id = SampleToken(logits(s), lm_->vocab_size(), allowed, options, &rngs_[s]);
      if (id < 0) return absl::InvalidArgumentError("sampling: no allowed token in the vocab");
      tokens.push_back(id);
    }
    RETURN_IF_ERROR(Feed(active, tokens));
    std::vector<int> still;
    for (size_t i = 0; i < active.size(); ++i) {
      if (tokens[i] == stop) continue;
      out[active[i]].push_back(tokens[i]);
      still.push_back(active[i]);
    }
    active.swap(still);
  }
  return out;
}

absl::Status Decoder::FeedPatches(const float* patches, int patch_stride, int32_t timestep,
                                  float* eps) {
  // Denoising passes (eps wanted) need no next-token logits.
  std::vector<StepInput> inputs(streams());
  for (int s = 0; s < streams(); ++s) {
    inputs[s].stream = s;
    inputs[s].token = data::kPad;
    inputs[s].modality = data::kImage;
    inputs[s].patch = patches + static_cast<size_t>(s) * patch_stride;
    inputs[s].timestep = timestep;
  }
  if (eps != nullptr) return lm_->Step(inputs, &state_, nullptr, eps);
  return lm_->Step(inputs, &state_, logits_.data(), nullptr);
}

absl::StatusOr<std::vector<float>> Decoder::SampleImage(int n_patches,
                                                        const DiffusionOptions& options) {
  const int pd = lm_->patch_dim();
  if (pd == 0) return absl::FailedPreconditionError("SampleImage: the model has no patch_dim");
  const int total = lm_->config().diffusion_steps();
  const int b = streams();
  const size_t per_stream = static_cast<size_t>(n_patches) * pd;
  std::vector<float> x(b * per_stream), eps(b * per_stream), step_eps(static_cast<size_t>(b) * pd);
  for (int s = 0; s < b; ++s) {
    for (size_t i = 0; i < per_stream; ++i) {
      x[s * per_stream + i] = static_cast<float>(rngs_[s].Normal(0, 1));
    }
  }
  RecurrentState after_boi = lm_->NewState(b);
  lm_->CopyState(state_, &after_boi);
  const std::vector<int32_t> schedule = DiffusionSchedule(total, options.steps);
  for (size_t k = 0; k < schedule.size(); ++k) {
    const int32_t t = schedule[k];
    lm_->CopyState(after_boi, &state_);
    for (int p = 0; p < n_patches; ++p) {
      RETURN_IF_ERROR(FeedPatches(&x[static_cast<size_t>(p) * pd], per_stream, t, step_eps.data()));
      for (int s = 0; s < b; ++s) {
        std::copy_n(&step_eps[static_cast<size_t>(s) * pd], pd,
                    &eps[s * per_stream + static_cast<size_t>(p) * pd]);
      }
    }
    const double abar = CosineAlphaBar(t, total);
    const double abar_prev = k + 1 < schedule.size() ? CosineAlphaBar(schedule[k + 1], total) : 1.0;
    for (int s = 0; s < b; ++s) {
      DdimUpdate(abar, abar_prev, options, per_stream, &eps[s * per_stream], &rngs_[s],
                 &x[s * per_stream]);
    }
  }
  lm_->CopyState(after_boi, &state_);
  for (int p = 0; p < n_patches; ++p) {
    RETURN_IF_ERROR(FeedPatches(&x[static_cast<size_t>(p) * pd], per_stream, 1, nullptr));
  }
  return x;
}

}  // namespace modamba::eval
