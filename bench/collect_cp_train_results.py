#!/usr/bin/env python3
"""Writes bench/results/cp_train_one_gpu.json from `bench/device_verify.sh
cptrain cptrain_long`'s outputs: CP = 2 training as two kp-train processes
on one GPU against the same job on one process (CP = 1). Every number is
read from the files. Usage:
  collect_cp_train_results.py --date YYYY-MM-DD RAW
RAW holds device.txt, cp_train_one_gpu.txt, cp_train_long_one_gpu.txt and the
runs' logs unpacked from cp_train*_one_gpu.logs.tgz (RAW/cptrain/cp2/...,
RAW/cptrain_long/cp2/...).
"""
import argparse
import os
import re

from collect_device_results import result, write

PARTS = {  # device_verify part -> (report file, config, steps, result name)
    "cptrain": ("cp_train_one_gpu.txt", "configs/tiny.yaml (precision bf16)", 6, "tiny"),
    "cptrain_long": ("cp_train_long_one_gpu.txt", "configs/long_context.yaml (128K tokens, 16 layers, bf16)", 2,
                     "long_context"),
}


def last_step(log):
    """(seconds, tokens/s, MiB) of the last logged step."""
    steps = re.findall(r"\| (\d+) tok/s \| mfu [\d.]+% \| mem (\d+) MiB \| ([\d.]+) s", open(log).read())
    tok, mem, sec = steps[-1]
    return float(sec), float(tok), float(mem)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--date", required=True)
    p.add_argument("raw")
    a = p.parse_args()
    device = open(os.path.join(a.raw, "device.txt")).read().strip()
    out = []
    for part, (report, config, steps, label) in PARTS.items():
        text = open(os.path.join(a.raw, report)).read()
        if "PASS" not in text.split():
            raise SystemExit(f"{report}: the run did not pass; nothing recorded")
        worst = float(re.search(r"worst relative difference (\S+)", text).group(1))
        logs = os.path.join(a.raw, part, "cp2")
        mode = re.search(r"context parallel: mode (\w+)", open(os.path.join(logs, "r0.log")).read()).group(1)
        command = f"bench/device_verify.sh {part} (runtime/worker/cp_two_process_test.sh KP_TRAIN CONFIG cuda {steps})"
        out.append(result(f"cp2_vs_cp1_train_loss_max_rel_diff_{label}", worst,
                          f"max relative difference of the per-step loss over {steps} steps", None, None,
                          config=config, cp_mode=mode, command=command))
        if label != "long_context":
            continue  # the tiny model's steps take milliseconds: start-up noise
        _, one_tok, one_mem = last_step(os.path.join(logs, "one.log"))
        _, two_tok, two_mem = last_step(os.path.join(logs, "r0.log"))
        # Not a CP speed figure: both ranks time-share one GPU and every
        # transfer goes through host memory (Gloo). tok/s is the job's.
        out.append(result(f"cp2_two_processes_one_gpu_tokens_per_s_{label}", two_tok, "tokens/s (last step)",
                          "CP = 1, one process, same GPU (tokens/s)", one_tok, config=config, cp_mode=mode,
                          cp1_peak_mem_mib=one_mem, cp2_rank0_peak_mem_mib=two_mem, command=command))
    write("cp_train_one_gpu", device, a.date, "bench/device_verify.sh cptrain cptrain_long", out)


if __name__ == "__main__":
    main()
