// The CUDA implementation of modamba::Backend (core/backend.h).
//
// Tensors at the interface are F32 on the device (activations that feed only
// products may be BF16: MatmulInputDType); matrix products run on tensor
// cores with bf16 operands and fp32 accumulation by default
// (MatmulPrecision). Every kernel sums in a fixed order (no float atomics),
// so results are bitwise reproducible run to run on the same GPU and shapes.
// Ops are queued on one stream per device; Synchronize() waits for them and
// reports kernels that met out-of-range token or target ids.
#ifndef MODAMBA_KERNELS_CUDA_BACKEND_H_
#define MODAMBA_KERNELS_CUDA_BACKEND_H_

#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "core/backend.h"
#include "kernels/precision.h"

namespace modamba {

struct CudaBackendOptions {
  int device = 0;
  MatmulPrecision matmul = MatmulPrecision::kBf16;
};

// Usable CUDA devices; 0 where there is no driver or no GPU.
int CudaDeviceCount();

absl::StatusOr<std::unique_ptr<Backend>> NewCudaBackend(const CudaBackendOptions& options = {});

// The backend a worker or command asks for by name: "cpu", or "gpu" (CUDA
// device `gpu`, default options); errors name the device.
absl::StatusOr<std::unique_ptr<Backend>> NewBackend(absl::string_view device, int gpu = 0);

// Memory of the device's pool (everything CudaBackend allocates).
struct CudaMemoryStats {
  int64_t in_use_bytes = 0;
  int64_t peak_bytes = 0;  // since the last ResetCudaPeakMemory
};
CudaMemoryStats GetCudaMemoryStats(int device = 0);
void ResetCudaPeakMemory(int device = 0);

}  // namespace modamba

#endif  // MODAMBA_KERNELS_CUDA_BACKEND_H_
