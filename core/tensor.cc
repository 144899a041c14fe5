#include "core/tensor.h"

#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "glog/logging.h"

namespace modamba {

size_t DTypeSize(DType dtype) {
  switch (dtype) {
    case DType::kF32: return 4;
    case DType::kF64: return 8;
    case DType::kBF16: return 2;
    case DType::kI32: return 4;
    case DType::kU8: return 1;
  }
  return 0;
}

const char* DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kF32: return "F32";
    case DType::kF64: return "F64";
    case DType::kBF16: return "BF16";
    case DType::kI32: return "I32";
    case DType::kU8: return "U8";
  }
  return "?";
}

absl::StatusOr<DType> ParseDType(absl::string_view name) {
  for (DType d : {DType::kF32, DType::kF64, DType::kBF16, DType::kI32, DType::kU8}) {
    if (name == DTypeName(d)) return d;
  }
  return absl::InvalidArgumentError(absl::StrCat("unsupported dtype '", name, "'"));
}

const char* DeviceName(Device device) {
  return device == Device::kCpu ? "cpu" : "cuda";
}

int64_t NumElements(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string ShapeString(const Shape& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

Mat Mat::Cols(int64_t begin, int64_t n) const {
  CHECK(begin >= 0 && begin + n <= cols) << "column slice out of range";
  Mat m = *this;
  m.data = static_cast<char*>(data) + begin * DTypeSize(dtype);
  m.cols = n;
  return m;
}

Mat Mat::Rows(int64_t begin, int64_t n) const {
  CHECK(begin >= 0 && begin + n <= rows) << "row slice out of range";
  Mat m = *this;
  m.data = static_cast<char*>(data) + begin * ld * DTypeSize(dtype);
  m.rows = n;
  return m;
}

namespace {
class HeapAllocator : public Allocator {
 public:
  void* Allocate(size_t bytes) override {
    // 64-byte alignment suits every SIMD width OpenBLAS uses.
    size_t rounded = (bytes + 63) / 64 * 64;
    void* p = std::aligned_alloc(64, rounded == 0 ? 64 : rounded);
    CHECK(p != nullptr) << "out of host memory allocating " << bytes << " bytes";
    return p;
  }
  void Free(void* ptr) override { std::free(ptr); }
  Device device() const override { return Device::kCpu; }
};
}  // namespace

Allocator* CpuAllocator() {
  static HeapAllocator* allocator = new HeapAllocator();
  return allocator;
}

Tensor::Tensor(DType dtype, Shape shape, Allocator* allocator)
    : dtype_(dtype), device_(allocator->device()), shape_(std::move(shape)) {
  for (int64_t d : shape_) CHECK_GE(d, 0) << "negative dimension";
  void* p = allocator->Allocate(nbytes());
  data_ = std::shared_ptr<void>(p, [allocator](void* q) { allocator->Free(q); });
}

Tensor Tensor::Zeros(DType dtype, Shape shape) {
  Tensor t(dtype, std::move(shape));
  std::memset(t.raw(), 0, t.nbytes());
  return t;
}

Tensor Tensor::View(const Tensor& base, int64_t offset, Shape shape) {
  CHECK(offset >= 0 && offset + NumElements(shape) <= base.numel()) << "view out of range";
  Tensor t;
  t.dtype_ = base.dtype_;
  t.device_ = base.device_;
  t.shape_ = std::move(shape);
  t.data_ = std::shared_ptr<void>(base.data_, static_cast<char*>(base.raw()) + offset * DTypeSize(base.dtype_));
  return t;
}

Mat Tensor::mat() const {
  Mat m;
  m.data = raw();
  m.dtype = dtype_;
  m.device = device_;
  m.cols = shape_.empty() ? 1 : shape_.back();
  m.rows = m.cols == 0 ? 0 : numel() / m.cols;
  m.ld = m.cols;
  return m;
}

void Tensor::Reshape(Shape shape) {
  CHECK_EQ(NumElements(shape), numel()) << "reshape changes the size";
  shape_ = std::move(shape);
}

}  // namespace modamba
