"""The PyTorch side of the engine benchmark: the same Llama-style model as a
kp config (RMSNorm, RoPE, SwiGLU, grouped-query attention), trained with
BF16 autocast over FP32 master weights and fused AdamW, in eager mode and
under torch.compile. Prints one JSON line per mode.

Usage: python3 bench/pytorch_llama.py --config configs/1p3b.yaml --steps 20
MFU counts 6*N + 12*L*d*T FLOPs per token (PaLM, appendix B; N excludes the
embedding table, the attention term is not halved for causal masking), the
same formula kp-train reports, over the peak given by --peak_tflops.
"""
import argparse
import json
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
import yaml


def load_model_config(path):
    with open(path) as f:
        cfg = yaml.safe_load(f)
    m, t = cfg["model"], cfg["training"]
    return m, t


class Block(nn.Module):
    def __init__(self, d, heads, kv_heads, ffn, eps):
        super().__init__()
        self.heads, self.kv_heads, self.dh = heads, kv_heads, d // heads
        self.norm1 = nn.RMSNorm(d, eps=eps)
        self.qkv = nn.Linear(d, (heads + 2 * kv_heads) * self.dh, bias=False)
        self.out = nn.Linear(d, d, bias=False)
        self.norm2 = nn.RMSNorm(d, eps=eps)
        self.gate = nn.Linear(d, ffn, bias=False)
        self.up = nn.Linear(d, ffn, bias=False)
        self.down = nn.Linear(ffn, d, bias=False)

    def forward(self, x, cos, sin):
        b, t, d = x.shape
        h = self.norm1(x)
        q, k, v = self.qkv(h).split(
            [self.heads * self.dh, self.kv_heads * self.dh, self.kv_heads * self.dh], dim=-1)
        q = q.view(b, t, self.heads, self.dh).transpose(1, 2)
        k = k.view(b, t, self.kv_heads, self.dh).transpose(1, 2)
        v = v.view(b, t, self.kv_heads, self.dh).transpose(1, 2)
        q, k = rope(q, cos, sin), rope(k, cos, sin)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                           enable_gqa=self.kv_heads != self.heads)
        x = x + self.out(a.transpose(1, 2).reshape(b, t, d))
        h = self.norm2(x)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


def rope(x, cos, sin):
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


class Llama(nn.Module):
    def __init__(self, m):
        super().__init__()
        d = m["d_model"]
        self.embed = nn.Embedding(m["vocab_size"], d)
        self.blocks = nn.ModuleList(
            Block(d, m["n_heads"], m.get("n_kv_heads", m["n_heads"]), m["ffn_hidden"],
                  m.get("norm_eps", 1e-5)) for _ in range(m["n_layers"]))
        self.norm = nn.RMSNorm(d, eps=m.get("norm_eps", 1e-5))
        self.head = nn.Linear(d, m["vocab_size"], bias=False)
        self.dh = d // m["n_heads"]
        self.theta = m.get("rope_theta", 10000.0)

    def forward(self, tokens, targets):
        t = tokens.shape[1]
        inv = 1.0 / (self.theta ** (torch.arange(0, self.dh, 2, device=tokens.device).float() / self.dh))
        ang = torch.outer(torch.arange(t, device=tokens.device).float(), inv)
        cos, sin = ang.cos().to(torch.bfloat16), ang.sin().to(torch.bfloat16)
        x = self.embed(tokens)
        for blk in self.blocks:
            x = blk(x, cos, sin)
        logits = self.head(self.norm(x))
        return F.cross_entropy(logits.float().view(-1, logits.shape[-1]), targets.reshape(-1))


def flops_per_token(m, seq):
    d, L, V = m["d_model"], m["n_layers"], m["vocab_size"]
    kv = m.get("n_kv_heads", m["n_heads"])
    dh = d // m["n_heads"]
    per_layer = d * (m["n_heads"] + 2 * kv) * dh + d * d + 3 * d * m["ffn_hidden"]
    n = L * per_layer + V * d  # the LM head is a matmul; the embedding is a lookup
    return 6 * n + 12 * L * d * seq


def run(mode, m, tcfg, steps, warmup, peak, profile_dir=""):
    torch.manual_seed(0)
    model = Llama(m).cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    fwd = torch.compile(model) if mode == "compiled" else model
    b, t, V = tcfg["micro_batch"], tcfg["seq_len"], m["vocab_size"]
    data = torch.randint(0, V, (warmup + steps, b, t + 1), device="cuda")

    def step(i):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = fwd(data[i, :, :-1], data[i, :, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    for i in range(warmup):
        step(i)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for i in range(steps):
        loss = step(warmup + i)
    torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    if profile_dir:
        # Two more steps under the profiler, after the timed ones so they
        # do not disturb them (bench/profile_breakdown.py reads the trace).
        from torch.profiler import ProfilerActivity, profile
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for i in range(2):
                step(i)
            torch.cuda.synchronize()
        prof.export_chrome_trace(f"{profile_dir}/pytorch_{mode}.json")
    tps = b * t * steps / dt
    return {"impl": f"pytorch_{mode}", "tokens_per_s": tps,
            "mfu": tps * flops_per_token(m, t) / (peak * 1e12),
            "step_ms": 1e3 * dt / steps, "loss": float(loss),
            "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30,
            "device": torch.cuda.get_device_name(), "torch": torch.__version__}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--config", required=True)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--modes", default="eager,compiled")
    p.add_argument("--peak_tflops", type=float, default=989.0)
    p.add_argument("--profile_dir", default="", help="write pytorch_<mode>.json traces of 2 steps here")
    a = p.parse_args()
    m, tcfg = load_model_config(a.config)
    for mode in a.modes.split(","):
        r = run(mode, m, tcfg, a.steps, a.warmup, a.peak_tflops, a.profile_dir)
        print(json.dumps(r), flush=True)
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
