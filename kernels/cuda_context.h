// Per-device CUDA state shared by every CudaBackend of the process: one
// stream, one cuBLAS handle, side streams for products that run side by
// side (Lanes), the stream-ordered memory pool and an error flag
// that kernels raise on bad ids. Created on first use and kept for the life
// of the process, so tensors may outlive the backend that made them.
#ifndef MODAMBA_KERNELS_CUDA_CONTEXT_H_
#define MODAMBA_KERNELS_CUDA_CONTEXT_H_

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <vector>

#include "core/tensor.h"
#include "kernels/kernels.h"

namespace modamba::cuda {

class DeviceContext {
 public:
  explicit DeviceContext(int device);
  int device() const { return device_; }
  cudaStream_t stream() const { return stream_; }
  cublasHandle_t cublas() const { return lanes_.main; }
  const Lanes& lanes() const { return lanes_; }
  Allocator* allocator() { return allocator_.get(); }
  // Device int that kernels set to 1 on an out-of-range token, target or row id.
  int* error_flag() const { return error_flag_; }
  // Waits for the stream, then fails loudly if a kernel raised the flag.
  void SyncAndCheck();
  int64_t BytesInUse() const;
  int64_t PeakBytes() const;
  void ResetPeak();

 private:
  int device_;
  cudaStream_t stream_ = nullptr;
  cudaMemPool_t pool_ = nullptr;
  std::vector<void*> cublas_workspaces_;  // the main handle's, then each lane's
  Lanes lanes_;
  int* error_flag_ = nullptr;
  std::unique_ptr<Allocator> allocator_;
};

// The context of `device`, created (and made current) on first use.
DeviceContext& ContextFor(int device);

}  // namespace modamba::cuda

#endif  // MODAMBA_KERNELS_CUDA_CONTEXT_H_
