#!/usr/bin/env python3
"""How fast the attention calls of a simulated zigzag ring schedule run, by
the memory layout of the blocks, against one full causal cuDNN call at the
same length; rounds alternate so clocks and heat treat every variant alike.

Layouts: bhsd-narrow (blocks are row ranges of each rank's [B,H,T,D] tensor:
what cp_attention_bench's cp_sim passes), bhsd-dense (each block copied to
its own contiguous tensor beforehand), bshd-narrow (row ranges of [B,T,H,D]
tensors viewed as [B,H,T,D], which are dense in memory).
Usage: probe_cp_block_layouts.py [--seq 131072] [--cps 2,8] [--rounds 3]"""
import argparse
import json

import torch

F = torch.ops.aten


def zigzag_segments(rank, n, chunk):
    return [(0, chunk, rank * chunk), (chunk, chunk, (2 * n - 1 - rank) * chunk)]


def plan(qsegs, ksegs):
    """(q_off, q_len, k_off, k_len, causal) with adjacent full pieces coalesced."""
    tasks = []
    for qo, ql, qp in qsegs:
        for ko, kl, kp in ksegs:
            if kp + kl <= qp:
                tasks.append([qo, ql, ko, kl, False])
            elif kp == qp:
                tasks.append([qo, ql, ko, kl, True])
    # coalesce full tasks over the same q rows with adjacent k rows, then same k rows adjacent q
    out = []
    for t in tasks:
        if out and not t[4] and not out[-1][4] and out[-1][0] == t[0] and out[-1][1] == t[1] \
                and out[-1][2] + out[-1][3] == t[2]:
            out[-1][3] += t[3]
        else:
            out.append(t)
    res = []
    for t in out:
        if res and not t[4] and not res[-1][4] and res[-1][2] == t[2] and res[-1][3] == t[3] \
                and res[-1][0] + res[-1][1] == t[0]:
            res[-1][1] += t[1]
        else:
            res.append(t)
    return res


def fwd(q, k, v, causal):
    o, lse = F._scaled_dot_product_cudnn_attention(q, k, v, None, True, 0.0, causal, False)[:2]
    return o, lse


def bwd(do, q, k, v, o, lse, causal):
    rng = torch.zeros(2, dtype=torch.long, device=q.device)
    return F._scaled_dot_product_cudnn_attention_backward(do, q, k, v, o, lse, rng, rng, None, None, None,
                                                          q.shape[2], k.shape[2], 0.0, causal)


def timed(fn, iters=2):
    fn()
    torch.cuda.synchronize()
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    for _ in range(iters):
        fn()
    b.record()
    b.synchronize()
    return a.elapsed_time(b) / iters


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--seq", type=int, default=131072)
    p.add_argument("--cps", default="2,8")
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    B, H, D, T = 1, 16, 128, a.seq
    dev = "cuda"
    torch.manual_seed(0)
    mk = lambda: torch.randn(B, T, H, D, device=dev, dtype=torch.bfloat16)  # BSHD storage
    q_s, k_s, v_s, do_s = mk(), mk(), mk(), mk()
    bhsd = lambda x: x.transpose(1, 2).contiguous()
    q_h, k_h, v_h, do_h = bhsd(q_s), bhsd(k_s), bhsd(v_s), bhsd(do_s)
    full = {}
    for name, (q, k, v, do) in {"bhsd": (q_h, k_h, v_h, do_h),
                                 "bshd": tuple(x.transpose(1, 2) for x in (q_s, k_s, v_s, do_s))}.items():
        o, lse = fwd(q, k, v, True)
        full[name] = (lambda q=q, k=k, v=v, do=do, o=o, lse=lse: (fwd(q, k, v, True), bwd(do, q, k, v, o, lse, True)))
    for n in [int(c) for c in a.cps.split(",")]:
        chunk = T // (2 * n)
        order = [(r * chunk, (2 * n - 1 - r) * chunk) for r in range(n)]

        def shard(x, dim):  # rank r's two chunks along `dim`
            return [torch.cat([x.narrow(dim, order[r][0], chunk), x.narrow(dim, order[r][1], chunk)], dim)
                    for r in range(n)]
        variants = {}
        for layout in ["bhsd-narrow", "bhsd-dense", "bshd-narrow"]:
            if layout.startswith("bhsd"):
                qs, ks, vs, ds = (shard(x, 2) for x in (q_h, k_h, v_h, do_h))
            else:
                qs, ks, vs, ds = ([t.transpose(1, 2) for t in shard(x, 1)] for x in (q_s, k_s, v_s, do_s))
            calls = []
            for r in range(n):
                for t in range(n):
                    src = (r - t) % n
                    for qo, ql, ko, kl, causal in plan(zigzag_segments(r, n, chunk), zigzag_segments(src, n, chunk)):
                        q = qs[r].narrow(2, qo, ql)
                        k, v = ks[src].narrow(2, ko, kl), vs[src].narrow(2, ko, kl)
                        do = ds[r].narrow(2, qo, ql)
                        if layout == "bhsd-dense":
                            q, k, v, do = (x.contiguous() for x in (q, k, v, do))
                        o, lse = fwd(q, k, v, causal)
                        calls.append((q, k, v, do, o, lse, causal))
            def run(calls=calls):
                for q, k, v, do, o, lse, causal in calls:
                    fwd(q, k, v, causal)
                for q, k, v, do, o, lse, causal in calls:
                    bwd(do, q, k, v, o, lse, causal)
            variants[layout] = (run, len(calls))
        best = {}
        for _ in range(a.rounds):
            for name, fn in full.items():
                best["full-" + name] = min(best.get("full-" + name, 1e9), timed(fn))
            for name, (fn, _) in variants.items():
                best[name] = min(best.get(name, 1e9), timed(fn))
        for name, (fn, ncalls) in variants.items():
            ref = best["full-bshd" if name.startswith("bshd") else "full-bhsd"]
            print(json.dumps({"probe": "cp_block_layouts", "cp": n, "seq": T, "layout": name, "calls": ncalls,
                              "ms": round(best[name], 2), "full_ms": round(ref, 2),
                              "ratio_full_over_calls": round(ref / best[name], 4),
                              "device": torch.cuda.get_device_name()}), flush=True)
        print(json.dumps({"probe": "cp_block_layouts", "full_bhsd_ms": round(best["full-bhsd"], 2),
                          "full_bshd_ms": round(best["full-bshd"], 2)}), flush=True)


if __name__ == "__main__":
    main()
