// GradientReducer over NCCL on CUDA tensors. Skips without a GPU; the lead
// runs it on a GPU machine (one GPU: a 1-rank communicator; two or more: one
// rank per GPU as threads).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_runtime_api.h>

#include <thread>

#include <gtest/gtest.h>

#include "kernels/gpu_test_util.h"
#include "runtime/comm/nccl_communicator.h"
#include "runtime/comm/store.h"
#include "runtime/parallel/data_parallel.h"
#include "runtime/parallel/dp_test_model.h"

namespace kp::parallel {
namespace {

using std::chrono::milliseconds;
using namespace dptest;  // NOLINT

absl::Status RunRanks(int n) {
  comm::InMemoryStore store;
  std::vector<absl::Status> st(n);
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r) {
    threads.emplace_back([&, r] {
      c10::cuda::CUDAGuard g(static_cast<c10::DeviceIndex>(r));
      comm::NcclOptions o;
      o.timeout = milliseconds(60000);
      o.device = r;
      auto c = comm::CreateNcclCommunicator(r, n, &store, o);
      if (!c.ok()) {
        st[r] = c.status();
        return;
      }
      auto got = Train(c->get(), r, 2, 1024, c10::Device(c10::kCUDA, r));
      st[r] = CompareToSingleProcess(got, 2);
    });
  }
  for (auto& t : threads) t.join();
  for (auto& s : st) KP_RETURN_IF_ERROR(s);
  return absl::OkStatus();
}

TEST(GradientReducerGpuTest, OneGpuEqualsCpuReference) {
  KP_SKIP_WITHOUT_GPU();
  auto s = RunRanks(1);
  EXPECT_TRUE(s.ok()) << s;
}

TEST(GradientReducerGpuTest, EveryGpuEqualsCpuReference) {
  KP_SKIP_WITHOUT_GPU();
  int n = 0;
  ASSERT_EQ(cudaGetDeviceCount(&n), cudaSuccess);
  if (n < 2) GTEST_SKIP() << "needs 2 or more GPUs; this machine has " << n;
  auto s = RunRanks(n);
  EXPECT_TRUE(s.ok()) << s;
}

}  // namespace
}  // namespace kp::parallel
