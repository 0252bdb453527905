"""Checks a checkpoint written by write_checkpoint_for_python with the
`safetensors` Python package: every value is recomputed here with numpy from
the same formulas and compared."""
import base64
import json
import os
import sys

import numpy as np
import safetensors
from safetensors import safe_open
from safetensors.numpy import load_file


def fail(msg):
    print("FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


def decode_bf16(raw):
    return (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)


def decode_f8(raw, exp_bits, man_bits):
    bias = (1 << (exp_bits - 1)) - 1
    out = []
    for b in raw:
        sign = -1.0 if b >> 7 else 1.0
        e = (b >> man_bits) & ((1 << exp_bits) - 1)
        m = b & ((1 << man_bits) - 1)
        if e == 0:
            out.append(sign * m / (1 << man_bits) * 2.0 ** (1 - bias))
        else:
            out.append(sign * (1 + m / (1 << man_bits)) * 2.0 ** (e - bias))
    return np.array(out)


def main(run_dir):
    ck = os.path.join(run_dir, "checkpoints")
    latest = open(os.path.join(ck, "LATEST")).read().strip()
    if latest != "step_00000123":
        fail("LATEST is %r" % latest)
    d = os.path.join(ck, latest)
    state = json.load(open(os.path.join(d, "state.json")))
    if state["step"] != 123 or state["data_position"] != 123 * 64 or state["config_hash"] != "py-test":
        fail("state.json: %r" % state)
    if base64.b64decode(state["rng"]["cpu"]) != bytes(range(256)):
        fail("rng bytes differ")
    if sorted(state["parts"]) != ["model", "optimizer"]:
        fail("parts: %r" % state["parts"])

    i = lambda n: np.arange(n, dtype=np.int64)
    expected_model = {
        "f64": np.sin(0.37 * i(105) + 0.5).reshape(3, 5, 7) * 3,
        "f32": (np.cos(0.11 * i(24)) * 7.5).astype(np.float32).reshape(4, 6),
        "f16": (((i(15) * 37) % 201 - 100) / 8.0).astype(np.float16).reshape(5, 3),
        "i64": i(9) * i(9) * 1000003 - 5000000000000,
        "i32": ((i(24) * 7919) % 100003 - 50000).astype(np.int32).reshape(2, 3, 4),
        "u8": ((i(33) * 31 + 7) % 256).astype(np.uint8),
    }
    model_path = os.path.join(d, "model.safetensors")
    model = load_file(model_path)  # the numpy loader: numpy-native dtypes
    if sorted(model) != sorted(expected_model):
        fail("model tensors: %r" % sorted(model))
    for name, want in expected_model.items():
        got = model[name]
        if got.dtype != want.dtype or got.shape != want.shape:
            fail("%s: %s %s, want %s %s" % (name, got.dtype, got.shape, want.dtype, want.shape))
        tol = {"f64": 1e-12, "f32": 1e-6}.get(name, 0)
        if tol:
            ok = np.allclose(got, want, rtol=tol, atol=tol)
        else:
            ok = np.array_equal(got, want)
        if not ok:
            fail("%s differs: %s vs %s" % (name, got.ravel()[:5], want.ravel()[:5]))
    with safe_open(model_path, framework="numpy") as f:
        meta = f.metadata()
        if meta.get("step") != "123" or meta.get("part") != "model":
            fail("model metadata: %r" % meta)

    # Dtypes numpy lacks: the Rust deserializer validates the file and hands
    # back raw bytes, decoded here by hand.
    opt = dict(safetensors.deserialize(open(os.path.join(d, "optimizer.safetensors"), "rb").read()))
    bf16 = opt["bf16"]
    if bf16["dtype"] != "BF16" or bf16["shape"] != [6, 4]:
        fail("bf16 header: %r" % {k: v for k, v in bf16.items() if k != "data"})
    want = ((i(24) * 53) % 255 - 127) / 4.0
    if not np.array_equal(decode_bf16(bytes(bf16["data"])).astype(np.float64), want):
        fail("bf16 values differ")
    want8 = ((i(16) % 16) - 8) * 0.25
    for name, dtype, e, m in [("f8_e4m3", "F8_E4M3", 4, 3), ("f8_e5m2", "F8_E5M2", 5, 2)]:
        t = opt[name]
        if t["dtype"] != dtype or t["shape"] != [16]:
            fail("%s header: %r" % (name, t["dtype"]))
        if not np.array_equal(decode_f8(bytes(t["data"]), e, m), want8):
            fail("%s values differ: %s" % (name, decode_f8(bytes(t["data"]), e, m)))
    print("OK: checkpoint %s loads in Python (safetensors %s) and matches" % (d, safetensors.__version__))


if __name__ == "__main__":
    main(sys.argv[1])
