// A small, seeded, serialisable random generator (xoshiro256**, seeded by
// splitmix64), so runs are reproducible and checkpoints can carry RNG state.
#ifndef MODAMBA_CORE_RNG_H_
#define MODAMBA_CORE_RNG_H_

#include <cmath>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace modamba {

class Rng {
 public:
  explicit Rng(uint64_t seed);
  // An independent stream derived from a seed and a name (a parameter name):
  // initialisation does not depend on the order parameters are created in.
  static Rng ForName(uint64_t seed, absl::string_view name);

  uint64_t NextU64();
  // Uniform in [0, 1).
  double Uniform() { return (NextU64() >> 11) * 0x1.0p-53; }
  double Uniform(double lo, double hi) { return lo + (hi - lo) * Uniform(); }
  double Normal(double mean, double std);
  // Uniform integer in [0, n).
  uint64_t Below(uint64_t n) { return NextU64() % n; }

  std::string Serialize() const;
  static absl::StatusOr<Rng> Deserialize(absl::string_view text);

 private:
  uint64_t s_[4];
};

}  // namespace modamba

#endif  // MODAMBA_CORE_RNG_H_
