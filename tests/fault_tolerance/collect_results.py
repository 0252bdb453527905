"""Writes bench/results/fault_tolerance.json from the RESULT lines that the
fault-tolerance tests print (one JSON object per fault).

Usage: collect_results.py TESTLOGS_DIR [OUT] [--gpu-log LOG]
  TESTLOGS_DIR: bazel-testlogs/tests/fault_tolerance of the run (with the
  KP_BAZEL_OUTPUT_BASE you used: $KP_BAZEL_OUTPUT_BASE/execroot/kp/bazel-out/k8-fastbuild/testlogs/tests/fault_tolerance)
  --gpu-log LOG: the log of gpu_worker_sigkill_test from a GPU machine
  (bundle/logs/gpu_worker_sigkill_test.log after bundle/gpu_check.sh); its
  result is added when the log exists and holds one (a run that skipped
  for want of a GPU holds none). Repeatable.

Every fault the issue names must have a result; missing ones are listed on
stderr (the GPU one only when a --gpu-log was given).
"""
import datetime
import glob
import json
import os
import sys

FIELDS = ["recovered", "samples_lost", "samples_repeated", "detect_s", "resume_s", "steps_lost"]
# One result per fault (issue 12); coordinator_and_agent_sigkill is extra.
EXPECTED = ["worker_sigkill", "agent_sigkill", "agent_sigstop", "hung_collective", "coordinator_sigkill",
            "kill_during_checkpoint", "coordinator_and_agent_sigkill"]
GPU_EXPECTED = ["gpu_worker_sigkill"]


def read_results(path, test):
    results = []
    for line in open(path, errors="replace"):
        if line.startswith("RESULT "):
            r = json.loads(line[len("RESULT "):])
            # The project's result schema: the headline value is the time
            # from the fault to training again (resume_s); samples lost or
            # repeated and steps lost ride along.
            resume = r.get("resume_s")
            entry = {"name": r.pop("name"), "value": resume,
                     "unit": "s (fault to training resumed)" if resume is not None else None,
                     "baseline_name": None, "baseline": None, "ratio": None}
            for f in FIELDS:
                entry[f] = r.pop(f, None)
            entry.update(r)  # extra details (notes, steps)
            entry["test"] = test
            results.append(entry)
    return results


def main():
    args = sys.argv[1:]
    gpu_logs = []
    while "--gpu-log" in args:
        i = args.index("--gpu-log")
        gpu_logs.append(args[i + 1])
        del args[i:i + 2]
    logs, out = args[0], (args[1] if len(args) > 1 else
                          os.path.join(os.path.dirname(__file__), "..", "..", "bench", "results",
                                       "fault_tolerance.json"))
    results = []
    for path in sorted(glob.glob(os.path.join(logs, "*", "test.log"))):
        results += read_results(path, os.path.basename(os.path.dirname(path)))
    for path in gpu_logs:
        if os.path.exists(path):
            gpu = read_results(path, os.path.basename(path).rsplit(".", 1)[0])
            if not gpu:
                print("no RESULT in", path, "(skipped: no GPU?)", file=sys.stderr)
            results += gpu
        else:
            print("no GPU log at", path, file=sys.stderr)
    names = {r["name"] for r in results}
    missing = [n for n in EXPECTED + (GPU_EXPECTED if gpu_logs else []) if n not in names]
    if missing:
        print("missing results:", ", ".join(missing), file=sys.stderr)
    doc = {"device": "CPU (2 cores), loopback: real kp-coordinator, kp-agent and kp-train processes; dp=2 over Gloo"
                     + ("; gpu_worker_sigkill: one GPU, dp=1 (its entry says device cuda)" if any(
                         r["name"] in GPU_EXPECTED for r in results) else ""),
           "date": datetime.date.today().isoformat(),
           "command": "tools/bazel.sh test //tests/fault_tolerance/... ; "
                      "python3 tests/fault_tolerance/collect_results.py <testlogs>/tests/fault_tolerance"
                      " [--gpu-log bundle/logs/gpu_worker_sigkill_test.log]",
           "results": results}
    tmp = out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    os.replace(tmp, out)
    print(out, len(results), "results")


if __name__ == "__main__":
    main()
