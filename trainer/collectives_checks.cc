#include "trainer/collectives_checks.h"

#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/status_macros.h"
#include "trainer/flat_bucket.h"

namespace modamba {
namespace {

// Element i on rank r: small integers, negative ones too, exact in any dtype
// and in any order of summation (BF16 sums of up to 8 ranks stay below 256).
double Value(DType dtype, int r, int64_t i) {
  if (dtype == DType::kBF16) return static_cast<double>((i * 3 + r * 5) % 32);
  return static_cast<double>((i * 7 + r * 13) % 4099 - 2000);
}

std::vector<char> Encode(DType dtype, const std::vector<double>& values) {
  std::vector<char> bytes(values.size() * DTypeSize(dtype));
  for (size_t i = 0; i < values.size(); ++i) {
    if (dtype == DType::kF64) {
      memcpy(bytes.data() + 8 * i, &values[i], 8);
    } else {
      const float f = static_cast<float>(values[i]);
      if (dtype == DType::kF32) {
        memcpy(bytes.data() + 4 * i, &f, 4);
      } else {  // BF16: the high half of an exactly representable float
        uint32_t bits;
        memcpy(&bits, &f, 4);
        const uint16_t half = bits >> 16;
        memcpy(bytes.data() + 2 * i, &half, 2);
      }
    }
  }
  return bytes;
}

std::vector<double> Decode(DType dtype, const std::vector<char>& bytes) {
  std::vector<double> values(bytes.size() / DTypeSize(dtype));
  for (size_t i = 0; i < values.size(); ++i) {
    if (dtype == DType::kF64) {
      memcpy(&values[i], bytes.data() + 8 * i, 8);
    } else if (dtype == DType::kF32) {
      float f;
      memcpy(&f, bytes.data() + 4 * i, 4);
      values[i] = f;
    } else {
      uint16_t half;
      memcpy(&half, bytes.data() + 2 * i, 2);
      const uint32_t bits = uint32_t{half} << 16;
      float f;
      memcpy(&f, &bits, 4);
      values[i] = f;
    }
  }
  return values;
}

absl::Status Compare(absl::string_view what, DType dtype, const std::vector<double>& got,
                     const std::vector<double>& want) {
  if (got.size() != want.size()) {
    return absl::InternalError(absl::StrCat(what, " (", DTypeName(dtype), "): ", got.size(),
                                            " elements, expected ", want.size()));
  }
  for (size_t i = 0; i < got.size(); ++i) {
    if (got[i] != want[i]) {
      return absl::InternalError(absl::StrCat(what, " (", DTypeName(dtype), "): element ", i,
                                              " is ", got[i], ", expected ", want[i]));
    }
  }
  return absl::OkStatus();
}

class Harness {
 public:
  Harness(Collectives& c, TestMemory& memory, DType dtype)
      : c_(c), memory_(memory), dtype_(dtype) {}

  // Element i of this rank's data, and the same element summed over ranks.
  double Mine(int64_t i) const { return Value(dtype_, c_.rank(), i); }
  double Of(int r, int64_t i) const { return Value(dtype_, r, i); }
  double Sum(int64_t i) const {
    double s = 0;
    for (int r = 0; r < c_.world_size(); ++r) s += Value(dtype_, r, i);
    return s;
  }

  BufferView Upload(const std::vector<double>& values) {
    BufferView b = memory_.Allocate(dtype_, values.size());
    if (!values.empty()) memory_.Upload(Encode(dtype_, values).data(), b);
    return b;
  }
  std::vector<double> Read(BufferView b) {
    std::vector<char> bytes(b.bytes());
    if (!bytes.empty()) memory_.Download(b, bytes.data());
    return Decode(dtype_, bytes);
  }
  absl::Status Expect(absl::string_view what, BufferView b, const std::vector<double>& want) {
    return Compare(what, dtype_, Read(b), want);
  }

 private:
  Collectives& c_;
  TestMemory& memory_;
  const DType dtype_;
};

template <typename F>
std::vector<double> Generate(int64_t n, F f) {
  std::vector<double> v(n);
  for (int64_t i = 0; i < n; ++i) v[i] = f(i);
  return v;
}

class HostMemory : public TestMemory {
 public:
  BufferView Allocate(DType dtype, int64_t count) override {
    Tensor& t = tensors_.emplace_back(dtype, Shape{count});
    return BufferView::Of(t);
  }
  void Upload(const void* host, BufferView dst) override { memcpy(dst.data, host, dst.bytes()); }
  void Download(BufferView src, void* host) override { memcpy(host, src.data, src.bytes()); }

 private:
  std::vector<Tensor> tensors_;
};

}  // namespace

std::unique_ptr<TestMemory> NewHostMemory() { return std::make_unique<HostMemory>(); }

absl::Status CheckCollectives(Collectives& c, TestMemory& memory, absl::Span<const DType> dtypes) {
  const int n = c.world_size(), me = c.rank();
  for (DType dtype : dtypes) {
    Harness h(c, memory, dtype);
    for (int64_t count : {0, 1, 2, 7, 1001, 65539}) {
      BufferView b = h.Upload(Generate(count, [&](int64_t i) { return h.Mine(i); }));
      RETURN_IF_ERROR(c.AllReduce(b));
      RETURN_IF_ERROR(h.Expect(absl::StrCat("AllReduce of ", count), b,
                               Generate(count, [&](int64_t i) { return h.Sum(i); })));
    }
    for (int64_t per : {1, 3, 1000, 16411}) {
      const std::vector<double> want =
          Generate(per * n, [&](int64_t i) { return h.Of(i / per, i % per); });
      BufferView in = h.Upload(Generate(per, [&](int64_t i) { return h.Mine(i); }));
      BufferView out = h.Upload(std::vector<double>(per * n, 0));
      RETURN_IF_ERROR(c.AllGather(in, out));
      RETURN_IF_ERROR(h.Expect(absl::StrCat("AllGather of ", per), out, want));
      // In place: this rank's input is its slice of the output.
      BufferView full = h.Upload(
          Generate(per * n, [&](int64_t i) { return i / per == me ? h.Mine(i % per) : 0.0; }));
      RETURN_IF_ERROR(c.AllGather(full.Slice(me * per, per), full));
      RETURN_IF_ERROR(h.Expect(absl::StrCat("in-place AllGather of ", per), full, want));
    }
    for (int64_t per : {1, 5, 333, 16411}) {
      const std::vector<double> mine = Generate(per * n, [&](int64_t i) { return h.Mine(i); });
      BufferView in = h.Upload(mine);
      BufferView out = h.Upload(std::vector<double>(per, 0));
      RETURN_IF_ERROR(c.ReduceScatter(in, out));
      RETURN_IF_ERROR(h.Expect(absl::StrCat("ReduceScatter to ", per), out,
                               Generate(per, [&](int64_t i) { return h.Sum(me * per + i); })));
      RETURN_IF_ERROR(h.Expect(absl::StrCat("ReduceScatter input of ", per * n), in, mine));
      // In place: the output is this rank's slice of the input.
      RETURN_IF_ERROR(c.ReduceScatter(in, in.Slice(me * per, per)));
      RETURN_IF_ERROR(h.Expect(absl::StrCat("in-place ReduceScatter to ", per),
                               in.Slice(me * per, per),
                               Generate(per, [&](int64_t i) { return h.Sum(me * per + i); })));
    }
    for (int root = 0; root < n; ++root) {
      BufferView b = h.Upload(Generate(1001, [&](int64_t i) { return h.Mine(i); }));
      RETURN_IF_ERROR(c.Broadcast(b, root));
      RETURN_IF_ERROR(h.Expect(absl::StrCat("Broadcast from ", root), b,
                               Generate(1001, [&](int64_t i) { return h.Of(root, i); })));
    }
    // Three operations in flight at once, waited on in reverse order.
    const int64_t count = 4097, per = 1025;
    BufferView reduced = h.Upload(Generate(count, [&](int64_t i) { return h.Mine(i); }));
    BufferView gather_in = h.Upload(Generate(per, [&](int64_t i) { return h.Mine(i); }));
    BufferView gathered = h.Upload(std::vector<double>(per * n, 0));
    BufferView scatter_in = h.Upload(Generate(per * n, [&](int64_t i) { return h.Mine(i); }));
    BufferView scattered = h.Upload(std::vector<double>(per, 0));
    std::unique_ptr<Work> w1 = c.AllReduceAsync(reduced);
    std::unique_ptr<Work> w2 = c.AllGatherAsync(gather_in, gathered);
    std::unique_ptr<Work> w3 = c.ReduceScatterAsync(scatter_in, scattered);
    RETURN_IF_ERROR(w3->Wait());
    RETURN_IF_ERROR(w2->Wait());
    RETURN_IF_ERROR(w1->Wait());
    RETURN_IF_ERROR(c.Synchronize());
    RETURN_IF_ERROR(h.Expect("overlapped AllReduce", reduced,
                             Generate(count, [&](int64_t i) { return h.Sum(i); })));
    RETURN_IF_ERROR(h.Expect("overlapped AllGather", gathered,
                             Generate(per * n, [&](int64_t i) { return h.Of(i / per, i % per); })));
    RETURN_IF_ERROR(h.Expect("overlapped ReduceScatter", scattered,
                             Generate(per, [&](int64_t i) { return h.Sum(me * per + i); })));
  }
  // Wait times land where they belong: transfers apart from the small
  // synchronizing operations, Synchronize in neither.
  RETURN_IF_ERROR(c.Synchronize());
  c.TakeWaitTimes();
  std::vector<float> one = {1};
  BufferView scalar = memory.Allocate(DType::kF32, 1);
  memory.Upload(one.data(), scalar);
  RETURN_IF_ERROR(c.AllReduce(scalar));
  RETURN_IF_ERROR(c.Barrier());
  WaitTimes sync = c.TakeWaitTimes();
  std::vector<float> part(3, 1);
  BufferView in = memory.Allocate(DType::kF32, 3), out = memory.Allocate(DType::kF32, 3 * n);
  memory.Upload(part.data(), in);
  RETURN_IF_ERROR(c.AllGather(in, out));
  RETURN_IF_ERROR(c.ReduceScatter(out, in));
  RETURN_IF_ERROR(c.Synchronize());
  WaitTimes transfer = c.TakeWaitTimes();
  RETURN_IF_ERROR(c.Synchronize());
  WaitTimes none = c.TakeWaitTimes();
  if (sync.transfer_s != 0 || sync.sync_s < 0 || transfer.sync_s != 0 ||
      transfer.transfer_s < 0 || none.transfer_s != 0 || none.sync_s != 0) {
    return absl::InternalError(absl::StrCat(
        "wait times: after AllReduce and Barrier ", sync.transfer_s, " s transfer, ", sync.sync_s,
        " s sync; after AllGather and ReduceScatter ", transfer.transfer_s, " s transfer, ",
        transfer.sync_s, " s sync; after Synchronize ", none.transfer_s, " s, ", none.sync_s,
        " s (want 0 for the other kind, and nothing after Synchronize)"));
  }
  return c.Barrier();
}

absl::Status CheckFlatBuckets(Collectives& c, TestMemory& memory, DType dtype) {
  if (dtype != DType::kF32 && dtype != DType::kF64) {
    return absl::InvalidArgumentError("flat bucket check is for F32 and F64");
  }
  const int n = c.world_size(), me = c.rank();
  // 71 elements: not a multiple of 2, 3 or 4 ranks, so the last shard pads.
  ASSIGN_OR_RETURN(const FlatLayout layout,
                   FlatLayout::Create({{3, 5}, {7}, {2, 3, 4}, {1}, {11, 2}, {2}}, n));
  Harness h(c, memory, dtype);
  // Parameter values are their flat positions' values of rank 0.
  std::vector<Tensor> params;
  std::vector<const Tensor*> pointers;
  for (int i = 0; i < layout.num_params(); ++i) {
    Tensor& p = params.emplace_back(dtype, layout.shape(i));
    const std::vector<char> bytes = Encode(
        dtype, Generate(p.numel(), [&](int64_t j) { return h.Of(0, layout.offset(i) + j); }));
    memcpy(p.raw(), bytes.data(), bytes.size());
  }
  for (const Tensor& p : params) pointers.push_back(&p);
  const std::vector<double> flat = Generate(
      layout.padded_numel(), [&](int64_t i) { return i < layout.numel() ? h.Of(0, i) : 0.0; });
  ASSIGN_OR_RETURN(const Tensor host_shard, ShardOf(layout, me, pointers));
  std::vector<double> shard_values(layout.shard_numel());
  for (int64_t i = 0; i < layout.shard_numel(); ++i) {
    shard_values[i] = flat[layout.shard_offset(me) + i];
  }
  const std::vector<char> shard_bytes(host_shard.data<char>(),
                                      host_shard.data<char>() + host_shard.nbytes());
  RETURN_IF_ERROR(Compare("ShardOf", dtype, Decode(dtype, shard_bytes), shard_values));
  BufferView shard = h.Upload(shard_values);
  BufferView full = h.Upload(std::vector<double>(layout.padded_numel(), 0));
  RETURN_IF_ERROR(GatherBucket(c, layout, shard, full)->Wait());
  RETURN_IF_ERROR(h.Expect("GatherBucket", full, flat));

  // Rank r's gradient is (r + 1) * the parameters: the sum is n(n+1)/2 times.
  const double factor = n * (n + 1) / 2.0;
  BufferView grad =
      h.Upload(Generate(layout.padded_numel(), [&](int64_t i) { return flat[i] * (me + 1); }));
  BufferView grad_shard = h.Upload(std::vector<double>(layout.shard_numel(), 0));
  RETURN_IF_ERROR(ReduceScatterBucket(c, layout, grad, grad_shard)->Wait());
  RETURN_IF_ERROR(h.Expect(
      "ReduceScatterBucket", grad_shard,
      Generate(layout.shard_numel(), [&](int64_t i) { return shard_values[i] * factor; })));
  return c.Barrier();
}

}  // namespace modamba
