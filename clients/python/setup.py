"""Generates the kp.v1 protobuf/gRPC modules before packaging.

The .proto files live in the repository's proto/ folder (or $KP_PROTO_DIR);
the generated modules form the top-level package `kp.v1`, which is the
import path protoc bakes into them (`from kp.v1 import job_pb2`). They are
generated when setup.py runs (metadata and build steps both need the
package directories), and kept when no proto folder is around (an sdist).
"""
import os
import sys

from setuptools import setup

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import gen_stubs  # noqa: E402

PROTO_DIR = os.environ.get("KP_PROTO_DIR", os.path.join(HERE, "..", "..", "proto"))
if os.path.isdir(os.path.join(PROTO_DIR, "kp", "v1")):
    gen_stubs.generate(PROTO_DIR, HERE)

setup()
