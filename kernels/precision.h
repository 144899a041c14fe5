#ifndef MODAMBA_KERNELS_PRECISION_H_
#define MODAMBA_KERNELS_PRECISION_H_

#include <cstdint>
#include <cstring>

namespace modamba {

// Operand precision of the matrix products. Tensors stay fp32 at the Backend
// interface; accumulation is fp32 in every mode.
enum class MatmulPrecision {
  kFp32,  // exact fp32 products (tests, gradient checks)
  kTf32,  // tensor cores, tf32 operands (~3e-4 relative error)
  kBf16,  // tensor cores, bf16 operands (~3e-3 relative error; the training default)
};

// Round-to-nearest-even fp32 -> bf16 bits, on the host (NaN stays NaN).
inline uint16_t Bf16Bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fc0;
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

}  // namespace modamba

#endif  // MODAMBA_KERNELS_PRECISION_H_
