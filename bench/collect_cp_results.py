#!/usr/bin/env python3
"""Writes bench/results/context_parallel.json from one session's raw outputs;
every number is read from the files; a part whose input is not given keeps
its entry from the earlier run, stamped with that run's device, date and
command (collect_device_results.write). Usage:
  collect_cp_results.py --date YYYY-MM-DD --cp_jsonl CP_ATTENTION.jsonl
      --long_dir LONG_CONTEXT_DIR --error_log CP_ERROR_GROWTH_TEST.log
CP_ATTENTION.jsonl: `cp_attention_bench --seqs 131072 --cps 2,8` (one GPU).
LONG_CONTEXT_DIR: bench/device_long_context.sh's output (summary.json etc.).
CP_ERROR_GROWTH_TEST.log: //runtime/parallel:cp_error_growth_test's log (CPU).
"""
import argparse
import json
import os

from collect_device_results import result, rows, write


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--date", required=True)
    p.add_argument("--cp_jsonl", required=True)
    p.add_argument("--long_dir")
    p.add_argument("--error_log")
    a = p.parse_args()
    cp = rows(a.cp_jsonl)
    device = cp[0]["device"]
    full = {r["seq"]: r["fwd_bwd_ms"] for r in cp if r["impl"] == "local_cudnn" and r["cp"] == 1}
    out = []
    for n in (2, 8):
        sim = [r for r in cp if r["impl"] == "cp_sim" and r["cp"] == n and r["seq"] == 131072][0]
        # The full call timed in alternation with this simulation, where the
        # bench did so (local_cudnn_paired); else the one timed before.
        paired = [r for r in cp if r["impl"] == "local_cudnn_paired" and r["cp"] == n and r["seq"] == 131072]
        base = paired[0]["fwd_bwd_ms"] if paired else full[131072]
        calls = [r for r in cp if r["impl"] == "cp_sim_attention_calls_only" and r["cp"] == n
                 and r["seq"] == 131072]
        out.append(result(f"cp_sim_compute_efficiency_128k_n{n}", base / sim["fwd_bwd_ms"], "ratio",
                          "one cuDNN causal attention call, fwd+bwd ms (131072 tokens, 16x128)", base,
                          simulated_ms=sim["fwd_bwd_ms"], backend=sim["backend"],
                          attention_calls_only_ms=calls[0]["fwd_bwd_ms"] if calls else None,
                          command="bundle/kp-env.sh cp_attention_bench --seqs 131072 --cps 2,8")
                   | {"ratio": base / sim["fwd_bwd_ms"]})
    if a.error_log:
        append_error(out, a.error_log)
    if a.long_dir:
        append_long_context(out, a.long_dir)
    write("context_parallel", device, a.date,
          "cp_attention_bench --seqs 131072 --cps 2,8"
          + ("; cp_error_growth_test (CPU)" if a.error_log else "")
          + ("; bench/device_long_context.sh" if a.long_dir else ""), out)


def append_error(out, error_log):
    err = None
    for line in open(error_log):
        if line.startswith("{") and '"cp_bwd_rel_error_n16"' in line:
            r = json.loads(line)
            if err is None or r["value"] > err["value"]:
                err = r  # the worst mode
    out.append(result("cp_bwd_rel_error_n16", err["value"], "max relative error vs float64", None, None,
                      mode=err.get("mode"), device="CPU (build machine, float32 vs float64)",
                      command="tools/bazel.sh test //runtime/parallel:cp_error_growth_test"))


def append_long_context(out, long_dir):
    s = json.load(open(os.path.join(long_dir, "summary.json")))
    lc = s["long_context_1gpu_tokens"]
    kp_best = [r for r in s["kp"] if r["tokens"] == lc["value"]][0]
    pt_best = [r for r in s["pytorch"] if r.get("tokens") == lc["baseline"]][0]
    pt_fail = [r for r in s["pytorch"] if not r.get("ok")]
    out.append(result("long_context_1gpu_tokens", lc["value"], "tokens", "PyTorch eager (checkpointed "
                      "blocks, SDPA, chunked loss): longest length", lc["baseline"],
                      config="configs/long_context_1gpu.yaml", kp_step_s=kp_best["step_s"],
                      kp_peak_gpu_gib=kp_best["peak_gpu_gib"], kp_peak_host_gib=kp_best["peak_host_gib"],
                      pytorch_step_s=pt_best["step_s"], pytorch_peak_gpu_gib=pt_best["peak_gpu_gib"],
                      pytorch_stops=(pt_fail[0]["tokens"], pt_fail[0]["reason"][:160]) if pt_fail else None,
                      per_length={"kp": s["kp"], "pytorch": [{k: r.get(k) for k in (
                          "tokens", "ok", "step_s", "peak_gpu_gib", "peak_host_gib")} for r in s["pytorch"]]},
                      command="bench/device_long_context.sh"))


if __name__ == "__main__":
    main()
