"""The PyTorch side of "Longest training step on one GPU" (issue 11): the
long-context model (configs/long_context_1gpu.yaml: d_model 2048, 16 heads x
128, 4 layers, vocab 50304) written the way a skilled PyTorch user would for
long sequences: eager, torch.utils.checkpoint around every block, SDPA
(cuDNN first, then flash), BF16 autocast over FP32 master weights with a
BF16 residual stream, fused AdamW, and the loss computed in chunks with each
chunk's logits checkpointed (no [T, vocab] tensor is kept).

Each length runs in a fresh subprocess with its own timeout, so an OOM does
not poison the next; one JSON line per length:
  {tokens, ok, reason, step_s, peak_gpu_gib, peak_host_gib, loss, ...}

Usage: python3 bench/pytorch_long_context.py --config configs/long_context_1gpu.yaml \
         --lengths 65536,131072,262144,524288,1048576 [--timeout 240] [--stop_on_fail]
"""
import argparse
import contextlib
import json
import math
import os
import resource
import subprocess
import sys
import time


def load_model_config(path):
    try:
        import yaml
        with open(path) as f:
            cfg = yaml.safe_load(f)
    except ImportError:  # no PyYAML: the configs are flat two-level mappings
        cfg, section = {}, None
        for line in open(path):
            line = line.split("#")[0].rstrip()
            if not line.strip():
                continue
            key, _, val = line.strip().partition(":")
            if not line.startswith(" "):
                section = cfg.setdefault(key, {})
            elif line.startswith("  ") and not line.startswith("   ") and val.strip():
                v = val.strip()
                try:
                    v = int(v)
                except ValueError:
                    try:
                        v = float(v)
                    except ValueError:
                        pass
                section[key] = v
    return cfg["model"], cfg.get("training", {})


def build(m):
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    from torch.utils.checkpoint import checkpoint

    def rms_norm(x, weight, eps):
        # ATen's fused kernel in the activation dtype (the weight cast is in
        # the graph, so its gradient lands in fp32).
        return F.rms_norm(x, (x.shape[-1],), weight.to(x.dtype), eps)

    def rope(x, cos, sin):
        h = x.shape[-1] // 2
        x1, x2 = x[..., :h], x[..., h:]
        return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)

    class Block(nn.Module):
        def __init__(self, d, heads, kv_heads, ffn, eps):
            super().__init__()
            self.heads, self.kv_heads, self.dh, self.eps = heads, kv_heads, d // heads, eps
            self.norm1 = nn.Parameter(torch.ones(d))
            self.qkv = nn.Linear(d, (heads + 2 * kv_heads) * self.dh, bias=False)
            self.out = nn.Linear(heads * self.dh, d, bias=False)
            self.norm2 = nn.Parameter(torch.ones(d))
            self.gate_up = nn.Linear(d, 2 * ffn, bias=False)
            self.down = nn.Linear(ffn, d, bias=False)

        def forward(self, x, cos, sin):
            b, t, d = x.shape
            q, k, v = self.qkv(rms_norm(x, self.norm1, self.eps)).split(
                [self.heads * self.dh, self.kv_heads * self.dh, self.kv_heads * self.dh], dim=-1)
            q = q.view(b, t, self.heads, self.dh).transpose(1, 2)
            k = k.view(b, t, self.kv_heads, self.dh).transpose(1, 2)
            v = v.view(b, t, self.kv_heads, self.dh).transpose(1, 2)
            q, k = rope(q, cos, sin), rope(k, cos, sin)
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                               enable_gqa=self.kv_heads != self.heads)
            x = x + self.out(a.transpose(1, 2).reshape(b, t, -1))
            g, u = self.gate_up(rms_norm(x, self.norm2, self.eps)).chunk(2, dim=-1)
            return x + self.down(F.silu(g) * u)

    class Llama(nn.Module):
        def __init__(self, m):
            super().__init__()
            d = m["d_model"]
            self.embed = nn.Embedding(m["vocab_size"], d)
            self.blocks = nn.ModuleList(
                Block(d, m["n_heads"], m.get("n_kv_heads", m["n_heads"]), m["ffn_hidden"],
                      m.get("norm_eps", 1e-5)) for _ in range(m["n_layers"]))
            self.norm = nn.Parameter(torch.ones(d))
            self.eps = m.get("norm_eps", 1e-5)
            self.head = nn.Linear(d, m["vocab_size"], bias=False)
            self.dh = d // m["n_heads"]
            self.theta = m.get("rope_theta", 10000.0)

        def forward(self, tokens, targets, chunk):
            t = tokens.shape[1]
            inv = 1.0 / (self.theta ** (torch.arange(0, self.dh, 2, device=tokens.device,
                                                     dtype=torch.float64) / self.dh))
            ang = torch.outer(torch.arange(t, device=tokens.device, dtype=torch.float64), inv)
            cos, sin = ang.cos().to(torch.bfloat16), ang.sin().to(torch.bfloat16)
            x = self.embed(tokens).to(torch.bfloat16)  # bf16 residual stream
            for blk in self.blocks:
                x = checkpoint(blk, x, cos, sin, use_reentrant=False)
            h = rms_norm(x, self.norm, self.eps).view(-1, x.shape[-1])
            tgt = targets.reshape(-1)
            total = None
            # split(): one gradient buffer for h (its backward concatenates),
            # unlike slicing, which would build a full-size zero tensor per chunk.
            for hc, tc in zip(h.split(chunk), tgt.split(chunk)):
                part = checkpoint(self._chunk_loss, hc, tc, use_reentrant=False)
                total = part if total is None else total + part
            return total / tgt.numel()

        def _chunk_loss(self, hc, tc):
            return F.cross_entropy(self.head(hc).float(), tc, reduction="sum")

    return Llama(m)


def one_length(a):
    """Runs in the child: one or more steps at a.tokens; prints one JSON line."""
    import torch
    torch.backends.cuda.matmul.allow_tf32 = True
    cuda = a.device == "cuda"
    m, _ = load_model_config(a.config)
    t = a.tokens
    res = {"impl": "pytorch_eager_ckpt", "tokens": t, "ok": False, "reason": "",
           "step_s": None, "peak_gpu_gib": None, "peak_host_gib": None, "loss": None,
           "steps": a.steps, "loss_chunk_tokens": a.chunk}
    phase = "setup"
    try:
        torch.manual_seed(0)
        model = build(m).to(a.device)
        opt = torch.optim.AdamW(model.parameters(), lr=2e-4, weight_decay=0.1, fused=True)
        V = m["vocab_size"]
        data = torch.randint(0, V, (a.steps, 1, t + 1), device=a.device)
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        times = []
        loss_v = None
        attn = contextlib.nullcontext  # a fresh context per step (they are single-use)
        if cuda:
            # cuDNN's fused attention first (the faster backend on H100/H200
            # at 16 x 128, facts.md), flash as the fallback; kept through
            # backward, where the checkpoints recompute the forward.
            from torch.nn.attention import SDPBackend, sdpa_kernel
            order = [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION]
            def attn():
                return sdpa_kernel(order, set_priority=True)
            res["sdpa_backends"] = "cudnn,flash"
        for i in range(a.steps):
            t0 = time.perf_counter()
            phase = f"forward (step {i})"
            with attn():
                with torch.autocast(a.device, dtype=torch.bfloat16):
                    loss = model(data[i, :, :-1], data[i, :, 1:], a.chunk)
                phase = f"backward (step {i})"
                loss.backward()
            phase = f"optimizer (step {i})"
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            loss_v = float(loss)  # syncs
            if cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        res["loss"] = loss_v
        res["step_times_s"] = times
        res["step_s"] = times[-1]
        finite = loss_v is not None and math.isfinite(loss_v)
        res["ok"] = finite
        if not finite:
            res["reason"] = f"non-finite loss {loss_v}"
    except torch.OutOfMemoryError as e:
        first = str(e).splitlines()[0] if str(e) else "out of memory"
        res["reason"] = f"CUDA OOM in {phase}: {first[:300]}"
    except RuntimeError as e:
        res["reason"] = f"error in {phase}: {str(e).splitlines()[0][:300]}"
    if cuda:
        res["peak_gpu_gib"] = torch.cuda.max_memory_allocated() / 2**30
        res["peak_gpu_reserved_gib"] = torch.cuda.max_memory_reserved() / 2**30
        res["device"] = torch.cuda.get_device_name()
    res["peak_host_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    res["torch"] = torch.__version__
    print(json.dumps(res), flush=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--config", default="configs/long_context_1gpu.yaml")
    p.add_argument("--lengths", default="65536,131072,262144,524288,1048576")
    p.add_argument("--steps", type=int, default=1, help="steps per length (the last is timed)")
    p.add_argument("--chunk", type=int, default=8192, help="loss chunk (tokens)")
    p.add_argument("--timeout", type=float, default=300, help="seconds per length")
    p.add_argument("--budget", type=float, default=0, help="total seconds; 0: none")
    p.add_argument("--stop_on_fail", action="store_true", help="stop at the first failure")
    p.add_argument("--device", default="cuda", help=argparse.SUPPRESS)  # cpu: smoke tests
    p.add_argument("--tokens", type=int, default=0, help=argparse.SUPPRESS)  # child mode
    a = p.parse_args()
    if a.tokens:
        one_length(a)
        return
    start = time.time()
    for t in [int(x) for x in a.lengths.split(",") if x]:
        timeout = a.timeout
        if a.budget > 0:
            timeout = min(timeout, a.budget - (time.time() - start))
            if timeout < 20:
                print(json.dumps({"impl": "pytorch_eager_ckpt", "tokens": t, "ok": False,
                                  "reason": "not run: out of time budget"}), flush=True)
                break
        cmd = [sys.executable, os.path.abspath(__file__), "--config", a.config, "--tokens", str(t),
               "--steps", str(a.steps), "--chunk", str(a.chunk), "--device", a.device]
        t0 = time.time()
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
            line = next((l for l in reversed(out.stdout.splitlines()) if l.startswith("{")), None)
            if line is None:
                tail = (out.stderr or "").strip().splitlines()[-3:]
                r = {"impl": "pytorch_eager_ckpt", "tokens": t, "ok": False,
                     "reason": f"child exited {out.returncode}: {' | '.join(tail)[:400]}"}
            else:
                r = json.loads(line)
        except subprocess.TimeoutExpired:
            r = {"impl": "pytorch_eager_ckpt", "tokens": t, "ok": False,
                 "reason": f"timeout after {timeout:.0f} s"}
        r["wall_s"] = time.time() - t0
        print(json.dumps(r), flush=True)
        if a.stop_on_fail and not r.get("ok"):
            break


if __name__ == "__main__":
    main()
