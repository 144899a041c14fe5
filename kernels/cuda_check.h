// Error checks for CUDA runtime and cuBLAS calls: a failure is a programming
// or device error, so it stops the process with the call and the message.
#ifndef MODAMBA_KERNELS_CUDA_CHECK_H_
#define MODAMBA_KERNELS_CUDA_CHECK_H_

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include "glog/logging.h"

#define CUDA_CHECK(expr)                                                                 \
  do {                                                                                   \
    cudaError_t err_ = (expr);                                                           \
    CHECK(err_ == cudaSuccess) << #expr << " failed: " << cudaGetErrorName(err_) << " (" \
                               << cudaGetErrorString(err_) << ")";                       \
  } while (0)

// After every kernel launch: catches bad launch configurations at once.
#define CUDA_CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())

#define CUBLAS_CHECK(expr)                                                                     \
  do {                                                                                         \
    cublasStatus_t st_ = (expr);                                                               \
    CHECK(st_ == CUBLAS_STATUS_SUCCESS) << #expr << " failed: " << cublasGetStatusString(st_); \
  } while (0)

#endif  // MODAMBA_KERNELS_CUDA_CHECK_H_
