#!/usr/bin/env python3
"""Generates Python stubs for proto/kp/v1/*.proto with grpcio-tools.

    python gen_stubs.py [--proto_dir ../../proto] [--out .]

writes OUT/kp/__init__.py, OUT/kp/v1/__init__.py and OUT/kp/v1/*_pb2{,_grpc}.py.
"""
import argparse
import glob
import os
import sys


def generate(proto_dir: str, out_dir: str) -> list:
    from grpc_tools import protoc  # imported late: only needed to build
    import grpc_tools

    proto_dir = os.path.abspath(proto_dir)
    protos = sorted(glob.glob(os.path.join(proto_dir, "kp", "v1", "*.proto")))
    if not protos:
        raise SystemExit(f"gen_stubs: no kp/v1/*.proto under {proto_dir}")
    os.makedirs(os.path.join(out_dir, "kp", "v1"), exist_ok=True)
    for pkg in ("kp", os.path.join("kp", "v1")):
        init = os.path.join(out_dir, pkg, "__init__.py")
        if not os.path.exists(init):
            open(init, "w").close()
    well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    args = ["grpc_tools.protoc", f"-I{proto_dir}", f"-I{well_known}",
            f"--python_out={out_dir}", f"--grpc_python_out={out_dir}"] + protos
    if protoc.main(args) != 0:
        raise SystemExit("gen_stubs: protoc failed")
    return protos


def main() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--proto_dir", default=os.path.join(here, "..", "..", "proto"))
    p.add_argument("--out", default=here)
    a = p.parse_args()
    protos = generate(a.proto_dir, a.out)
    print(f"generated stubs for {len(protos)} files into {os.path.join(a.out, 'kp', 'v1')}", file=sys.stderr)


if __name__ == "__main__":
    main()
