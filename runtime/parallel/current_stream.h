// The current CUDA stream of a tensor's device through c10's device-generic
// interface, so the libraries that launch kp kernels link libtorch_cpu only:
// libtorch_cuda exports a bundled copy of gloo's symbols that would interpose
// on Debian's libgloo in any binary that also links the Gloo communicator
// (seen: broken gloo rendezvous).
#ifndef KP_RUNTIME_PARALLEL_CURRENT_STREAM_H_
#define KP_RUNTIME_PARALLEL_CURRENT_STREAM_H_

#include <ATen/core/Tensor.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <cuda_runtime_api.h>

namespace kp::parallel {

inline cudaStream_t CurrentStream(const at::Tensor& t) {
  const c10::impl::DeviceGuardImplInterface* impl = c10::impl::getDeviceGuardImpl(c10::kCUDA);
  return static_cast<cudaStream_t>(impl->getStream(t.device()).native_handle());
}

}  // namespace kp::parallel

#endif  // KP_RUNTIME_PARALLEL_CURRENT_STREAM_H_
