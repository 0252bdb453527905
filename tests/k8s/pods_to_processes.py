"""Turns rendered kp manifests into the local processes Kubernetes would run.

Reads the multi-document YAML from `kprun k8s render` and writes a JSON plan:
the coordinator's argv (from the Deployment) and, per pod of the Indexed Job,
its argv and environment as the kubelet would give them: JOB_COMPLETION_INDEX,
the downward-API values (pod IP -> 127.0.0.1, the Job's controller uid), and
every mounted path moved under a local root. Service DNS names map to
127.0.0.1 and the gRPC port to a free local one.

usage: pods_to_processes.py RENDERED.yaml LOCAL_ROOT PORT > plan.json
"""
import json
import os
import sys

import yaml


def main():
    rendered, root, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    docs = [d for d in yaml.safe_load_all(open(rendered)) if d]
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    (config_map,) = by_kind["ConfigMap"]
    (deployment,) = by_kind["Deployment"]
    (job,) = by_kind["Job"]
    coord_service = next(s for s in by_kind["Service"] if s["spec"].get("clusterIP") != "None")
    headless = next(s for s in by_kind["Service"] if s["spec"].get("clusterIP") == "None")
    pod = job["spec"]["template"]["spec"]
    assert job["spec"]["completionMode"] == "Indexed"
    assert pod["subdomain"] == headless["metadata"]["name"], "pods must resolve through the headless Service"

    ns = coord_service["metadata"]["namespace"]
    svc_port = coord_service["spec"]["ports"][0]["port"]
    dns = f"{coord_service['metadata']['name']}.{ns}.svc:{svc_port}"
    mounts = {}
    for spec in (deployment["spec"]["template"]["spec"], pod):
        for c in spec["containers"]:
            for m in c.get("volumeMounts", []):
                mounts[m["mountPath"]] = os.path.join(root, m["name"])

    def localize(arg):
        arg = arg.replace(dns, f"127.0.0.1:{port}")
        arg = arg.replace(f"0.0.0.0:{svc_port}", f"127.0.0.1:{port}")
        for path in sorted(mounts, key=len, reverse=True):
            arg = arg.replace(path, mounts[path])
        return arg

    os.makedirs(mounts["/etc/kp/job"], exist_ok=True)
    for name, text in config_map["data"].items():
        with open(os.path.join(mounts["/etc/kp/job"], name), "w") as f:
            f.write(text)

    (coord,) = deployment["spec"]["template"]["spec"]["containers"]
    coord_argv = [localize(a) for a in coord["command"] + coord["args"]]
    coord_argv = [a for a in coord_argv if not a.startswith("--metrics_port=")] + ["--metrics_port=-1"]

    (worker,) = pod["containers"]
    uid = "00000000-0000-4000-8000-00000000c0de"
    pods = []
    for index in range(job["spec"]["completions"]):
        env = {"JOB_COMPLETION_INDEX": str(index)}
        for e in worker.get("env", []):
            if "value" in e:
                env[e["name"]] = localize(e["value"])
            else:
                field = e["valueFrom"]["fieldRef"]["fieldPath"]
                env[e["name"]] = {"status.podIP": "127.0.0.1",
                                  "metadata.labels['controller-uid']": uid}[field]
        pods.append({"argv": [localize(a) for a in worker["command"] + worker["args"]], "env": env})
    json.dump({"coordinator": coord_argv, "pods": pods, "mounts": mounts,
               "grace": pod["terminationGracePeriodSeconds"]}, sys.stdout, indent=1)


if __name__ == "__main__":
    main()
