"""Writes bench/results/NAME.json from one run's measurements.

Usage: write_results.py NAME --device D --command C [--date YYYY-MM-DD]
       --result name=..,value=..,unit=..,baseline_name=..,baseline=..  (repeatable)
The ratio is computed here as value / baseline, so it always matches the two
numbers measured side by side in the same run.
"""
import argparse
import datetime
import json
import os


def parse_result(text):
    fields = dict(kv.split("=", 1) for kv in text.split(","))
    r = {"name": fields["name"], "value": float(fields["value"]), "unit": fields["unit"],
         "baseline_name": fields.get("baseline_name"), "baseline": None, "ratio": None}
    if fields.get("baseline") not in (None, ""):
        r["baseline"] = float(fields["baseline"])
        r["ratio"] = r["value"] / r["baseline"] if r["baseline"] else None
    return r


def main():
    p = argparse.ArgumentParser()
    p.add_argument("name")
    p.add_argument("--device", required=True)
    p.add_argument("--command", required=True)
    p.add_argument("--date", default=datetime.date.today().isoformat())
    p.add_argument("--result", action="append", default=[])
    p.add_argument("--out_dir", default=os.path.join(os.path.dirname(__file__), "results"))
    a = p.parse_args()
    doc = {"device": a.device, "date": a.date, "command": a.command,
           "results": [parse_result(r) for r in a.result]}
    os.makedirs(a.out_dir, exist_ok=True)
    path = os.path.join(a.out_dir, a.name + ".json")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)
    print(path)


if __name__ == "__main__":
    main()
