// NCCL tests need GPUs; here they skip with the reason. The lead runs them on
// a GPU machine (one GPU: the 1-rank tests; two or more: the multi-rank one).
#include "runtime/comm/nccl_communicator.h"

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

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

// A receive no peer answers (from oneself, without a send) hangs in the
// kernel; the watchdog must abort the communicator within timeout + slack.
TEST(NcclCommunicatorTest, WatchdogAbortsAHungReceive) {
  KP_SKIP_WITHOUT_GPU();
  InMemoryStore store;
  NcclOptions o;
  o.timeout = milliseconds(1000);
  o.device = 0;
  auto comm = CreateNcclCommunicator(0, 1, &store, o);
  ASSERT_TRUE(comm.ok()) << comm.status();
  Watchdog dog(Watchdog::Options{milliseconds(50), milliseconds(100)});
  Watchdog::Scoped watch(&dog, comm->get());
  at::Tensor recv = at::empty({1024}, at::TensorOptions().device(at::kCUDA, 0));
  const auto t0 = Clock::now();
  auto work = (*comm)->SendRecvAsync(at::Tensor(), 0, recv, 0);
  absl::Status s = work->Wait();
  while (dog.aborted_count() == 0 && Clock::now() - t0 < milliseconds(10000)) {
    std::this_thread::sleep_for(milliseconds(20));
  }
  EXPECT_EQ(dog.aborted_count(), 1) << "first status: " << s;
  EXPECT_LT(Clock::now() - t0, milliseconds(1000 + 100 + 3000));
  EXPECT_NE((*comm)->Barrier().code(), absl::StatusCode::kOk);
}

}  // namespace
}  // namespace kp::comm
