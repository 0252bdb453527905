"""Times the three GEMMs of an FP8 Linear (forward, dX, dW) at the 1.3B
model's shapes, with the operand layouts and dtypes runtime/fp8/fp8_linear.cc
uses, next to the BF16 GEMMs they replace. Used to find which GEMM makes a
whole FP8 layer slower than BF16 (fp8_bench's layer_fp8_vs_bf16_* rows).

Prints one JSON line per (layer, gemm, variant): microseconds and TFLOP/s."""
import json
import torch

E4, E5 = torch.float8_e4m3fn, torch.float8_e5m2
TOKENS = 16384
SHAPES = {  # name: (in K, out N)
    "qkv": (2048, 6144),
    "attn_out": (2048, 2048),
    "mlp_gate_up": (2048, 11264),
    "mlp_down": (5632, 2048),
}


def timed(fn, iters=20):
    fn()
    torch.cuda.synchronize()
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn()
    stop.record()
    stop.synchronize()
    return 1000.0 * start.elapsed_time(stop) / iters


def emit(layer, gemm, variant, us, flops):
    print(json.dumps({"layer": layer, "gemm": gemm, "variant": variant, "us": round(us, 1),
                      "tflops": round(flops / us / 1e6, 1)}), flush=True)


def scale():
    return torch.ones((), device="cuda")  # a fresh (aligned) allocation each


def main():
    m = TOKENS
    for name, (k, n) in SHAPES.items():
        flops = 2.0 * m * k * n
        x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
        w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16)
        dy = torch.randn(m, n, device="cuda", dtype=torch.bfloat16)
        xq, wq = x.to(E4), w.to(E4)
        x_t, w_t = x.t().contiguous().to(E4), w.t().contiguous().to(E4)  # [K, M], [K, N]
        g, g_t = dy.to(E5), dy.t().contiguous().to(E5)  # [M, N], [N, M]
        sx, sw, sg = scale(), scale(), scale()
        # Forward: y[M, N] = x[M, K] w[N, K]^T
        emit(name, "fwd", "bf16", timed(lambda: x @ w.t()), flops)
        emit(name, "fwd", "fp8 e4m3 fast", timed(lambda: torch._scaled_mm(
            xq, wq.t(), sx, sw, out_dtype=torch.bfloat16, use_fast_accum=True)), flops)
        # dX[M, K] = dY[M, N] W[N, K]
        emit(name, "dx", "bf16", timed(lambda: dy @ w), flops)
        emit(name, "dx", "fp8 e5m2xe4m3", timed(lambda: torch._scaled_mm(
            g, w_t.t(), sg, sw, out_dtype=torch.bfloat16)), flops)
        emit(name, "dx", "fp8 e5m2xe4m3 fast", timed(lambda: torch._scaled_mm(
            g, w_t.t(), sg, sw, out_dtype=torch.bfloat16, use_fast_accum=True)), flops)
        # dW[N, K] = dY^T[N, M] X[M, K]
        emit(name, "dw", "bf16", timed(lambda: dy.t() @ x), flops)
        emit(name, "dw", "fp8 -> fp32", timed(lambda: torch._scaled_mm(
            g_t, x_t.t(), sg, sx, out_dtype=torch.float32)), flops)
        emit(name, "dw", "fp8 -> bf16", timed(lambda: torch._scaled_mm(
            g_t, x_t.t(), sg, sx, out_dtype=torch.bfloat16)), flops)
        emit(name, "dw", "fp8 -> fp32 fast", timed(lambda: torch._scaled_mm(
            g_t, x_t.t(), sg, sx, out_dtype=torch.float32, use_fast_accum=True)), flops)
        del x, w, dy, xq, wq, x_t, w_t, g, g_t
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
