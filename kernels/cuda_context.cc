#include "kernels/cuda_context.h"

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>

#include "kernels/cuda_check.h"

namespace modamba::cuda {
namespace {

constexpr size_t kCublasWorkspace = 32u << 20;  // what cuBLAS suggests for Hopper
constexpr int kSideLanes = 3;                   // one per modality of a tri-modal model

// Stream-ordered allocations: a free returns memory to the pool in stream
// order, so a buffer is reused only by work queued after its last use.
class PoolAllocator : public Allocator {
 public:
  PoolAllocator(int device, cudaMemPool_t pool, cudaStream_t stream)
      : device_(device), pool_(pool), stream_(stream) {}
  void* Allocate(size_t bytes) override {
    void* p = nullptr;
    cudaError_t err = cudaMallocFromPoolAsync(&p, bytes == 0 ? 16 : bytes, pool_, stream_);
    CHECK(err == cudaSuccess) << "out of GPU memory on device " << device_ << " allocating "
                              << bytes << " bytes: " << cudaGetErrorString(err);
    return p;
  }
  void Free(void* ptr) override { CUDA_CHECK(cudaFreeAsync(ptr, stream_)); }
  Device device() const override { return Device::kCuda; }

 private:
  int device_;
  cudaMemPool_t pool_;
  cudaStream_t stream_;
};

}  // namespace

DeviceContext::DeviceContext(int device) : device_(device) {
  CUDA_CHECK(cudaSetDevice(device));
  CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool_, device));
  uint64_t keep_all = UINT64_MAX;  // cache freed memory instead of returning it to the driver
  CUDA_CHECK(cudaMemPoolSetAttribute(pool_, cudaMemPoolAttrReleaseThreshold, &keep_all));
  // A fixed workspace keeps cuBLAS's algorithm choice, and so its results,
  // the same from run to run (and the same on every lane).
  auto make_handle = [&](cudaStream_t stream) {
    cublasHandle_t handle;
    void* workspace = nullptr;
    CUBLAS_CHECK(cublasCreate(&handle));
    CUBLAS_CHECK(cublasSetStream(handle, stream));
    CUDA_CHECK(cudaMalloc(&workspace, kCublasWorkspace));
    CUBLAS_CHECK(cublasSetWorkspace(handle, workspace, kCublasWorkspace));
    cublas_workspaces_.push_back(workspace);
    return handle;
  };
  lanes_.main = make_handle(stream_);
  CUDA_CHECK(cudaEventCreateWithFlags(&lanes_.fork, cudaEventDisableTiming));
  for (int i = 0; i < kSideLanes; ++i) {
    cudaStream_t side;
    cudaEvent_t done;
    CUDA_CHECK(cudaStreamCreateWithFlags(&side, cudaStreamNonBlocking));
    CUDA_CHECK(cudaEventCreateWithFlags(&done, cudaEventDisableTiming));
    lanes_.side.push_back(make_handle(side));
    lanes_.done.push_back(done);
  }
  CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&error_flag_), sizeof(int)));
  CUDA_CHECK(cudaMemset(error_flag_, 0, sizeof(int)));
  allocator_ = std::make_unique<PoolAllocator>(device, pool_, stream_);
}

void DeviceContext::SyncAndCheck() {
  CUDA_CHECK(cudaStreamSynchronize(stream_));
  int flag = 0;
  CUDA_CHECK(cudaMemcpy(&flag, error_flag_, sizeof(int), cudaMemcpyDeviceToHost));
  CHECK_EQ(flag, 0) << "a token, target or row id on device " << device_
                    << " was outside the vocabulary or the matrix";
}

int64_t DeviceContext::BytesInUse() const {
  uint64_t v = 0;
  CUDA_CHECK(cudaMemPoolGetAttribute(pool_, cudaMemPoolAttrUsedMemCurrent, &v));
  return static_cast<int64_t>(v);
}

int64_t DeviceContext::PeakBytes() const {
  uint64_t v = 0;
  CUDA_CHECK(cudaMemPoolGetAttribute(pool_, cudaMemPoolAttrUsedMemHigh, &v));
  return static_cast<int64_t>(v);
}

void DeviceContext::ResetPeak() {
  uint64_t zero = 0;
  CUDA_CHECK(cudaMemPoolSetAttribute(pool_, cudaMemPoolAttrUsedMemHigh, &zero));
}

DeviceContext& ContextFor(int device) {
  static std::mutex* mu = new std::mutex;
  static auto* contexts = new std::map<int, std::unique_ptr<DeviceContext>>;
  std::lock_guard<std::mutex> lock(*mu);
  auto& ctx = (*contexts)[device];
  if (ctx == nullptr) ctx = std::make_unique<DeviceContext>(device);
  CUDA_CHECK(cudaSetDevice(device));
  return *ctx;
}

}  // namespace modamba::cuda
