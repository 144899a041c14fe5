#include "core/rng.h"

#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace modamba {
namespace {

uint64_t SplitMix(uint64_t* x) {
  uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

uint64_t Rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

}  // namespace

Rng::Rng(uint64_t seed) {
  for (auto& s : s_) s = SplitMix(&seed);
}

Rng Rng::ForName(uint64_t seed, absl::string_view name) {
  uint64_t h = 1469598103934665603ULL;  // FNV-1a: stable across platforms
  for (unsigned char c : name) h = (h ^ c) * 1099511628211ULL;
  return Rng(seed ^ h);
}

uint64_t Rng::NextU64() {
  const uint64_t result = Rotl(s_[1] * 5, 7) * 9;
  const uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = Rotl(s_[3], 45);
  return result;
}

double Rng::Normal(double mean, double std) {
  // Box-Muller; one value per call keeps the state simple to serialise.
  double u1 = Uniform(), u2 = Uniform();
  if (u1 < 1e-300) u1 = 1e-300;
  return mean + std * std::sqrt(-2 * std::log(u1)) * std::cos(2 * M_PI * u2);
}

std::string Rng::Serialize() const { return absl::StrJoin(s_, ","); }

absl::StatusOr<Rng> Rng::Deserialize(absl::string_view text) {
  std::vector<absl::string_view> parts = absl::StrSplit(text, ',');
  Rng rng(0);
  if (parts.size() != 4) return absl::InvalidArgumentError(absl::StrCat("bad RNG state '", text, "'"));
  for (int i = 0; i < 4; ++i) {
    if (!absl::SimpleAtoi(parts[i], &rng.s_[i])) {
      return absl::InvalidArgumentError(absl::StrCat("bad RNG state '", text, "'"));
    }
  }
  return rng;
}

}  // namespace modamba
