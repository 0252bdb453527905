#!/usr/bin/env python3
"""Sums the GPU time of a Chrome trace (kineto: kp-train --profile_trace,
cp_attention_bench --profile_trace) by kernel: total per class and the
kernels that take longest, as JSON lines, so two traces of the same work
(say CP simulated at N = 8 and the one full attention call) show where the
extra time goes.
Usage: trace_kernels.py TRACE.json [--top 12] [--label NAME]
"""
import argparse
import collections
import json
import re

import profile_breakdown

# The step profile's classes (bench/profile_breakdown.py), with CP's folds and
# merges apart from the rest of the element-wise work.
FOLD = re.compile(r"Fold|Merge", re.I)


def classify(name):
    return "fold/merge" if FOLD.search(name) else profile_breakdown.classify(name)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("trace")
    p.add_argument("--top", type=int, default=12)
    p.add_argument("--label", default="")
    a = p.parse_args()
    events = json.load(open(a.trace))
    events = events.get("traceEvents", events) if isinstance(events, dict) else events
    by_name = collections.Counter()
    count = collections.Counter()
    for e in events:
        if e.get("ph") != "X" or e.get("cat") not in ("kernel", "gpu_memcpy", "gpu_memset"):
            continue
        by_name[e["name"]] += e.get("dur", 0)
        count[e["name"]] += 1
    by_class = collections.Counter()
    for name, us in by_name.items():
        by_class[classify(name)] += us
    total = sum(by_class.values())
    for cls, us in by_class.most_common():
        print(json.dumps({"label": a.label, "class": cls, "ms": us / 1e3,
                          "share": us / total if total else None}))
    for name, us in by_name.most_common(a.top):
        print(json.dumps({"label": a.label, "kernel": name[:120], "ms": us / 1e3, "calls": count[name]}))
    print(json.dumps({"label": a.label, "total_kernel_ms": total / 1e3}))


if __name__ == "__main__":
    main()
