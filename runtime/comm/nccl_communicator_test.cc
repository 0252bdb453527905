// NCCL tests need GPUs; here they skip with the reason. The lead runs them on
// a GPU machine (one GPU: the 1-rank tests; two or more: the multi-rank one).
#include "runtime/comm/nccl_communicator.h"

#include <cuda_runtime_api.h>

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "kernels/gpu_test_util.h"
#include "runtime/comm/conformance.h"
#include "runtime/comm/watchdog.h"

namespace kp::comm {
namespace {

using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

TEST(NcclCommunicatorTest, OneRankConformance) {
  KP_SKIP_WITHOUT_GPU();
  InMemoryStore store;
  NcclOptions o;
  o.timeout = milliseconds(30000);
  o.device = 0;
  auto comm = CreateNcclCommunicator(0, 1, &store, o);
  ASSERT_TRUE(comm.ok()) << comm.status();
  EXPECT_EQ((*comm)->backend(), "nccl");
  auto s = testing::RunConformance(**comm, 3, c10::Device(c10::kCUDA, 0));
  EXPECT_TRUE(s.ok()) << s;
}

// Work::Wait orders the caller's current (non-default) stream after the
// collective, so reading the result on that stream sees it.
TEST(NcclCommunicatorTest, WaitOrdersTheCurrentStream) {
  KP_SKIP_WITHOUT_GPU();
  InMemoryStore store;
  NcclOptions o;
  o.device = 0;
  auto comm = CreateNcclCommunicator(0, 1, &store, o);
  ASSERT_TRUE(comm.ok()) << comm.status();
  auto side = c10::cuda::getStreamFromPool(false, 0);
  c10::cuda::CUDAStreamGuard guard(side);
  at::Tensor t = at::randn({1 << 20}, at::TensorOptions().device(at::kCUDA, 0));
  at::Tensor want = t.clone();
  auto work = (*comm)->AllReduceAsync(t, ReduceOp::kMax);
  ASSERT_TRUE(work->Wait().ok());
  t.mul_(2);
  EXPECT_TRUE(at::allclose(t.cpu(), want.cpu() * 2));
  side.synchronize();
  EXPECT_TRUE(work->Done());
  EXPECT_FALSE((*comm)->OldestPendingOp().has_value());
}

TEST(NcclCommunicatorTest, MultiGpuConformance) {
  KP_SKIP_WITHOUT_GPU();
  int n = 0;
  ASSERT_EQ(cudaGetDeviceCount(&n), cudaSuccess);
  if (n < 2) GTEST_SKIP() << "needs 2 or more GPUs; this machine has " << n;
  InMemoryStore store;
  std::vector<absl::Status> st(n);
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r) {
    threads.emplace_back([&, r] {
      c10::cuda::CUDAGuard g(static_cast<c10::DeviceIndex>(r));
      NcclOptions o;
      o.timeout = milliseconds(60000);
      o.device = r;
      auto comm = CreateNcclCommunicator(r, n, &store, o);
      st[r] = comm.ok() ? testing::RunConformance(**comm, 11, c10::Device(c10::kCUDA, r))
                        : comm.status();
    });
  }
  for (auto& t : threads) t.join();
  for (int r = 0; r < n; ++r) EXPECT_TRUE(st[r].ok()) << "rank " << r << ": " << st[r];
}

TEST(NcclCommunicatorTest, MissingPeerFailsInitWithinTimeout) {
  KP_SKIP_WITHOUT_GPU();
  InMemoryStore store;  // rank 0 never publishes an id
  NcclOptions o;
  o.timeout = milliseconds(300);
  o.device = 0;
  const auto t0 = Clock::now();
  auto comm = CreateNcclCommunicator(1, 2, &store, o);
  EXPECT_EQ(comm.status().code(), absl::StatusCode::kDeadlineExceeded) << comm.status();
  EXPECT_LT(Clock::now() - t0, milliseconds(300 + 2000));
}

// Rank 0 of two initialises and rank 1 never does: NCCL's bootstrap waits for
// it forever (the id is published, so this is NCCL's own wait, not the
// store's). The non-blocking init must be aborted with ncclCommAbort at the
// timeout, and say which call and why.
TEST(NcclCommunicatorTest, InitWithoutItsPeerIsAbortedAtTheTimeout) {
  KP_SKIP_WITHOUT_GPU();
  InMemoryStore store;
  NcclOptions o;
  o.timeout = milliseconds(1000);
  o.device = 0;
  const auto t0 = Clock::now();
  auto comm = CreateNcclCommunicator(0, 2, &store, o);
  const auto took = Clock::now() - t0;
  ASSERT_EQ(comm.status().code(), absl::StatusCode::kDeadlineExceeded) << comm.status();
  EXPECT_NE(comm.status().message().find("nccl init on rank 0 of 2"), std::string::npos)
      << comm.status();
  EXPECT_NE(comm.status().message().find("did not join"), std::string::npos) << comm.status();
  EXPECT_TRUE(store.Get("nccl_id", milliseconds(0)).ok()) << "the wait was not NCCL's";
  EXPECT_GE(took, milliseconds(1000));
  EXPECT_LT(took, milliseconds(1000 + 3000));
}

// Holds back the stream it is enqueued on, from a CUDA host function, until
// Release() or `guard` (so a broken test cannot hang the suite).
class StreamBlocker {
 public:
  StreamBlocker(cudaStream_t stream, milliseconds guard) : guard_(guard) {
    launched_ = cudaLaunchHostFunc(stream, &StreamBlocker::Run, this);
  }
  cudaError_t launched() const { return launched_; }
  void Release() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      released_ = true;
    }
    cv_.notify_all();
  }

 private:
  static void CUDART_CB Run(void* self) {
    auto* b = static_cast<StreamBlocker*>(self);
    std::unique_lock<std::mutex> lock(b->mu_);
    b->cv_.wait_for(lock, b->guard_, [b] { return b->released_; });
  }

  milliseconds guard_;
  cudaError_t launched_ = cudaSuccess;
  std::mutex mu_;
  std::condition_variable cv_;
  bool released_ = false;
};

// A collective that never completes: one rank cannot hang NCCL by itself
// (NCCL 2.28 rejects a receive from self without a matching send), so the
// collective is ordered after a stream that a host function holds back. Its
// end event never fires, exactly as for a kernel stuck on a dead peer; only
// the watchdog can end it, within timeout + grace (+ slack), and later calls
// must then fail naming the call that hung. On one rank NCCL runs the
// AllReduce as a local kernel on our stream that touches no communicator
// state, so it may still run safely after ncclCommAbort, once released.
TEST(NcclCommunicatorTest, WatchdogAbortsAStalledCollective) {
  KP_SKIP_WITHOUT_GPU();
  InMemoryStore store;
  NcclOptions o;
  o.timeout = milliseconds(1000);
  o.device = 0;
  auto comm = CreateNcclCommunicator(0, 1, &store, o);
  ASSERT_TRUE(comm.ok()) << comm.status();
  at::Tensor t = at::randn({1024}, at::TensorOptions().device(at::kCUDA, 0));
  KP_CUDA_OK(cudaDeviceSynchronize());
  auto side = c10::cuda::getStreamFromPool(false, 0);
  StreamBlocker blocker(side.stream(), milliseconds(20000));
  KP_CUDA_OK(blocker.launched());
  Watchdog dog(Watchdog::Options{milliseconds(50), milliseconds(100)});
  Watchdog::Scoped watch(&dog, comm->get());
  const auto t0 = Clock::now();
  std::unique_ptr<Work> work;
  {
    c10::cuda::CUDAStreamGuard on_side(side);
    work = (*comm)->AllReduceAsync(t, ReduceOp::kSum);
  }
  const bool done_early = work->Done();
  while (dog.aborted_count() == 0 && Clock::now() - t0 < milliseconds(10000)) {
    std::this_thread::sleep_for(milliseconds(20));
  }
  const auto took = Clock::now() - t0;
  blocker.Release();
  KP_CUDA_OK(cudaStreamSynchronize(side.stream()));
  EXPECT_FALSE(done_early) << "the collective was not held back";
  ASSERT_EQ(dog.aborted_count(), 1);
  EXPECT_GE(took, milliseconds(1000));
  EXPECT_LT(took, milliseconds(1000 + 100 + 3000));
  EXPECT_TRUE(work->Done());
  EXPECT_EQ(work->Wait().code(), absl::StatusCode::kAborted);
  absl::Status s = (*comm)->Barrier();
  EXPECT_EQ(s.code(), absl::StatusCode::kAborted) << s;
  EXPECT_NE(s.message().find("AllReduce"), std::string::npos) << s;
  EXPECT_NE(s.message().find("watchdog"), std::string::npos) << s;
}

}  // namespace
}  // namespace kp::comm
