"""Turns one device session's raw outputs (bench/device_*.sh, fp8_bench,
cp_attention_bench) into bench/results/*.json. Every number is read from the
files; nothing is typed in. Usage:
  collect_device_results.py RAW_DIR --date YYYY-MM-DD [--cpu_tiny METRICS.jsonl --entropy H]
RAW_DIR holds eng/, fp8_bench.jsonl, cp_attention.jsonl, long_1m.jsonl,
small_bf16.jsonl, small_fp8.jsonl as the device scripts write them. A part
whose raw files are absent is not rewritten: its entries stay as an earlier
run wrote them, each stamped with that run's device, date and command (see
write()), so a file never mixes runs without saying which entry came from
which.
"""
import argparse
import json
import os
import re
import statistics

HERE = os.path.dirname(os.path.abspath(__file__))


def rows(path):
    with open(path) as f:
        return [json.loads(l) for l in f if l.strip()]


def kp_tokens_per_s(path, warmup=5):
    r = [x for x in rows(path) if x["step"] >= warmup and not x.get("skipped")]
    return statistics.median(x["tokens_per_s"] for x in r)


def result(name, value, unit, baseline_name=None, baseline=None, **extra):
    r = {"name": name, "value": value, "unit": unit, "baseline_name": baseline_name,
         "baseline": baseline, "ratio": (value / baseline) if baseline else None}
    r.update(extra)
    return r


def write(name, device, date, command, results):
    """Writes results/NAME.json: this run's results, then every earlier entry
    this run did not produce (by name), stamped with the device, date and
    command of the run that did, where the entry does not carry its own."""
    path = os.path.join(HERE, "results", name + ".json")
    new = {r["name"] for r in results}
    kept = []
    if os.path.exists(path):
        old = json.load(open(path))
        for r in old["results"]:
            if r["name"] in new:
                continue
            r = dict(r)
            for key in ("device", "date", "command"):
                r.setdefault(key, old[key])
            kept.append(r)
    with open(path + ".tmp", "w") as f:
        json.dump({"device": device, "date": date, "command": command, "results": results + kept},
                  f, indent=1)
        f.write("\n")
    os.replace(path + ".tmp", path)
    print(path, f"({len(results)} new, {len(kept)} kept from earlier runs)")


def have(*parts):
    return os.path.exists(os.path.join(*parts))


def device_name(raw):
    for path in (os.path.join(raw, "eng", "device.txt"), os.path.join(raw, "device.txt")):
        if os.path.exists(path):
            return open(path).read().strip().splitlines()[0]
    for name in ("cp_attention.jsonl", "fp8_bench.jsonl"):
        if have(raw, name):
            return rows(os.path.join(raw, name))[0]["device"]
    raise SystemExit(f"{raw}: no device.txt, eng/device.txt or bench output naming the device")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("raw")
    p.add_argument("--date", required=True)
    p.add_argument("--cpu_tiny")
    p.add_argument("--entropy", type=float)
    p.add_argument("--cpu_command", default="tools/run.sh")
    p.add_argument("--cpu_date")
    a = p.parse_args()
    raw = a.raw
    device = device_name(raw)

    # Engine: kp-train vs PyTorch eager / torch.compile, same run, same GPU.
    eng, fp8 = [], []
    if have(raw, "eng", "kp_1p3b_bf16.jsonl"):
        kp_bf16 = kp_tokens_per_s(os.path.join(raw, "eng", "kp_1p3b_bf16.jsonl"))
        kp_fp8 = kp_tokens_per_s(os.path.join(raw, "eng", "kp_1p3b_fp8.jsonl"))
        if have(raw, "eng", "pytorch_1p3b.jsonl"):  # absent with SKIP_PYTORCH=1
            torch = {r["impl"]: r["tokens_per_s"] for r in rows(os.path.join(raw, "eng", "pytorch_1p3b.jsonl"))}
            eng += [
                result("step_1p3b_bf16_vs_compiled", kp_bf16, "tokens/s", "pytorch torch.compile",
                       torch["pytorch_compiled"]),
                result("step_1p3b_bf16_vs_eager", kp_bf16, "tokens/s", "pytorch eager", torch["pytorch_eager"]),
            ]
        # Where the step's time goes (PROFILE=1): per kernel class, ms a step
        # against its floor (bench/profile_breakdown.py states the floors).
        bd = os.path.join(raw, "eng", "breakdown.jsonl")
        if os.path.exists(bd):
            for r in rows(bd):
                cls = r["class"].replace("/", "_").replace(" ", "_")
                eng.append(result(f"profile_{r['label']}_{cls}_ms", r["ms_per_step"], "ms per step",
                                  "floor ms (bench/profile_breakdown.py)", r["floor_ms"] or None,
                                  share=r.get("share"), tokens_per_s=r.get("tokens_per_s")))
        fp8.append(result("step_1p3b_fp8_vs_bf16", kp_fp8, "tokens/s", "kp-train bf16", kp_bf16,
                          command="bench/device_engine.sh 20"))
        lm_head = os.path.join(raw, "eng", "kp_1p3b_fp8_lm_head.jsonl")
        if os.path.exists(lm_head):
            fp8.append(result("step_1p3b_fp8_lm_head_vs_bf16", kp_tokens_per_s(lm_head), "tokens/s",
                              "kp-train bf16", kp_bf16, note="fp8.fp8_lm_head: true (not the default)",
                              command="bench/device_engine.sh 20"))
    if a.cpu_tiny:
        # Final loss: mean of the last 10 steps (one step's loss is one noisy batch).
        final = statistics.mean(r["loss"] for r in [r for r in rows(a.cpu_tiny) if r.get("loss") is not None][-10:])
        eng.append(result("cpu_tiny_loss_over_entropy", final / a.entropy, "ratio",
                          "corpus entropy rate (nats/token)", None, final_loss=final,
                          entropy_rate=a.entropy, date=a.cpu_date or a.date,
                          device="CPU: Debian 12, 2 cores (build machine)",
                          command=a.cpu_command))
    if eng:
        write("engine_step", device, a.date, "bench/device_engine.sh 20 (bundle from tools/build_bundle.sh)", eng)

    # FP8: GEMMs and layers at the 1.3B shapes, casts against copy bandwidth,
    # the end-to-end step and the convergence run.
    if have(raw, "fp8_bench.jsonl"):
        for r in rows(os.path.join(raw, "fp8_bench.jsonl")):
            n = r["name"]
            if n.startswith("gemm_"):
                fp8.append(result(n, r["fp8_tflops"], "TFLOP/s", "bf16 cuBLAS", r["bf16_tflops"],
                                  fp8_full_accum_tflops=r["fp8_full_accum_tflops"]))
            elif n.startswith("layer_"):
                fp8.append(result(n, r["bf16_us"], "us (bf16 time; ratio = fp8 speedup)", "fp8 layer fwd+bwd us",
                                  r["fp8_us"]) | {"ratio": r["bf16_us"] / r["fp8_us"]})
            elif n.startswith("cast_"):
                fp8.append(result(n, r["gb_per_s"], "GB/s", "device-to-device copy GB/s", r["copy_gb_per_s"],
                                  recipe=r["recipe"], transposed_copy=r["transposed_copy"]))
            elif n == "copy_d2d_bandwidth":
                fp8.append(result(n, r["gb_per_s"], "GB/s"))
    if have(raw, "small_fp8.jsonl"):
        b = rows(os.path.join(raw, "small_bf16.jsonl"))
        f = rows(os.path.join(raw, "small_fp8.jsonl"))
        # A run whose layers all chose BF16 compares BF16 with BF16: refuse it.
        fp8_layers = sum(1 for line in open(os.path.join(raw, "small_fp8.log"))
                         if re.search(r"fp8 layer \S+ .*: FP8", line))
        if fp8_layers == 0:
            raise SystemExit("small_fp8.log: no layer ran FP8; the convergence run tests nothing")
        if len(f) != len(b):
            raise SystemExit(f"convergence runs differ in length: bf16 {len(b)} steps, fp8 {len(f)}")
        tail = lambda rs: statistics.mean(x["loss"] for x in rs[-50:])
        fp8.append(result("loss_gap_fp8_vs_bf16_pct", 100.0 * (tail(f) - tail(b)) / tail(b), "percent",
                          None, None, steps=len(f), fp8_final_loss=tail(f), bf16_final_loss=tail(b),
                          fp8_layers=fp8_layers,
                          command="bench/device_fp8_convergence.sh 2000",
                          plot="bench/results/fp8_convergence.png"))
    if fp8:
        write("fp8", device, a.date, "bundle/kp-env.sh fp8_bench; bench/device_engine.sh 20; "
              "bench/device_fp8_convergence.sh 2000", fp8)

    # Context parallel on one GPU and the 1M-token step.
    cp = []
    if have(raw, "cp_attention.jsonl"):
        full = {}
        for r in rows(os.path.join(raw, "cp_attention.jsonl")):
            if r["impl"] == "sdpa":
                full[r["seq"]] = r["fwd_bwd_ms"]
        for r in rows(os.path.join(raw, "cp_attention.jsonl")):
            name = f"cp_{r['impl']}_{r['backend']}_cp{r['cp']}_seq{r['seq']}"
            cp.append(result(name, r["tflops"], "TFLOP/s (fwd+bwd, causal: 2.5*4*B*H*T^2*D/2)",
                             "at::scaled_dot_product_attention fwd+bwd ms", full[r["seq"]],
                             fwd_bwd_ms=r["fwd_bwd_ms"]) | {"ratio": full[r["seq"]] / r["fwd_bwd_ms"]})
    long_path = os.path.join(raw, "long_1m.jsonl")
    # The d-1024 1M-token step (bench/device_long.sh); the 1M run
    # (d 2048, against PyTorch) is bench/collect_cp_results.py's.
    last = rows(long_path)[-1] if os.path.exists(long_path) else None
    if last: cp.append(result("train_step_1m_tokens_one_gpu_s", last["time_s"], "s", None, None,
                     loss=last["loss"], peak_gpu_mem_bytes=last["peak_mem_bytes"],
                     tokens=1048576, config="configs/long_context_1gpu_d1024.yaml",
                     command="bench/device_long.sh (LONG_STEPS=2)"))
    if cp:
        write("cp_attention", device, a.date,
              "bundle/kp-env.sh cp_attention_bench --seqs 131072 --cps 2,8; bench/device_long.sh", cp)


if __name__ == "__main__":
    main()
