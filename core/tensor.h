// Tensors: an owning, contiguous, row-major buffer with a dtype and a device,
// and Mat, a non-owning strided 2-D view into one. Every activation in the
// model is a matrix of [tokens, features]; column slices of a Mat (ld > cols)
// are how a fused projection output such as xz or dBC is split without copies.
#ifndef MODAMBA_CORE_TENSOR_H_
#define MODAMBA_CORE_TENSOR_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace modamba {

enum class DType { kF32, kF64, kBF16, kI32, kU8 };
enum class Device { kCpu, kCuda };

size_t DTypeSize(DType dtype);
// Safetensors spelling: "F32", "F64", "BF16", "I32", "U8".
const char* DTypeName(DType dtype);
absl::StatusOr<DType> ParseDType(absl::string_view name);
const char* DeviceName(Device device);

using Shape = std::vector<int64_t>;
int64_t NumElements(const Shape& shape);
std::string ShapeString(const Shape& shape);

// A strided matrix view: element (r, c) lives at data + (r * ld + c) * size.
struct Mat {
  void* data = nullptr;
  DType dtype = DType::kF32;
  Device device = Device::kCpu;
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t ld = 0;

  template <typename T>
  T* ptr() const { return static_cast<T*>(data); }
  // Columns [begin, begin + n) of every row.
  Mat Cols(int64_t begin, int64_t n) const;
  // Rows [begin, begin + n).
  Mat Rows(int64_t begin, int64_t n) const;
  bool contiguous() const { return ld == cols; }
};

// Memory of one device. Backends own theirs; CPU memory is plain aligned heap.
class Allocator {
 public:
  virtual ~Allocator() = default;
  virtual void* Allocate(size_t bytes) = 0;
  virtual void Free(void* ptr) = 0;
  virtual Device device() const = 0;
};
Allocator* CpuAllocator();

class Tensor {
 public:
  Tensor() = default;
  // Uninitialised storage from `allocator` (the CPU heap by default).
  Tensor(DType dtype, Shape shape, Allocator* allocator = CpuAllocator());
  // Zero-filled CPU tensor.
  static Tensor Zeros(DType dtype, Shape shape);
  // Elements [offset, offset + numel(shape)) of `base`, sharing its storage
  // (the storage lives while any view does).
  static Tensor View(const Tensor& base, int64_t offset, Shape shape);

  Tensor(Tensor&&) = default;
  Tensor& operator=(Tensor&&) = default;
  Tensor(const Tensor&) = delete;
  Tensor& operator=(const Tensor&) = delete;

  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  const Shape& shape() const { return shape_; }
  int64_t dim(int i) const { return shape_[i < 0 ? shape_.size() + i : i]; }
  int64_t numel() const { return NumElements(shape_); }
  size_t nbytes() const { return numel() * DTypeSize(dtype_); }
  bool empty() const { return data_ == nullptr; }

  void* raw() const { return data_.get(); }
  template <typename T>
  T* data() const { return static_cast<T*>(data_.get()); }

  // The tensor as [prod(shape[:-1]), shape[-1]].
  Mat mat() const;
  // A CPU copy-free reshape (same bytes, new shape of equal size).
  void Reshape(Shape shape);

 private:
  DType dtype_ = DType::kF32;
  Device device_ = Device::kCpu;
  Shape shape_;
  std::shared_ptr<void> data_;
};

}  // namespace modamba

#endif  // MODAMBA_CORE_TENSOR_H_
