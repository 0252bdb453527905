// Attention fwd+bwd on one GPU, all sides in one run, as JSON lines:
//   sdpa         at::scaled_dot_product_attention(causal) with autograd
//   local_cudnn  kp's local attention with LSE (one causal cuDNN call)
//   local_flash  the same through flash attention
//   cp1          ContextParallelAttention with cp = 1 (the pass-through)
//   local_cudnn_paired
//                local_cudnn again, timed in alternation with cp_sim (best
//                of three rounds each); cp_sim's efficiency is against it
//   cp_sim       simulated CP, cp = 2, 4, 8: every rank's zigzag ring
//                schedule (attention calls, LSE merges, dK/dV accumulation,
//                K/V packing) run in turn on this GPU, no communication
//   cp_sim_attention_calls_only
//                the attention calls of cp_sim alone (no merges, no dK/dV
//                accumulation, no packing): the floor cp_sim can reach
//   cp_fake      the real ring code, cp = 2, 4: ranks are threads on this GPU
//                exchanging CUDA tensors through the in-process fake
//                communicator (device copies), forward + backward through
//                ContextParallelAttentionForwardBackward; ranks share the GPU,
//                so the time is all ranks' work plus the copies
// FLOPs: causal forward 4*B*H*T^2*D/2, fwd+bwd 2.5x that (the backward
// counted as 1.5x the forward). "efficiency" of cp_sim = time of local_cudnn
// at the same total length / time of the simulation (same backend, cuDNN).
// With --profile_trace PREFIX, one more cp_sim run at each cp is recorded by
// libtorch's kineto profiler into PREFIX.cp<N>.json (bench/trace_kernels.py
// sums its kernels by class: where the split's extra time goes).
// Usage: cp_attention_bench [--seqs 32768,65536,131072] [--heads 16]
//        [--kv-heads 16] [--dim 128] [--iters 3] [--quick] [--profile_trace PREFIX]
// GPU only: exits 2 with the reason elsewhere.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <functional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <cuda_runtime_api.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/profiler_kineto.h>

#include <thread>

#include "runtime/comm/fake_communicator.h"
#include "runtime/parallel/block_fold.h"
#include "runtime/parallel/cp_attention.h"
#include "runtime/parallel/cp_simulation.h"
#include "runtime/parallel/local_attention.h"
#include "runtime/parallel/zigzag.h"

namespace kp::parallel {
namespace {

struct Flags {
  std::vector<int64_t> seqs = {32768, 65536, 131072};
  std::vector<int> cps = {2, 4, 8};
  int64_t heads = 16, kv_heads = 16, dim = 128, batch = 1;
  int iters = 3;
  std::string profile_trace;  // prefix; empty: no trace
};

// Runs fn once under the kineto profiler (CPU ops and CUDA kernels) and
// saves the Chrome trace to path.
void Trace(const std::function<void()>& fn, const std::string& path) {
  namespace prof = torch::profiler::impl;
  const std::set<prof::ActivityType> activities = {prof::ActivityType::CPU,
                                                   prof::ActivityType::CUDA};
  const prof::ProfilerConfig config(prof::ProfilerState::KINETO);
  torch::autograd::profiler::prepareProfiler(config, activities);
  torch::autograd::profiler::enableProfiler(config, activities);
  fn();
  cudaDeviceSynchronize();
  auto result = torch::autograd::profiler::disableProfiler();
  if (result) {
    result->save(path);
    std::fprintf(stderr, "cp_attention_bench: trace %s\n", path.c_str());
  }
}

std::vector<BlockTask> RankTasks(int r, int src, int n, int64_t chunk) {
  return PlanBlocks(ZigzagSegments(r, n, chunk), ZigzagSegments(src, n, chunk), /*causal=*/true);
}

cudaStream_t CurrentStream() {
  const auto* impl = c10::impl::getDeviceGuardImpl(c10::kCUDA);
  return static_cast<cudaStream_t>(impl->getStream(at::Device(at::kCUDA, 0)).native_handle());
}

// Mean milliseconds of fn over iters runs after one warm-up, with events on
// ATen's current stream.
double TimeMs(const std::function<void()>& fn, int iters) {
  fn();
  cudaStream_t stream = CurrentStream();
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
  return ms / iters;
}

std::string Header(const std::string& device) {
  char date[32];
  const std::time_t now = std::time(nullptr);
  std::strftime(date, sizeof(date), "%Y-%m-%d", std::gmtime(&now));
  return "\"device\": \"" + device + "\", \"date\": \"" + date + "\"";
}

void Emit(const std::string& header, const std::string& impl, const std::string& backend, int cp,
          const Flags& f, int64_t seq, double ms, double efficiency) {
  const double fwd = 4.0 * f.batch * f.heads * static_cast<double>(seq) * seq * f.dim / 2.0;
  const double tflops = 2.5 * fwd / (ms * 1e-3) / 1e12;
  std::printf(
      "{\"bench\": \"cp_attention\", \"impl\": \"%s\", \"backend\": \"%s\", \"cp\": %d, "
      "\"seq\": %lld, \"batch\": %lld, \"heads\": %lld, \"kv_heads\": %lld, \"head_dim\": %lld, "
      "\"fwd_bwd_ms\": %.3f, \"tflops\": %.1f, \"flops_formula\": \"2.5*4*B*H*T^2*D/2\"%s, %s}\n",
      impl.c_str(), backend.c_str(), cp, static_cast<long long>(seq),
      static_cast<long long>(f.batch), static_cast<long long>(f.heads),
      static_cast<long long>(f.kv_heads), static_cast<long long>(f.dim), ms, tflops,
      efficiency > 0 ? (", \"efficiency_vs_full\": " + std::to_string(efficiency)).c_str() : "",
      header.c_str());
  std::fflush(stdout);
}

std::vector<int64_t> ParseList(const char* s) {
  std::vector<int64_t> out;
  std::stringstream in(s);
  std::string item;
  while (std::getline(in, item, ',')) out.push_back(std::stoll(item));
  return out;
}

int Run(const Flags& f) {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    std::fprintf(stderr, "cp_attention_bench: no usable CUDA device\n");
    return 2;
  }
  cudaDeviceProp prop;
  cudaGetDeviceProperties(&prop, 0);
  const std::string header = Header(prop.name);
  const at::TensorOptions o = at::TensorOptions().device(at::kCUDA).dtype(at::kBFloat16);

  for (int64_t seq : f.seqs) {
    const at::Tensor q0 = at::randn({f.batch, f.heads, seq, f.dim}, o);
    const at::Tensor k0 = at::randn({f.batch, f.kv_heads, seq, f.dim}, o);
    const at::Tensor v0 = at::randn({f.batch, f.kv_heads, seq, f.dim}, o);
    const at::Tensor dout = at::randn({f.batch, f.heads, seq, f.dim}, o);
    at::Tensor q = q0.clone().set_requires_grad(true);
    at::Tensor k = k0.clone().set_requires_grad(true);
    at::Tensor v = v0.clone().set_requires_grad(true);
    auto clear = [&] {
      q.mutable_grad().reset();
      k.mutable_grad().reset();
      v.mutable_grad().reset();
    };

    if (f.kv_heads == f.heads) {
      const double ms = TimeMs(
          [&] {
            clear();
            at::Tensor out = at::scaled_dot_product_attention(q, k, v, {}, 0.0, true);
            torch::autograd::backward({out}, {dout});
          },
          f.iters);
      Emit(header, "sdpa", "aten-choice", 1, f, seq, ms, 0);
    }
    LocalAttentionOptions cudnn_options;
    cudnn_options.backend = AttnBackend::kCudnn;
    auto full_cudnn = [&] {
      clear();
      at::Tensor out = std::get<0>(CausalAttentionWithLse(q, k, v, cudnn_options));
      torch::autograd::backward({out}, {dout});
    };
    double full_cudnn_ms = 0;
    for (AttnBackend backend : {AttnBackend::kCudnn, AttnBackend::kFlash}) {
      LocalAttentionOptions lo;
      lo.backend = backend;
      const double ms = TimeMs(
          [&] {
            clear();
            at::Tensor out = std::get<0>(CausalAttentionWithLse(q, k, v, lo));
            torch::autograd::backward({out}, {dout});
          },
          f.iters);
      if (backend == AttnBackend::kCudnn) full_cudnn_ms = ms;
      Emit(header, "local_" + AttnBackendName(backend), AttnBackendName(backend), 1, f, seq, ms,
           0);
    }
    {
      CpOptions co;
      co.backend = AttnBackend::kCudnn;
      const double ms = TimeMs(
          [&] {
            clear();
            at::Tensor out = *ContextParallelAttention(q, k, v, nullptr, co);
            torch::autograd::backward({out}, {dout});
          },
          f.iters);
      Emit(header, "cp1", "cudnn", 1, f, seq, ms, full_cudnn_ms / ms);
    }
    clear();
    for (int cp : f.cps) {
      if (seq % (2 * cp) != 0) continue;
      std::vector<at::Tensor> qs, ks, vs, ds;
      for (int r = 0; r < cp; ++r) {
        qs.push_back(*ZigzagShard(q0, 2, cp, r));
        ks.push_back(*ZigzagShard(k0, 2, cp, r));
        vs.push_back(*ZigzagShard(v0, 2, cp, r));
        ds.push_back(*ZigzagShard(dout, 2, cp, r));
      }
      LocalAttentionOptions lo;
      lo.backend = AttnBackend::kCudnn;
      // The one full call and the simulation timed in alternation, the best
      // of three rounds each, so clocks and heat treat both alike.
      double full_ms = 0, ms = 0;
      for (int round = 0; round < 3; ++round) {
        const double a = TimeMs(full_cudnn, f.iters);
        const double b = TimeMs([&] { SimulateRingAttention(qs, ks, vs, ds, lo); }, f.iters);
        full_ms = round == 0 ? a : std::min(full_ms, a);
        ms = round == 0 ? b : std::min(ms, b);
      }
      if (!f.profile_trace.empty()) {
        Trace([&] { SimulateRingAttention(qs, ks, vs, ds, lo); },
              f.profile_trace + ".cp" + std::to_string(cp) + ".json");
        Trace(full_cudnn, f.profile_trace + ".full.json");
      }
      clear();
      Emit(header, "local_cudnn_paired", "cudnn", cp, f, seq, full_ms, 0);
      Emit(header, "cp_sim", "cudnn", cp, f, seq, ms, full_ms / ms);
      {
        // The same attention calls alone (no folds, no packing): what the
        // split would cost if merging and accumulating were free.
        const SimulatedRanks sim = SimulateRingAttention(qs, ks, vs, ds, lo);
        std::vector<at::Tensor> lses;
        for (int r = 0; r < cp; ++r) {
          BlockFolder merged(BlockFolder::Kind::kLseMerge, qs[r]);
          for (int t = 0; t < cp; ++t) {
            const int src = (r - t + cp) % cp;
            RunForwardTasks(qs[r], ks[src], vs[src], RankTasks(r, src, cp, seq / cp / 2),
                            ResolveScale(0, qs[r]), AttnBackend::kCudnn, merged);
          }
          lses.push_back(merged.Finish(at::kBFloat16).second);
        }
        const double attn_ms = TimeMs(
            [&] {
              const double scale = ResolveScale(0, qs[0]);
              for (int r = 0; r < cp; ++r) {
                for (int t = 0; t < cp; ++t) {
                  const int src = (r - t + cp) % cp;
                  for (const BlockTask& b : RankTasks(r, src, cp, seq / cp / 2)) {
                    AttentionBlockForward(qs[r].narrow(2, b.q_offset, b.q_length),
                                          ks[src].narrow(2, b.k_offset, b.k_length),
                                          vs[src].narrow(2, b.k_offset, b.k_length), b.mask,
                                          scale, AttnBackend::kCudnn);
                  }
                }
              }
              for (int r = 0; r < cp; ++r) {
                for (int t = 0; t < cp; ++t) {
                  const int src = (r - t + cp) % cp;
                  for (const BlockTask& b : RankTasks(r, src, cp, seq / cp / 2)) {
                    AttentionBlockBackward(ds[r].narrow(2, b.q_offset, b.q_length),
                                           qs[r].narrow(2, b.q_offset, b.q_length),
                                           ks[src].narrow(2, b.k_offset, b.k_length),
                                           vs[src].narrow(2, b.k_offset, b.k_length),
                                           sim.out[r].narrow(2, b.q_offset, b.q_length),
                                           lses[r].narrow(2, b.q_offset, b.q_length), b.mask,
                                           scale, AttnBackend::kCudnn);
                  }
                }
              }
            },
            f.iters);
        Emit(header, "cp_sim_attention_calls_only", "cudnn", cp, f, seq, attn_ms,
             full_ms / attn_ms);
      }
      if (cp > 4) continue;
      comm::FakeWorld world(cp, std::chrono::minutes(5));
      std::vector<std::unique_ptr<comm::Communicator>> comms;
      for (int r = 0; r < cp; ++r) comms.push_back(world.Join(r));
      CpOptions co;
      co.mode = CpMode::kRing;
      co.backend = AttnBackend::kCudnn;
      const double fake_ms = TimeMs(
          [&] {
            std::vector<std::thread> threads;
            for (int r = 0; r < cp; ++r) {
              threads.emplace_back([&, r] {
                auto res = ContextParallelAttentionForwardBackward(qs[r], ks[r], vs[r], ds[r],
                                                                   comms[r].get(), co);
                if (!res.ok()) std::fprintf(stderr, "cp_fake: %s\n", res.status().ToString().c_str());
              });
            }
            for (std::thread& t : threads) t.join();
          },
          f.iters);
      Emit(header, "cp_fake", "cudnn", cp, f, seq, fake_ms, full_cudnn_ms / fake_ms);
    }
  }
  return 0;
}

}  // namespace
}  // namespace kp::parallel

int main(int argc, char** argv) {
  kp::parallel::Flags f;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", a.c_str());
        std::exit(1);
      }
      return argv[++i];
    };
    if (a == "--seqs") {
      f.seqs = kp::parallel::ParseList(next());
    } else if (a == "--cps") {
      f.cps.clear();
      for (int64_t c : kp::parallel::ParseList(next())) f.cps.push_back(static_cast<int>(c));
    } else if (a == "--heads") {
      f.heads = std::stoll(next());
    } else if (a == "--kv-heads") {
      f.kv_heads = std::stoll(next());
    } else if (a == "--dim") {
      f.dim = std::stoll(next());
    } else if (a == "--iters") {
      f.iters = std::stoi(next());
    } else if (a == "--profile_trace") {
      f.profile_trace = next();
    } else if (a == "--quick") {
      f.seqs = {8192};
      f.iters = 2;
    } else {
      std::fprintf(stderr,
                   "usage: cp_attention_bench [--seqs 32768,65536,131072] [--cps 2,4,8] "
                   "[--heads 16] [--kv-heads 16] [--dim 128] [--iters 3] [--quick] "
                   "[--profile_trace PREFIX]\n");
      return 1;
    }
  }
  return kp::parallel::Run(f);
}
