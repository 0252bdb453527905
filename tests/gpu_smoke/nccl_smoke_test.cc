// An NCCL communicator over every visible GPU (one process, one thread per
// device): all-reduce of random data against the CPU sum. On a one-GPU machine
// this is a one-rank communicator; the two-GPU run is tests on nvidia-h200-x2.
#include <cuda_runtime_api.h>
#include <nccl.h>

#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "kernels/gpu_test_util.h"

namespace {

#define NCCL_OK(expr)                                                              \
  do {                                                                             \
    ncclResult_t r_ = (expr);                                                      \
    ASSERT_EQ(r_, ncclSuccess) << #expr << ": " << ncclGetErrorString(r_);         \
  } while (0)

TEST(NcclSmoke, AllReduceSumOverAllGpus) {
  KP_SKIP_WITHOUT_GPU();
  int n = 0;
  KP_CUDA_OK(cudaGetDeviceCount(&n));
  const size_t count = 1 << 20;
  std::vector<std::vector<float>> host(n, std::vector<float>(count));
  std::mt19937 gen(3);
  std::normal_distribution<float> dist;
  std::vector<double> want(count, 0.0);
  for (int d = 0; d < n; ++d) {
    for (size_t i = 0; i < count; ++i) {
      host[d][i] = dist(gen);
      want[i] += host[d][i];
    }
  }
  std::vector<ncclComm_t> comms(n);
  std::vector<int> devs(n);
  for (int d = 0; d < n; ++d) devs[d] = d;
  NCCL_OK(ncclCommInitAll(comms.data(), n, devs.data()));
  std::vector<float*> buf(n);
  std::vector<cudaStream_t> streams(n);
  for (int d = 0; d < n; ++d) {
    KP_CUDA_OK(cudaSetDevice(d));
    KP_CUDA_OK(cudaMalloc(reinterpret_cast<void**>(&buf[d]), count * sizeof(float)));
    KP_CUDA_OK(cudaMemcpy(buf[d], host[d].data(), count * sizeof(float), cudaMemcpyHostToDevice));
    KP_CUDA_OK(cudaStreamCreate(&streams[d]));
  }
  NCCL_OK(ncclGroupStart());
  for (int d = 0; d < n; ++d) {
    NCCL_OK(ncclAllReduce(buf[d], buf[d], count, ncclFloat, ncclSum, comms[d], streams[d]));
  }
  NCCL_OK(ncclGroupEnd());
  for (int d = 0; d < n; ++d) {
    KP_CUDA_OK(cudaSetDevice(d));
    KP_CUDA_OK(cudaStreamSynchronize(streams[d]));
    std::vector<float> got(count);
    KP_CUDA_OK(cudaMemcpy(got.data(), buf[d], count * sizeof(float), cudaMemcpyDeviceToHost));
    for (size_t i = 0; i < count; ++i) ASSERT_NEAR(got[i], want[i], 1e-4 * n) << "gpu " << d;
    cudaFree(buf[d]);
    ncclCommDestroy(comms[d]);
  }
  int version = 0;
  ncclGetVersion(&version);
  std::printf("[smoke] NCCL %d all-reduce over %d GPU(s) of %zu floats: ok\n", version, n, count);
}

}  // namespace
