#include "kernels/swiglu.h"

#include <cmath>
#include <vector>

#include <gtest/gtest.h>

#include "kernels/bf16_test_util.h"
#include "kernels/gpu_test_util.h"

namespace kp::kernels {
namespace {

using testing::Bf16Close;
using testing::DeviceBuffer;
using testing::RandomBf16;

double SiluF64(double g) { return g / (1.0 + std::exp(-g)); }

TEST(SwiGluReference, ForwardMatchesFloat64) {
  const int64_t rows = 13, cols = 29;
  const std::vector<float> gu = RandomBf16(rows * 2 * cols, 1, 3.0f).values;
  std::vector<float> out(rows * cols);
  SwiGluForwardReference(gu.data(), rows, cols, out.data());
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      const double want = SiluF64(gu[r * 2 * cols + c]) * gu[r * 2 * cols + cols + c];
      ASSERT_NEAR(out[r * cols + c], want, 1e-6 * (1 + std::abs(want)));
    }
  }
}

TEST(SwiGluReference, BackwardMatchesFloat64FiniteDifferences) {
  // d/dg and d/du of sum(dout * silu(g) * u) by central differences in
  // float64, element by element.
  const int64_t rows = 5, cols = 11;
  const std::vector<float> gu = RandomBf16(rows * 2 * cols, 2, 3.0f).values;
  const std::vector<float> dout = RandomBf16(rows * cols, 3).values;
  std::vector<float> grad(rows * 2 * cols);
  SwiGluBackwardReference(dout.data(), gu.data(), rows, cols, grad.data());
  const double h = 1e-6;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      const double g = gu[r * 2 * cols + c], u = gu[r * 2 * cols + cols + c];
      const double d = dout[r * cols + c];
      const double dg = d * u * (SiluF64(g + h) - SiluF64(g - h)) / (2 * h);
      const double du = d * SiluF64(g);
      EXPECT_NEAR(grad[r * 2 * cols + c], dg, 1e-5 * (1 + std::abs(dg)));
      EXPECT_NEAR(grad[r * 2 * cols + cols + c], du, 1e-5 * (1 + std::abs(du)));
    }
  }
}

struct Shape {
  int64_t rows, cols, stride;  // stride: gate_up's row stride (>= 2 cols)
};

// Odd row counts, columns on and off the 16-byte path, and a padded row
// stride (a gate_up that is a slice of a wider tensor).
std::vector<Shape> Shapes() {
  return {{1, 8, 16}, {37, 64, 128}, {5, 13, 26}, {129, 5632, 11264}, {3, 24, 56}, {7, 9, 21}};
}

template <typename T>
bool Upload(const DeviceBuffer& d, const std::vector<T>& h) {
  return d.get() && cudaMemcpy(d.get(), h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice) ==
                        cudaSuccess;
}

std::vector<float> DownloadBf16(const DeviceBuffer& d, size_t n) {
  std::vector<__nv_bfloat16> h(n);
  cudaMemcpy(h.data(), d.get(), n * sizeof(__nv_bfloat16), cudaMemcpyDeviceToHost);
  return testing::ToFloat(h);
}

// The contiguous [rows, 2 cols] copy of a strided gate_up, for the reference.
std::vector<float> Compact(const std::vector<float>& v, const Shape& s) {
  std::vector<float> out;
  for (int64_t r = 0; r < s.rows; ++r) {
    out.insert(out.end(), v.begin() + r * s.stride, v.begin() + r * s.stride + 2 * s.cols);
  }
  return out;
}

TEST(SwiGluCuda, ForwardAndBackwardMatchReference) {
  KP_SKIP_WITHOUT_GPU();
  uint32_t seed = 10;
  for (const Shape& s : Shapes()) {
    SCOPED_TRACE("rows " + std::to_string(s.rows) + " cols " + std::to_string(s.cols) +
                 " stride " + std::to_string(s.stride));
    const testing::Bf16Data gu = RandomBf16(s.rows * s.stride, ++seed, 3.0f);
    const testing::Bf16Data dout = RandomBf16(s.rows * s.cols, ++seed);
    DeviceBuffer dgu(gu.bits.size() * 2), ddout(dout.bits.size() * 2), dout_dev(s.rows * s.cols * 2),
        dgrad(s.rows * 2 * s.cols * 2);
    ASSERT_TRUE(Upload(dgu, gu.bits) && Upload(ddout, dout.bits) && dout_dev.get() && dgrad.get());
    KP_CUDA_OK(SwiGluForward(dgu.get(), s.stride, s.rows, s.cols, dout_dev.get(), nullptr));
    KP_CUDA_OK(SwiGluBackward(ddout.get(), s.cols, dgu.get(), s.stride, s.rows, s.cols,
                              dgrad.get(), nullptr));
    KP_CUDA_OK(cudaDeviceSynchronize());
    const std::vector<float> compact = Compact(gu.values, s);
    std::vector<float> want_out(s.rows * s.cols), want_grad(s.rows * 2 * s.cols);
    SwiGluForwardReference(compact.data(), s.rows, s.cols, want_out.data());
    SwiGluBackwardReference(dout.values.data(), compact.data(), s.rows, s.cols, want_grad.data());
    EXPECT_TRUE(Bf16Close(DownloadBf16(dout_dev, want_out.size()), want_out, "out"));
    EXPECT_TRUE(Bf16Close(DownloadBf16(dgrad, want_grad.size()), want_grad, "dgate_up"));
  }
}

TEST(SwiGluCuda, Bandwidth) {
  KP_SKIP_WITHOUT_GPU();
  // The 1.3B model's MLP: 16384 tokens x ffn_hidden 5632.
  const int64_t rows = 16384, cols = 5632;
  const testing::Bf16Data gu = RandomBf16(rows * 2 * cols, 20, 3.0f);
  const testing::Bf16Data dout = RandomBf16(rows * cols, 21);
  DeviceBuffer dgu(rows * 2 * cols * 2), ddout(rows * cols * 2), dout_dev(rows * cols * 2),
      dgrad(rows * 2 * cols * 2);
  ASSERT_TRUE(Upload(dgu, gu.bits) && Upload(ddout, dout.bits) && dout_dev.get() && dgrad.get());
  const double elems = static_cast<double>(rows) * cols;
  // forward: read gate and up, write out; backward: read dout, gate, up, write dgate, dup.
  const double fwd = testing::MeasureBandwidth("swiglu_forward 16384x5632", elems * 3 * 2, [&] {
    return SwiGluForward(dgu.get(), 2 * cols, rows, cols, dout_dev.get(), nullptr);
  });
  const double bwd = testing::MeasureBandwidth("swiglu_backward 16384x5632", elems * 5 * 2, [&] {
    return SwiGluBackward(ddout.get(), cols, dgu.get(), 2 * cols, rows, cols, dgrad.get(),
                          nullptr);
  });
  KP_CUDA_OK(cudaDeviceSynchronize());
  EXPECT_GT(fwd, 300.0);
  EXPECT_GT(bwd, 300.0);
}

}  // namespace
}  // namespace kp::kernels
