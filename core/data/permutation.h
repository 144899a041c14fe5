// A seeded Fisher-Yates permutation of 0..n-1, the same on every platform.
#ifndef MODAMBA_CORE_DATA_PERMUTATION_H_
#define MODAMBA_CORE_DATA_PERMUTATION_H_

#include <cstdint>
#include <numeric>
#include <utility>
#include <vector>

#include "core/rng.h"

namespace modamba::data {

inline std::vector<int64_t> Permutation(int64_t n, Rng* rng) {
  std::vector<int64_t> p(n);
  std::iota(p.begin(), p.end(), 0);
  for (int64_t i = n - 1; i > 0; --i) {
    std::swap(p[i], p[rng->Below(static_cast<uint64_t>(i) + 1)]);
  }
  return p;
}

}  // namespace modamba::data

#endif  // MODAMBA_CORE_DATA_PERMUTATION_H_
