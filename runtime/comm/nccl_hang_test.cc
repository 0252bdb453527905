// A hung NCCL call on one GPU (issue 12): a receive that no peer answers,
// held behind a stream that never completes (one rank cannot hang NCCL by
// itself otherwise: a receive from self without a send is rejected or
// completes), must be aborted by the Watchdog within timeout + grace (+
// slack), end with ABORTED / DEADLINE_EXCEEDED, and leave the process
// usable: a new communicator formed afterwards reduces correctly and CUDA
// still computes. Prints "[hung_nccl] detect_s=<seconds>" for the results
// table. Skips without a GPU; the lead runs it on an H100.
#include <cuda_runtime_api.h>

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/Sleep.h>
#include <c10/cuda/CUDAGuard.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "kernels/gpu_test_util.h"
#include "runtime/comm/nccl_communicator.h"
#include "runtime/comm/store.h"
#include "runtime/comm/watchdog.h"

namespace kp::comm {
namespace {

using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

constexpr milliseconds kTimeout(1000);
constexpr milliseconds kGrace(200);
constexpr milliseconds kPoll(50);
constexpr milliseconds kSlack(3000);

// Holds back the stream it is enqueued on with a spinning kernel
// (at::cuda::sleep) for about `seconds`. A host function (cudaLaunchHostFunc)
// blocking the stream also blocked the host thread inside the NCCL enqueue
// on an H100 (2026-11-25), so the call never reached the watchdog; a kernel
// holds back only the GPU, as a peer that never sends does.
void HoldStream(cudaStream_t stream, double seconds) {
  int khz = 0;
  KP_CUDA_OK(cudaDeviceGetAttribute(&khz, cudaDevAttrClockRate, 0));
  c10::cuda::CUDAStream s = c10::cuda::getStreamFromExternal(stream, 0);
  c10::cuda::CUDAStreamGuard on(s);
  at::cuda::sleep(static_cast<int64_t>(seconds * khz * 1000.0));
}

std::unique_ptr<Communicator> OneRank(InMemoryStore* store) {
  NcclOptions o;
  o.timeout = kTimeout;
  o.device = 0;
  auto comm = CreateNcclCommunicator(0, 1, store, o);
  EXPECT_TRUE(comm.ok()) << comm.status();
  return comm.ok() ? std::move(*comm) : nullptr;
}

TEST(NcclHangTest, HungReceiveIsAbortedByTheWatchdogAndTheProcessStaysUsable) {
  KP_SKIP_WITHOUT_GPU();
  const auto opts = at::TensorOptions().device(at::kCUDA, 0);

  // What NCCL does with a receive from self and no send, unstalled, on a
  // communicator of its own (an error may leave it unusable): reported, not
  // asserted; one rank has no peer to wait for.
  {
    InMemoryStore probe_store;
    std::unique_ptr<Communicator> probe = OneRank(&probe_store);
    ASSERT_NE(probe, nullptr);
    at::Tensor lone = at::empty({256}, opts);
    auto w = probe->SendRecvAsync(at::Tensor(), 0, lone, 0);
    const auto t0 = Clock::now();
    while (!w->Done() && Clock::now() - t0 < milliseconds(500)) std::this_thread::sleep_for(milliseconds(10));
    std::printf("[hung_nccl] recv from self without a send, one rank: %s\n",
                w->Done() ? w->Wait().ToString().c_str() : "still pending after 0.5 s (aborted)");
    if (!w->Done()) probe->Abort(absl::AbortedError("test: an unanswered receive"));
  }
  InMemoryStore store;
  std::unique_ptr<Communicator> comm = OneRank(&store);
  ASSERT_NE(comm, nullptr);

  // The hang: a receive (with its send to self in the same group, so NCCL
  // accepts it) ordered after a stream that never completes, exactly as a
  // receive whose peer never sends. Only the watchdog can end it.
  KP_CUDA_OK(cudaDeviceSynchronize());
  at::Tensor send = at::randn({4096}, opts);
  at::Tensor recv = at::zeros({4096}, opts);
  auto side = c10::cuda::getStreamFromPool(false, 0);
  HoldStream(side.stream(), 8.0);  // > timeout + grace + slack
  Watchdog dog(Watchdog::Options{kPoll, kGrace});
  Watchdog::Scoped watch(&dog, comm.get());
  const auto t0 = Clock::now();
  std::unique_ptr<Work> work;
  {
    c10::cuda::CUDAStreamGuard on_side(side);
    // A collective, not a send/recv to self: NCCL enqueues self p2p with a
    // host-side wait on the stream (the host thread, not the GPU, was held
    // on an H100), while a collective waits on the GPU like one whose peer
    // never arrives.
    work = comm->AllReduceAsync(recv, ReduceOp::kSum);
  }
  const bool done_early = work->Done();
  // The caller's view: it waits for the receive; it must come back.
  std::optional<Clock::duration> detect;
  while (!work->Done() && Clock::now() - t0 < kTimeout + kGrace + kSlack + milliseconds(5000)) {
    std::this_thread::sleep_for(milliseconds(5));
  }
  const auto returned = Clock::now() - t0;
  if (dog.aborted_count() > 0) detect = returned;
  KP_CUDA_OK(cudaStreamSynchronize(side.stream()));  // the spin ends by itself
  const double detect_s = std::chrono::duration<double>(returned).count();
  std::printf("[hung_nccl] detect_s=%.3f (timeout %.1f s + grace %.1f s)\n", detect_s, kTimeout.count() / 1e3,
              kGrace.count() / 1e3);
  EXPECT_FALSE(done_early) << "the receive was not held back";
  ASSERT_TRUE(detect.has_value()) << "the watchdog did not abort within " << detect_s << " s";
  EXPECT_EQ(dog.aborted_count(), 1);
  EXPECT_GE(returned, kTimeout);
  EXPECT_LT(returned, kTimeout + kGrace + kSlack);
  const absl::Status waited = work->Wait();
  EXPECT_TRUE(waited.code() == absl::StatusCode::kAborted || waited.code() == absl::StatusCode::kDeadlineExceeded)
      << waited;
  // The aborted communicator refuses further calls, naming the call that hung.
  absl::Status later = comm->Barrier();
  EXPECT_EQ(later.code(), absl::StatusCode::kAborted) << later;
  EXPECT_NE(later.message().find("AllReduce"), std::string::npos) << later;

  // The process stays usable: CUDA computes, and a new communicator reduces.
  at::Tensor a = at::randn({64, 64}, opts.dtype(at::kDouble));
  at::Tensor b = at::randn({64, 64}, opts.dtype(at::kDouble));
  at::Tensor want = at::matmul(a.cpu(), b.cpu());
  EXPECT_TRUE(at::allclose(at::matmul(a, b).cpu(), want, 1e-9, 1e-9));
  InMemoryStore store2;
  std::unique_ptr<Communicator> next = OneRank(&store2);
  ASSERT_NE(next, nullptr);
  Watchdog::Scoped watch_next(&dog, next.get());
  at::Tensor x = at::randn({1000}, opts);
  at::Tensor x_before = x.cpu();
  ASSERT_TRUE(next->AllReduce(x, ReduceOp::kSum).ok());
  KP_CUDA_OK(cudaDeviceSynchronize());
  EXPECT_TRUE(at::allclose(x.cpu(), x_before, 0, 0));  // one rank: the sum is itself
  at::Tensor got = at::zeros({1000}, opts);
  at::Tensor sent = at::randn({1000}, opts);
  ASSERT_TRUE(next->SendRecvAsync(sent, 0, got, 0)->Wait().ok());
  KP_CUDA_OK(cudaDeviceSynchronize());
  EXPECT_TRUE(at::equal(got.cpu(), sent.cpu()));
  EXPECT_TRUE(next->Barrier().ok());
  EXPECT_EQ(dog.aborted_count(), 1);  // nothing else hung
}

}  // namespace
}  // namespace kp::comm
