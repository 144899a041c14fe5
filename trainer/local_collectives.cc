#include "trainer/local_collectives.h"

namespace modamba {
namespace {

class LocalCollectives : public Collectives {
 public:
  explicit LocalCollectives(Backend* backend) : backend_(backend) {}
  int rank() const override { return 0; }
  int world_size() const override { return 1; }
  Device device() const override { return backend_->device(); }

  std::unique_ptr<Work> AllGatherAsync(BufferView input, BufferView output) override {
    return Copy(ValidateAllGather(*this, input, output), input, output);
  }
  std::unique_ptr<Work> ReduceScatterAsync(BufferView input, BufferView output) override {
    return Copy(ValidateReduceScatter(*this, input, output), input, output);
  }
  std::unique_ptr<Work> AllReduceAsync(BufferView buffer) override {
    return DoneWork(ValidateBuffer(*this, "AllReduce", buffer));
  }
  std::unique_ptr<Work> BroadcastAsync(BufferView buffer, int root) override {
    return DoneWork(ValidateBuffer(*this, "Broadcast", buffer));
  }
  absl::Status Barrier() override { return absl::OkStatus(); }
  absl::Status Synchronize() override { return absl::OkStatus(); }
  WaitTimes TakeWaitTimes() override { return {}; }  // nothing to wait for

 private:
  std::unique_ptr<Work> Copy(absl::Status valid, BufferView from, BufferView to) {
    if (valid.ok() && from.data != to.data) {
      auto mat = [](BufferView b) { return Mat{b.data, b.dtype, b.device, 1, b.count, b.count}; };
      backend_->Copy(mat(from), mat(to));
    }
    return DoneWork(valid);
  }

  Backend* backend_;
};

}  // namespace

std::unique_ptr<Collectives> NewLocalCollectives(Backend* backend) {
  return std::make_unique<LocalCollectives>(backend);
}

}  // namespace modamba
