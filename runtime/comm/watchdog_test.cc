#include "runtime/comm/watchdog.h"

#include <ATen/ATen.h>

#include <condition_variable>
#include <mutex>
#include <thread>

#include <gtest/gtest.h>

#include "runtime/comm/fake_communicator.h"
#include "runtime/comm/work_queue.h"

namespace kp::comm {
namespace {

using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

// Like a NCCL communicator whose kernel waits on a dead peer: AllReduce never
// finishes by itself, whatever the timeout says; only Abort ends it.
class HangingCommunicator final : public Communicator {
 public:
  explicit HangingCommunicator(milliseconds timeout) : timeout_(timeout) {}
  int rank() const override { return 0; }
  int size() const override { return 2; }
  std::string backend() const override { return "hang"; }
  std::chrono::milliseconds timeout() const override { return timeout_; }
  absl::Status AllReduce(at::Tensor& t, ReduceOp op) override {
    return AllReduceAsync(t, op)->Wait();
  }
  std::unique_ptr<Work> AllReduceAsync(at::Tensor, ReduceOp) override {
    return queue_.Enqueue("AllReduce", [this] {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return released_; });
      return absl::OkStatus();
    });
  }
  absl::Status AllGather(const at::Tensor&, at::Tensor&) override { return Unimplemented(); }
  std::unique_ptr<Work> AllGatherAsync(at::Tensor, at::Tensor) override {
    return CompletedWork(Unimplemented());
  }
  absl::Status ReduceScatter(const at::Tensor&, at::Tensor&, ReduceOp) override {
    return Unimplemented();
  }
  absl::Status Broadcast(at::Tensor&, int) override { return Unimplemented(); }
  std::unique_ptr<Work> SendRecvAsync(at::Tensor, int, at::Tensor, int) override {
    return CompletedWork(Unimplemented());
  }
  absl::Status Barrier() override { return Unimplemented(); }
  absl::StatusOr<std::unique_ptr<Communicator>> Split(int, int) override {
    return Unimplemented();
  }
  void Abort(const absl::Status& reason) override {
    queue_.Abort(reason);
    Release();
  }
  std::optional<PendingOp> OldestPendingOp() override { return queue_.Running(); }
  void Release() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      released_ = true;
    }
    cv_.notify_all();
  }
  ~HangingCommunicator() override { Release(); }

 private:
  static absl::Status Unimplemented() { return absl::UnimplementedError("not in this double"); }
  milliseconds timeout_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool released_ = false;
  WorkQueue queue_;  // last: joined before the members its calls use
};

TEST(WatchdogTest, AbortsACallThatOutlivesItsTimeout) {
  Watchdog dog(Watchdog::Options{milliseconds(20), milliseconds(50)});
  HangingCommunicator comm(milliseconds(200));
  Watchdog::Scoped watch(&dog, &comm);
  at::Tensor t = at::ones({4});
  const auto t0 = Clock::now();
  absl::Status s = comm.AllReduce(t, ReduceOp::kSum);
  const auto took = Clock::now() - t0;
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded) << s;
  EXPECT_NE(s.message().find("AllReduce on rank 0"), std::string::npos) << s;
  EXPECT_NE(s.message().find("200 ms"), std::string::npos) << s;
  EXPECT_GE(took, milliseconds(200));
  EXPECT_LT(took, milliseconds(200 + 50 + 2000));
  EXPECT_EQ(dog.aborted_count(), 1);
  // Later calls fail at once.
  EXPECT_EQ(comm.AllReduce(t, ReduceOp::kSum).code(), absl::StatusCode::kAborted);
}

TEST(WatchdogTest, LeavesHealthyCommunicatorsAlone) {
  Watchdog dog(Watchdog::Options{milliseconds(10), milliseconds(0)});
  FakeWorld world(2, milliseconds(300));
  auto c0 = world.Join(0), c1 = world.Join(1);
  Watchdog::Scoped w0(&dog, c0.get()), w1(&dog, c1.get());
  for (int i = 0; i < 20; ++i) {
    at::Tensor a = at::randn({16}), b = at::randn({16});
    std::thread other([&] { EXPECT_TRUE(c1->AllReduce(b, ReduceOp::kSum).ok()); });
    EXPECT_TRUE(c0->AllReduce(a, ReduceOp::kSum).ok());
    other.join();
  }
  EXPECT_EQ(dog.aborted_count(), 0);
}

// A rank that never joins: with the watchdog on, its peers still end with
// DEADLINE_EXCEEDED within the timeout plus slack.
TEST(WatchdogTest, PeerThatNeverJoinsEndsInDeadline) {
  Watchdog dog(Watchdog::Options{milliseconds(10), milliseconds(20)});
  FakeWorld world(3, milliseconds(250));
  auto c0 = world.Join(0), c1 = world.Join(1);
  Watchdog::Scoped w0(&dog, c0.get()), w1(&dog, c1.get());
  absl::Status s1;
  at::Tensor a = at::randn({16}), b = at::randn({16});
  const auto t0 = Clock::now();
  std::thread other([&] { s1 = c1->AllReduce(b, ReduceOp::kSum); });
  absl::Status s0 = c0->AllReduce(a, ReduceOp::kSum);
  other.join();
  EXPECT_LT(Clock::now() - t0, milliseconds(250 + 1500));
  EXPECT_EQ(s0.code(), absl::StatusCode::kDeadlineExceeded) << s0;
  EXPECT_EQ(s1.code(), absl::StatusCode::kDeadlineExceeded) << s1;
}

}  // namespace
}  // namespace kp::comm
