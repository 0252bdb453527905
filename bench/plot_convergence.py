"""Draws loss curves from kp-train metrics files (JSON lines) into a PNG and
prints a JSON summary: final loss of each run (mean of the last 50 logged
steps) and the relative gap of each run to the first.
Usage: plot_convergence.py OUT.png LABEL=metrics.jsonl [LABEL=metrics.jsonl ...]
"""
import json
import sys

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt


def load(path):
    steps, losses = [], []
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            if r.get("loss") is not None and not r.get("skipped"):
                steps.append(r["step"])
                losses.append(r["loss"])
    return steps, losses


def main():
    out, runs = sys.argv[1], [a.split("=", 1) for a in sys.argv[2:]]
    summary, base = {}, None
    plt.figure(figsize=(8, 5))
    for label, path in runs:
        s, l = load(path)
        plt.plot(s, l, label=label, linewidth=1)
        tail = l[-50:]
        final = sum(tail) / max(1, len(tail))
        base = final if base is None else base
        summary[label] = {"steps": len(s), "final_loss": final,
                          "gap_vs_first_pct": 100.0 * (final - base) / base}
    plt.xlabel("step")
    plt.ylabel("training loss (nats/token)")
    plt.yscale("log")
    plt.legend()
    plt.grid(alpha=0.3)
    plt.title("kp-train: FP8 vs BF16, configs/small.yaml")
    plt.savefig(out, dpi=120, bbox_inches="tight")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
