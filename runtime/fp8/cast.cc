#include "runtime/fp8/cast.h"

#include <ATen/ATen.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>

#include "kernels/fp8_cast.h"

namespace kp::fp8 {
namespace {

at::ScalarType Fp8Dtype(kernels::Fp8Format f) {
  return f == kernels::Fp8Format::kE4M3 ? at::kFloat8_e4m3fn : at::kFloat8_e5m2;
}

}  // namespace

void* CurrentCudaStream(const at::Device& device) {
  const c10::impl::DeviceGuardImplInterface* impl = c10::impl::getDeviceGuardImpl(at::kCUDA);
  return impl->getStream(device).native_handle();
}

Fp8Cast CastToFp8(const at::Tensor& x_in, int role, Fp8LayerState& state, Fp8Recipe recipe,
                  int64_t margin, CastRequest request) {
  KP_CHECK(x_in.dim() == 2);
  KP_CHECK(x_in.scalar_type() == at::kFloat || x_in.scalar_type() == at::kBFloat16);
  KP_CHECK(x_in.device() == state.scale.device());
  const at::Tensor x = x_in.contiguous();
  const int64_t rows = x.size(0), cols = x.size(1);
  const kernels::Fp8Format format = RoleFormat(role);
  const auto opts = x.options().dtype(Fp8Dtype(format));
  Fp8Cast out;
  if (request.want_data) out.data = at::empty({rows, cols}, opts);
  if (request.want_transposed) out.data_t = at::empty({cols, rows}, opts);

  kernels::Fp8CastArgs a;
  a.input = x.data_ptr();
  a.input_type = x.scalar_type() == at::kFloat ? kernels::Fp8InputType::kFloat32
                                               : kernels::Fp8InputType::kBFloat16;
  a.rows = rows;
  a.cols = cols;
  a.format = format;
  a.out = request.want_data ? static_cast<uint8_t*>(out.data.data_ptr()) : nullptr;
  a.out_t = request.want_transposed ? static_cast<uint8_t*>(out.data_t.data_ptr()) : nullptr;
  a.margin = static_cast<int>(margin);
  a.accumulate = true;
  a.amax_out = state.amax_history.data_ptr<float>() + role * state.amax_history.size(1);
  a.underflow_out =
      reinterpret_cast<unsigned long long*>(state.underflow.data_ptr<int64_t>() + role);
  float* scale = state.scale.data_ptr<float>() + role;
  a.scale_inv_out = state.scale_inv.data_ptr<float>() + role;

  if (x.is_cuda()) {
    const cudaStream_t stream = static_cast<cudaStream_t>(CurrentCudaStream(x.device()));
    at::Tensor amax_now;
    if (recipe == Fp8Recipe::kCurrent) {
      amax_now = at::empty({1}, x.options().dtype(at::kFloat));
      const cudaError_t err = kernels::Fp8Amax(a.input, a.input_type, rows * cols,
                                               amax_now.data_ptr<float>(), stream);
      TORCH_CHECK(err == cudaSuccess, "Fp8Amax: ", cudaGetErrorString(err));
      a.amax_for_scale = amax_now.data_ptr<float>();
      a.scale_out = scale;
    } else {
      a.scale = scale;
    }
    const cudaError_t err = kernels::Fp8CastScaled(a, stream);
    TORCH_CHECK(err == cudaSuccess, "Fp8CastScaled: ", cudaGetErrorString(err));
  } else {
    KP_CHECK(x.device().is_cpu());
    float amax_now = 0.0f;
    if (recipe == Fp8Recipe::kCurrent) {
      amax_now = kernels::Fp8AmaxReference(a.input, a.input_type, rows * cols);
      a.amax_for_scale = &amax_now;
      a.scale_out = scale;
    } else {
      a.scale = scale;
    }
    kernels::Fp8CastReference(a);
  }
  return out;
}

at::Tensor Fp8ToFloat(const at::Tensor& fp8) { return fp8.to(at::kFloat); }

}  // namespace kp::fp8
