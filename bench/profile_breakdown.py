#!/usr/bin/env python3
"""Where a training step's time goes, from a Chrome trace (kp-train
--profile_steps, or bench/pytorch_llama.py --profile_dir), each part against
its floor.

GPU kernels are put in classes by name; a class's time is the sum of its
kernels' durations divided by the profiled steps. "host gaps" is the step's
wall time on the GPU timeline (first kernel start to last kernel end, per
step) minus the time at least one kernel was running: time the GPU waited on
the host (launch overhead, synchronisation, Python).

Floors, from the model config (stated so they can be checked):
  gemm        6 * N_matmul * tokens FLOPs at --gemm_tflops (N_matmul: every
              Linear incl. the LM head)
  attention   3 * (2 * B * T^2 * d) * L FLOPs (causal forward counted once,
              backward twice) at --gemm_tflops: the dense-GEMM rate is the
              ideal; cuDNN reaches ~400 TFLOP/s on an H100
  optimizer   AdamW over P fp32 parameters reads param, grad, m, v and writes
              param, m, v: 28 bytes a parameter, plus a bf16 copy of the
              weights (2 bytes) at --bw_gbs
  elementwise every activation between the GEMMs read and written once (an
              ideally fused model: norms, RoPE, SwiGLU, residual adds) and the
              logits read and written twice (softmax forward, gradient), bf16,
              forward and backward (backward counted as 2x forward) at --bw_gbs
  fp8 cast    (--fp8_tflops: an FP8 run, every projection in FP8) each
              projection's input cast to E4M3 with its transposed copy (read
              2 + write 2 bytes an element), its output gradient to E5M2 the
              same, its fp32 weight (read 4 + write 2); the projections' GEMM
              floor then counts at --fp8_tflops, the LM head's at --gemm_tflops
  host gaps   0

Usage: profile_breakdown.py TRACE --config CONFIG --steps N [--label NAME]
Prints one JSON line per class, then one with the totals."""
import argparse
import json
import re

import yaml

CLASSES = [
    ("nccl", re.compile(r"nccl", re.I)),
    ("attention", re.compile(r"flash|fmha|sdpa|attention|attn|cudnn_generated", re.I)),
    ("gemm", re.compile(r"gemm|nvjet|cutlass|xmma|cublas|sm90_|_mma|matmul", re.I)),
    ("optimizer", re.compile(r"adam|multi_tensor|foreach|fused_sgd", re.I)),
    ("memcpy/memset", re.compile(r"^memcpy|^memset|Memcpy|Memset", re.I)),
    ("fp8 cast", re.compile(r"CastKernel|CastTransposeKernel|AmaxKernel")),
]


def classify(name):
    for cls, pat in CLASSES:
        if pat.search(name):
            return cls
    return "elementwise"


def floors(cfg_path, gemm_tflops, bw_gbs, fp8_tflops=None):
    cfg = yaml.safe_load(open(cfg_path))
    m, t = cfg["model"], cfg["training"]
    d, L, V, f = m["d_model"], m["n_layers"], m["vocab_size"], m["ffn_hidden"]
    h, kv = m["n_heads"], m.get("n_kv_heads", m["n_heads"])
    dh = d // h
    B, T = t["micro_batch"] * t.get("grad_accum", 1), t["seq_len"]
    tokens = B * T
    per_layer = d * (h + 2 * kv) * dh + h * dh * d + 3 * d * f
    n_matmul = L * per_layer + V * d
    n_params = n_matmul + (0 if m.get("tie_embeddings") else V * d) + (2 * L + 1) * d
    gemm_flops = 6.0 * n_matmul * tokens
    attn_flops = 3.0 * 2.0 * B * T * T * h * dh * L
    fwd_elems = (2 * d + (h + 2 * kv) * dh + 2 * (h + kv) * dh + 3 * d + 2 * d + 3 * f + 3 * d)
    elem_bytes = 2.0 * tokens * L * fwd_elems * 3 + 2.0 * tokens * V * 4
    opt_bytes = 30.0 * n_params
    gemm_s = gemm_flops / (gemm_tflops * 1e12)
    cast_bytes = 0.0
    if fp8_tflops:
        # Every projection of every layer in FP8 (the LM head in BF16).
        gemm_s = 6.0 * L * per_layer * tokens / (fp8_tflops * 1e12) + 6.0 * V * d * tokens / (gemm_tflops * 1e12)
        x_in = d + h * dh + d + f                      # inputs of qkv, out, gate+up, down
        dy_out = (h + 2 * kv) * dh + d + 2 * f + d     # their outputs' gradients
        cast_bytes = L * (4.0 * tokens * x_in + 4.0 * tokens * dy_out + 6.0 * per_layer)
    return {
        "gemm": gemm_s,
        "attention": attn_flops / (gemm_tflops * 1e12),
        "optimizer": opt_bytes / (bw_gbs * 1e9),
        "elementwise": elem_bytes / (bw_gbs * 1e9),
        "memcpy/memset": 0.0,
        "fp8 cast": cast_bytes / (bw_gbs * 1e9),
        "nccl": 0.0,
        "host gaps": 0.0,
    }, tokens


def kernels(trace_path):
    trace = json.load(open(trace_path))
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    out = []
    for e in events:
        if e.get("ph") != "X":
            continue
        cat = str(e.get("cat", "")).lower()
        if cat in ("kernel", "gpu_memcpy", "gpu_memset"):
            out.append((float(e["ts"]), float(e["dur"]), e.get("name", "")))
    out.sort()
    return out


def busy_time(ks):
    busy, end = 0.0, None
    for ts, dur, _ in ks:
        if end is None or ts > end:
            busy += dur
            end = ts + dur
        elif ts + dur > end:
            busy += ts + dur - end
            end = ts + dur
    return busy


def main():
    p = argparse.ArgumentParser()
    p.add_argument("trace")
    p.add_argument("--config", required=True)
    p.add_argument("--steps", type=int, required=True, help="steps in the trace")
    p.add_argument("--label", default="")
    p.add_argument("--gemm_tflops", type=float, default=780.0)
    p.add_argument("--bw_gbs", type=float, default=3014.0)
    p.add_argument("--fp8_tflops", type=float, default=0.0,
                   help="an FP8 run: the projections' GEMM floor at this rate, plus the casts' floor")
    a = p.parse_args()
    ks = kernels(a.trace)
    if not ks:
        raise SystemExit(f"{a.trace}: no GPU kernels in the trace (was CUDA activity profiled?)")
    fl, tokens = floors(a.config, a.gemm_tflops, a.bw_gbs, a.fp8_tflops or None)
    per_class = {}
    for _, dur, name in ks:
        c = classify(name)
        per_class[c] = per_class.get(c, 0.0) + dur
    span = ks[-1][0] + ks[-1][1] - ks[0][0]
    gaps = span - busy_time(ks)
    per_class["host gaps"] = gaps
    step_s = span / a.steps / 1e6
    total_floor = 0.0
    for c in ["gemm", "attention", "elementwise", "optimizer", "memcpy/memset", "fp8 cast", "nccl", "host gaps"]:
        s = per_class.get(c, 0.0) / a.steps / 1e6
        total_floor += fl[c]
        print(json.dumps({"label": a.label, "class": c, "ms_per_step": round(1e3 * s, 2),
                          "share": round(s / step_s, 3) if step_s else None,
                          "floor_ms": round(1e3 * fl[c], 2),
                          "over_floor": round(s / fl[c], 2) if fl[c] > 0 else None}))
    top = {}
    for _, dur, name in ks:
        top[name] = top.get(name, 0.0) + dur
    top5 = sorted(top.items(), key=lambda kv: -kv[1])[:8]
    print(json.dumps({"label": a.label, "class": "total", "ms_per_step": round(1e3 * step_s, 2),
                      "tokens_per_s": round(tokens / step_s), "floor_ms": round(1e3 * total_floor, 2),
                      "over_floor": round(step_s / total_floor, 2),
                      "top_kernels_ms": [[n[:90], round(v / a.steps / 1e3, 2)] for n, v in top5]}))


if __name__ == "__main__":
    main()
