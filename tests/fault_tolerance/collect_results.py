"""Writes bench/results/fault_tolerance.json from the RESULT lines that the
fault-tolerance tests print (one JSON object per fault).

Usage: collect_results.py TESTLOGS_DIR [OUT]
  TESTLOGS_DIR: bazel-testlogs/tests/fault_tolerance of the run (with the
  KP_BAZEL_OUTPUT_BASE you used: $KP_BAZEL_OUTPUT_BASE/execroot/kp/bazel-out/k8-fastbuild/testlogs/tests/fault_tolerance)
"""
import datetime
import glob
import json
import os
import sys

FIELDS = ["recovered", "samples_lost", "samples_repeated", "detect_s", "resume_s", "steps_lost"]


def main():
    logs, out = sys.argv[1], (sys.argv[2] if len(sys.argv) > 2 else
                              os.path.join(os.path.dirname(__file__), "..", "..", "bench", "results",
                                           "fault_tolerance.json"))
    results = []
    for path in sorted(glob.glob(os.path.join(logs, "*", "test.log"))):
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
                entry["test"] = os.path.basename(os.path.dirname(path))
                results.append(entry)
    doc = {"device": "CPU (2 cores), loopback: real kp-coordinator, kp-agent and kp-train processes; dp=2 over Gloo",
           "date": datetime.date.today().isoformat(),
           "command": "tools/bazel.sh test //tests/fault_tolerance/... ; "
                      "python3 tests/fault_tolerance/collect_results.py <testlogs>/tests/fault_tolerance",
           "results": results}
    tmp = out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    os.replace(tmp, out)
    print(out, len(results), "results")


if __name__ == "__main__":
    main()
