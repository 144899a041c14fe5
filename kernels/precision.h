#ifndef MODAMBA_KERNELS_PRECISION_H_
#define MODAMBA_KERNELS_PRECISION_H_

namespace modamba {

// Operand precision of the matrix products. Tensors stay fp32 at the Backend
// interface; accumulation is fp32 in every mode.
enum class MatmulPrecision {
  kFp32,  // exact fp32 products (tests, gradient checks)
  kTf32,  // tensor cores, tf32 operands (~3e-4 relative error)
  kBf16,  // tensor cores, bf16 operands (~3e-3 relative error; the training default)
};

}  // namespace modamba

#endif  // MODAMBA_KERNELS_PRECISION_H_
