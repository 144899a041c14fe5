// AdamW on fp32 master weights, one fused pass (read g, p, m, v; write p, m, v).
#include "kernels/cuda_check.h"
#include "kernels/device_utils.cuh"
#include "kernels/kernels.h"

namespace modamba::cuda {
namespace {

__device__ __forceinline__ void Update(const AdamWArgs& a, float g, float& p, float& m, float& v) {
  g *= a.grad_scale;
  m = a.beta1 * m + (1.f - a.beta1) * g;
  v = a.beta2 * v + (1.f - a.beta2) * g * g;
  const float mhat = m / a.bias_c1, vhat = v / a.bias_c2;
  p -= a.lr * (mhat / (sqrtf(vhat) + a.eps) + a.weight_decay * p);
}

__global__ void AdamWKernel(AdamWArgs a, int64_t n, const float* grad, float* param, float* m,
                            float* v) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += stride) {
    float p = param[i], mi = m[i], vi = v[i];
    Update(a, grad[i], p, mi, vi);
    param[i] = p;
    m[i] = mi;
    v[i] = vi;
  }
}

__global__ void AdamWKernel4(AdamWArgs a, int64_t n4, const float4* grad, float4* param, float4* m,
                             float4* v) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n4; i += stride) {
    float4 g = grad[i], p = param[i], mi = m[i], vi = v[i];
    Update(a, g.x, p.x, mi.x, vi.x);
    Update(a, g.y, p.y, mi.y, vi.y);
    Update(a, g.z, p.z, mi.z, vi.z);
    Update(a, g.w, p.w, mi.w, vi.w);
    param[i] = p;
    m[i] = mi;
    v[i] = vi;
  }
}

bool Aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace

void AdamW(const AdamWArgs& a, int64_t n, const float* grad, float* param, float* m, float* v,
           cudaStream_t stream) {
  if (n == 0) return;
  constexpr int kThreads = 256;
  if (n % 4 == 0 && Aligned16(grad) && Aligned16(param) && Aligned16(m) && Aligned16(v)) {
    AdamWKernel4<<<GridFor(n / 4, kThreads, 8192), kThreads, 0, stream>>>(
        a, n / 4, reinterpret_cast<const float4*>(grad), reinterpret_cast<float4*>(param),
        reinterpret_cast<float4*>(m), reinterpret_cast<float4*>(v));
  } else {
    AdamWKernel<<<GridFor(n, kThreads, 8192), kThreads, 0, stream>>>(a, n, grad, param, m, v);
  }
  CUDA_CHECK_LAUNCH();
}

}  // namespace modamba::cuda
