// FP8 against BF16 on one GPU, both sides in one run, as JSON lines:
//   - the copy bandwidth (device-to-device memcpy): the floor for the casts;
//   - GEMMs at the 1.3B config's projection shapes (16384 tokens = batch 4 x
//     seq 4096, d_model 2048, ffn 5632) and 8192^3, FP8 (E4M3, tensorwise
//     scales, fast and full accumulation) vs BF16, in TFLOP/s;
//   - each projection as a whole layer (casts + 3 GEMMs, fwd+bwd) vs BF16;
//   - the cast kernels in GB/s (bytes read + written / time) against the copy.
// Usage: fp8_bench [--iters N] [--quick]. GPU only: exits 2 with the reason
// elsewhere.
#include <cstdio>
#include <cstring>
#include <ctime>
#include <functional>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <cuda_runtime_api.h>
#include <nlohmann/json.hpp>

#include "kernels/fp8_cast.h"
#include "runtime/fp8/cast.h"
#include "runtime/fp8/device_check.h"
#include "runtime/fp8/fp8_linear.h"

namespace kp::fp8 {
namespace {

struct Env {
  std::string device;
  std::string date;
  int iters = 20;
};

void Emit(const Env& env, nlohmann::json j) {
  j["device"] = env.device;
  j["date"] = env.date;
  std::printf("%s\n", j.dump().c_str());
  std::fflush(stdout);
}

// Mean time of `fn` in microseconds over `iters` runs after 3 warm-ups,
// measured with events on ATen's current stream.
double TimeUs(const std::function<void()>& fn, int iters) {
  for (int i = 0; i < 3; ++i) fn();
  cudaStream_t stream = static_cast<cudaStream_t>(CurrentCudaStream(at::Device(at::kCUDA, 0)));
  cudaEvent_t a, b;
  cudaEventCreate(&a);
  cudaEventCreate(&b);
  cudaEventRecord(a, stream);
  for (int i = 0; i < iters; ++i) fn();
  cudaEventRecord(b, stream);
  cudaEventSynchronize(b);
  float ms = 0;
  cudaEventElapsedTime(&ms, a, b);
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  return 1000.0 * ms / iters;
}

double CopyBandwidth(const Env& env) {
  const int64_t bytes = int64_t{1} << 30;
  at::Tensor src = at::empty({bytes}, at::TensorOptions().dtype(at::kByte).device(at::kCUDA));
  at::Tensor dst = at::empty_like(src);
  src.fill_(1);
  cudaStream_t stream = static_cast<cudaStream_t>(CurrentCudaStream(src.device()));
  const double us = TimeUs([&] { cudaMemcpyAsync(dst.data_ptr(), src.data_ptr(), bytes, cudaMemcpyDeviceToDevice, stream); },
                           env.iters);
  const double gbps = 2.0 * bytes / (us * 1e3);  // read + write
  Emit(env, {{"name", "copy_d2d_bandwidth"}, {"bytes", bytes}, {"us", us}, {"gb_per_s", gbps},
             {"note", "bytes read + written per second, cudaMemcpyAsync device to device"}});
  return gbps;
}

struct Shape {
  std::string name;
  int64_t m, k, n;
};

void Gemm(const Env& env, const Shape& s) {
  const auto dev = at::TensorOptions().device(at::kCUDA);
  const at::Tensor a = at::randn({s.m, s.k}, dev.dtype(at::kBFloat16));
  const at::Tensor w = at::randn({s.n, s.k}, dev.dtype(at::kBFloat16));
  const at::Tensor a8 = a.to(at::kFloat8_e4m3fn);
  const at::Tensor w8 = w.to(at::kFloat8_e4m3fn);
  const at::Tensor one = at::ones({}, dev.dtype(at::kFloat));
  const double flops = 2.0 * s.m * s.k * s.n;
  const double bf16_us = TimeUs([&] { at::mm(a, w.t()); }, env.iters);
  const double fp8_us = TimeUs(
      [&] { at::_scaled_mm(a8, w8.t(), one, one, std::nullopt, std::nullopt, at::kBFloat16, true); },
      env.iters);
  const double fp8_full_us = TimeUs(
      [&] { at::_scaled_mm(a8, w8.t(), one, one, std::nullopt, std::nullopt, at::kBFloat16, false); },
      env.iters);
  const double bf16_tf = flops / (bf16_us * 1e6), fp8_tf = flops / (fp8_us * 1e6),
               fp8_full_tf = flops / (fp8_full_us * 1e6);
  Emit(env, {{"name", "gemm_fp8_vs_bf16_" + s.name},
             {"m", s.m}, {"k", s.k}, {"n", s.n},
             {"bf16_tflops", bf16_tf}, {"fp8_tflops", fp8_tf}, {"fp8_full_accum_tflops", fp8_full_tf},
             {"value", fp8_tf / bf16_tf},
             {"note", "value = FP8 (fast accum) TFLOP/s over BF16 TFLOP/s; y = x W^T, bf16 out"}});
}

void Layer(const Env& env, const Shape& s) {
  Fp8Options o;
  auto timer = MakeCudaLayerTimer(at::Device(at::kCUDA, 0), o);
  auto t = timer->Time({s.m, s.k, s.n}, env.iters);
  if (!t.ok()) {
    Emit(env, {{"name", "layer_fp8_vs_bf16_" + s.name}, {"error", std::string(t.status().message())}});
    return;
  }
  const double flops = 3 * 2.0 * s.m * s.k * s.n;  // forward + two backward GEMMs
  Emit(env, {{"name", "layer_fp8_vs_bf16_" + s.name},
             {"m", s.m}, {"k", s.k}, {"n", s.n},
             {"bf16_us", t->bf16_us}, {"fp8_us", t->fp8_us},
             {"bf16_tflops", flops / (t->bf16_us * 1e6)}, {"fp8_tflops", flops / (t->fp8_us * 1e6)},
             {"value", t->bf16_us / t->fp8_us},
             {"note", "one Linear fwd+bwd incl. FP8 casts (delayed scaling) vs dense BF16; value = speedup"}});
}

void Cast(const Env& env, double copy_gbps, const std::string& what, at::ScalarType dtype, int64_t rows,
          int64_t cols, bool transposed, bool current, kernels::Fp8Format format) {
  const auto dev = at::TensorOptions().device(at::kCUDA);
  const at::Tensor x = at::randn({rows, cols}, dev.dtype(dtype));
  const at::Tensor out = at::empty({rows, cols}, dev.dtype(at::kByte));
  const at::Tensor out_t = at::empty({cols, rows}, dev.dtype(at::kByte));
  const at::Tensor scalars = at::ones({8}, dev.dtype(at::kFloat));
  const at::Tensor under = at::zeros({1}, dev.dtype(at::kLong));
  float* f = scalars.data_ptr<float>();
  kernels::Fp8CastArgs a;
  a.input = x.data_ptr();
  a.input_type = dtype == at::kFloat ? kernels::Fp8InputType::kFloat32 : kernels::Fp8InputType::kBFloat16;
  a.rows = rows;
  a.cols = cols;
  a.format = format;
  a.out = out.data_ptr<uint8_t>();
  a.out_t = transposed ? out_t.data_ptr<uint8_t>() : nullptr;
  a.accumulate = true;
  a.amax_out = f + 1;
  a.underflow_out = reinterpret_cast<unsigned long long*>(under.data_ptr<int64_t>());
  a.scale_inv_out = f + 2;
  if (current) {
    a.amax_for_scale = f + 3;
    a.scale_out = f + 4;
  } else {
    a.scale = f;
  }
  cudaStream_t stream = static_cast<cudaStream_t>(CurrentCudaStream(x.device()));
  const int64_t n = rows * cols, elem = x.element_size();
  const double us = TimeUs(
      [&] {
        if (current) kernels::Fp8Amax(a.input, a.input_type, n, f + 3, stream);
        kernels::Fp8CastScaled(a, stream);
      },
      env.iters);
  const cudaError_t err = cudaGetLastError();
  // Bytes the recipe must move: the input once per pass, each FP8 output once.
  const int64_t bytes = n * elem * (current ? 2 : 1) + n * (transposed ? 2 : 1);
  const double gbps = bytes / (us * 1e3);
  Emit(env, {{"name", "cast_" + what},
             {"rows", rows}, {"cols", cols},
             {"input", dtype == at::kFloat ? "fp32" : "bf16"},
             {"format", format == kernels::Fp8Format::kE4M3 ? "e4m3" : "e5m2"},
             {"transposed_copy", transposed}, {"recipe", current ? "current (amax pass + cast)" : "delayed (one pass)"},
             {"us", us}, {"bytes", bytes}, {"gb_per_s", gbps}, {"copy_gb_per_s", copy_gbps},
             {"value", gbps / copy_gbps},
             {"error", err == cudaSuccess ? "" : cudaGetErrorString(err)},
             {"note", "value = achieved GB/s over device-to-device copy GB/s (the floor is 1.0)"}});
}

int Main(int argc, char** argv) {
  Env env;
  bool quick = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--iters") == 0 && i + 1 < argc) env.iters = std::atoi(argv[++i]);
    else if (std::strcmp(argv[i], "--quick") == 0) quick = true;
  }
  const Fp8DeviceInfo info = QueryCudaDevice(0);
  absl::Status ok = CheckFp8Supported(info);
  if (!ok.ok()) {
    std::fprintf(stderr, "fp8_bench: %s\n", std::string(ok.message()).c_str());
    return 2;
  }
  char date[32];
  const std::time_t now = std::time(nullptr);
  std::strftime(date, sizeof(date), "%Y-%m-%d", std::gmtime(&now));
  env.device = info.name;
  env.date = date;
  at::manual_seed(0);

  const double copy = CopyBandwidth(env);
  const int64_t tokens = 16384;  // batch 4 x seq 4096
  std::vector<Shape> shapes = {
      {"qkv_16384x2048x6144", tokens, 2048, 6144},
      {"attn_out_16384x2048x2048", tokens, 2048, 2048},
      {"mlp_up_16384x2048x5632", tokens, 2048, 5632},
      {"mlp_gate_up_16384x2048x11264", tokens, 2048, 11264},
      {"mlp_down_16384x5632x2048", tokens, 5632, 2048},
      {"square_8192x8192x8192", 8192, 8192, 8192},
  };
  if (quick) shapes.resize(2);
  for (const Shape& s : shapes) Gemm(env, s);
  for (const Shape& s : shapes) {
    if (s.name.rfind("square", 0) != 0) Layer(env, s);
  }
  using kernels::Fp8Format;
  Cast(env, copy, "bf16_e4m3_16384x2048", at::kBFloat16, tokens, 2048, false, false, Fp8Format::kE4M3);
  Cast(env, copy, "bf16_e4m3_16384x2048_transposed", at::kBFloat16, tokens, 2048, true, false, Fp8Format::kE4M3);
  Cast(env, copy, "bf16_e4m3_16384x2048_transposed_current", at::kBFloat16, tokens, 2048, true, true, Fp8Format::kE4M3);
  Cast(env, copy, "bf16_e4m3_16384x5632_transposed", at::kBFloat16, tokens, 5632, true, false, Fp8Format::kE4M3);
  Cast(env, copy, "bf16_e5m2_16384x6144_transposed", at::kBFloat16, tokens, 6144, true, false, Fp8Format::kE5M2);
  Cast(env, copy, "fp32_e4m3_6144x2048_transposed", at::kFloat, 6144, 2048, true, false, Fp8Format::kE4M3);
  Cast(env, copy, "fp32_e4m3_5632x2048_transposed", at::kFloat, 5632, 2048, true, false, Fp8Format::kE4M3);
  return 0;
}

}  // namespace
}  // namespace kp::fp8

int main(int argc, char** argv) { return kp::fp8::Main(argc, argv); }
