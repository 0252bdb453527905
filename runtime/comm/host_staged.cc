#include "runtime/comm/host_staged.h"

#include <utility>

#include <ATen/ATen.h>

namespace kp::comm {
namespace {

// Work that finished before it was handed out (async calls run synchronously
// here: the copies back must follow the transfer anyway).
class DoneWork final : public Work {
 public:
  explicit DoneWork(absl::Status status) : status_(std::move(status)) {}
  absl::Status Wait() override { return status_; }
  bool Done() override { return true; }

 private:
  absl::Status status_;
};

// Waits for the inner transfer, then copies the staged receive buffer into
// the caller's tensor.
class CopyBackWork final : public Work {
 public:
  CopyBackWork(std::unique_ptr<Work> inner, at::Tensor staged, at::Tensor target)
      : inner_(std::move(inner)), staged_(std::move(staged)), target_(std::move(target)) {}
  absl::Status Wait() override {
    if (waited_) return status_;
    waited_ = true;
    status_ = inner_->Wait();
    if (status_.ok() && target_.defined() && !target_.is_same(staged_)) target_.copy_(staged_);
    return status_;
  }
  bool Done() override { return waited_ || inner_->Done(); }

 private:
  std::unique_ptr<Work> inner_;
  at::Tensor staged_, target_;
  bool waited_ = false;
  absl::Status status_;
};

class HostStaged final : public Communicator {
 public:
  HostStaged(std::unique_ptr<Communicator> inner, c10::Device staging)
      : inner_(std::move(inner)), staging_(staging) {}

  int rank() const override { return inner_->rank(); }
  int size() const override { return inner_->size(); }
  std::string backend() const override { return inner_->backend() + "+host-staged"; }

  absl::Status AllReduce(at::Tensor& tensor, ReduceOp op) override {
    at::Tensor h = Stage(tensor);
    KP_RETURN_IF_ERROR(inner_->AllReduce(h, op));
    Unstage(h, tensor);
    return absl::OkStatus();
  }
  std::unique_ptr<Work> AllReduceAsync(at::Tensor tensor, ReduceOp op) override {
    return std::make_unique<DoneWork>(AllReduce(tensor, op));
  }
  absl::Status AllGather(const at::Tensor& input, at::Tensor& output) override {
    at::Tensor out = Stage(output, /*copy=*/false);
    KP_RETURN_IF_ERROR(inner_->AllGather(Stage(input), out));
    Unstage(out, output);
    return absl::OkStatus();
  }
  std::unique_ptr<Work> AllGatherAsync(at::Tensor input, at::Tensor output) override {
    return std::make_unique<DoneWork>(AllGather(input, output));
  }
  absl::Status ReduceScatter(const at::Tensor& input, at::Tensor& output, ReduceOp op) override {
    at::Tensor out = Stage(output, /*copy=*/false);
    KP_RETURN_IF_ERROR(inner_->ReduceScatter(Stage(input), out, op));
    Unstage(out, output);
    return absl::OkStatus();
  }
  absl::Status Broadcast(at::Tensor& tensor, int root) override {
    at::Tensor h = Stage(tensor);
    KP_RETURN_IF_ERROR(inner_->Broadcast(h, root));
    Unstage(h, tensor);
    return absl::OkStatus();
  }
  std::unique_ptr<Work> SendRecvAsync(at::Tensor send, int dst, at::Tensor recv, int src) override {
    at::Tensor staged_recv = recv.defined() ? Stage(recv, /*copy=*/false) : at::Tensor();
    auto work = inner_->SendRecvAsync(send.defined() ? Stage(send) : at::Tensor(), dst, staged_recv, src);
    return std::make_unique<CopyBackWork>(std::move(work), staged_recv, recv);
  }
  absl::Status Barrier() override { return inner_->Barrier(); }
  absl::StatusOr<std::unique_ptr<Communicator>> Split(int color, int key) override {
    KP_ASSIGN_OR_RETURN(auto child, inner_->Split(color, key));
    if (child == nullptr) return child;
    return MakeHostStaged(std::move(child), staging_);
  }
  void Abort(const absl::Status& reason) override { inner_->Abort(reason); }
  absl::StatusOr<std::unique_ptr<Communicator>> Shrink(const std::vector<int>& exclude) override {
    KP_ASSIGN_OR_RETURN(auto child, inner_->Shrink(exclude));
    return MakeHostStaged(std::move(child), staging_);
  }
  std::chrono::milliseconds timeout() const override { return inner_->timeout(); }
  std::optional<PendingOp> OldestPendingOp() override { return inner_->OldestPendingOp(); }

 private:
  // The tensor on the staging device (contiguous, as the backends need);
  // copy = false only allocates (output buffers).
  at::Tensor Stage(const at::Tensor& t, bool copy = true) const {
    if (t.device() == staging_ && t.is_contiguous()) return t;
    if (!copy) return at::empty(t.sizes(), t.options().device(staging_));
    return t.to(staging_, /*non_blocking=*/false, /*copy=*/true).contiguous();
  }
  static void Unstage(const at::Tensor& staged, at::Tensor& target) {
    if (!staged.is_same(target)) target.copy_(staged);
  }

  std::unique_ptr<Communicator> inner_;
  c10::Device staging_;
};

}  // namespace

std::unique_ptr<Communicator> MakeHostStaged(std::unique_ptr<Communicator> inner, c10::Device staging) {
  return std::make_unique<HostStaged>(std::move(inner), staging);
}

}  // namespace kp::comm
