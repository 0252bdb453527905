#include "runtime/worker/fault/hang_guard.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "runtime/comm/work_queue.h"

namespace kp::worker::fault {
namespace {

using std::chrono::milliseconds;

// A communicator whose AllReduce never returns by itself (a NCCL kernel
// waiting on a dead peer); only Abort ends it.
class HangingCommunicator final : public comm::Communicator {
 public:
  int rank() const override { return 1; }
  int size() const override { return 2; }
  std::string backend() const override { return "hang"; }
  std::chrono::milliseconds timeout() const override { return milliseconds(150); }
  absl::Status AllReduce(at::Tensor& t, comm::ReduceOp op) override { return AllReduceAsync(t, op)->Wait(); }
  std::unique_ptr<comm::Work> AllReduceAsync(at::Tensor, comm::ReduceOp) override {
    return queue_.Enqueue("AllReduce", [this] {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return released_; });
      return absl::OkStatus();
    });
  }
  absl::Status AllGather(const at::Tensor&, at::Tensor&) override { return No(); }
  std::unique_ptr<comm::Work> AllGatherAsync(at::Tensor, at::Tensor) override { return comm::CompletedWork(No()); }
  absl::Status ReduceScatter(const at::Tensor&, at::Tensor&, comm::ReduceOp) override { return No(); }
  absl::Status Broadcast(at::Tensor&, int) override { return No(); }
  std::unique_ptr<comm::Work> SendRecvAsync(at::Tensor, int, at::Tensor, int) override {
    return comm::CompletedWork(No());
  }
  absl::Status Barrier() override { return No(); }
  absl::StatusOr<std::unique_ptr<comm::Communicator>> Split(int, int) override { return No(); }
  void Abort(const absl::Status& reason) override {
    queue_.Abort(reason);
    Release();
  }
  std::optional<comm::PendingOp> OldestPendingOp() override { return queue_.Running(); }
  void Release() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      released_ = true;
    }
    cv_.notify_all();
  }
  ~HangingCommunicator() override { Release(); }

 private:
  static absl::Status No() { return absl::UnimplementedError("not in this double"); }
  std::mutex mu_;
  std::condition_variable cv_;
  bool released_ = false;
  comm::WorkQueue queue_;
};

TEST(HangGuard, HungCollectiveIsAbortedAndTheProcessIsToldToExit) {
  HangingCommunicator comm;
  std::atomic<int> hangs{0};
  HangGuard::Options o;
  o.exit_after = milliseconds(200);
  o.poll = milliseconds(10);
  o.on_hang = [&] { ++hangs; };
  HangGuard guard(&comm, o);
  at::Tensor t = at::randn({8});
  const auto t0 = std::chrono::steady_clock::now();
  absl::Status st = comm.AllReduce(t, comm::ReduceOp::kSum);
  EXPECT_EQ(st.code(), absl::StatusCode::kDeadlineExceeded) << st;
  EXPECT_LT(std::chrono::steady_clock::now() - t0, milliseconds(3000));
  EXPECT_TRUE(guard.aborted());
  // The process did not exit by itself (this test keeps running): the
  // guard's last resort fires once, exit_after later.
  for (int i = 0; i < 300 && hangs.load() == 0; ++i) std::this_thread::sleep_for(milliseconds(10));
  EXPECT_EQ(hangs.load(), 1);
}

TEST(HangGuard, QuietForHealthyRuns) {
  HangingCommunicator comm;
  std::atomic<int> hangs{0};
  HangGuard::Options o;
  o.exit_after = milliseconds(10);
  o.poll = milliseconds(5);
  o.on_hang = [&] { ++hangs; };
  {
    HangGuard guard(&comm, o);
    std::this_thread::sleep_for(milliseconds(100));
    EXPECT_FALSE(guard.aborted());
  }
  EXPECT_EQ(hangs.load(), 0);
}

}  // namespace
}  // namespace kp::worker::fault
