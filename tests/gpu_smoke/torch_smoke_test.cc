// libtorch links and computes: a CPU op against a float64 loop, and a CUDA op
// (bf16 GEMM through cuBLAS) against the CPU in float64.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <gtest/gtest.h>

#include "kernels/gpu_test_util.h"

namespace {

TEST(TorchSmoke, CpuMatmulMatchesLoop) {
  at::manual_seed(1);
  at::Tensor a = at::randn({17, 33}, at::kFloat);
  at::Tensor b = at::randn({33, 9}, at::kFloat);
  at::Tensor c = at::matmul(a, b);
  auto A = a.accessor<float, 2>();
  auto B = b.accessor<float, 2>();
  for (int i = 0; i < 17; ++i) {
    for (int j = 0; j < 9; ++j) {
      double s = 0;
      for (int k = 0; k < 33; ++k) s += double(A[i][k]) * B[k][j];
      ASSERT_NEAR(c[i][j].item<float>(), s, 1e-4);
    }
  }
}

TEST(TorchSmoke, CudaBf16MatmulMatchesCpuFloat64) {
  KP_SKIP_WITHOUT_GPU();
  ASSERT_TRUE(at::cuda::is_available());
  at::manual_seed(2);
  at::Tensor a = at::randn({512, 1024}, at::kDouble);
  at::Tensor b = at::randn({1024, 256}, at::kDouble);
  at::Tensor want = at::matmul(a, b);
  at::Tensor got =
      at::matmul(a.to(at::kCUDA, at::kBFloat16), b.to(at::kCUDA, at::kBFloat16)).to(at::kCPU, at::kDouble);
  double rel = (got - want).norm().item<double>() / want.norm().item<double>();
  // bf16 operands with fp32 accumulation: relative error ~ 2^-8.
  EXPECT_LT(rel, 1e-2) << "relative error " << rel;
  EXPECT_GT(rel, 0.0);
  std::printf("[smoke] %s: bf16 GEMM 512x1024x256 rel err vs float64 %.2e\n",
              at::cuda::getCurrentDeviceProperties()->name, rel);
}

}  // namespace
