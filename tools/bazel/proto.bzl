"""kp_grpc_cc_library: C++ code for .proto files from the system protoc.

Debian's protoc 3.21 and grpc_cpp_plugin 1.51 generate the code; the generated
files match the system libprotobuf/libgrpc++ we link, which the protobuf
source tree's rules could not guarantee offline. Must be used from the package
that is the proto import root (proto/), so "kp/v1/x.pb.h" is the include path.
"""

load("@rules_cc//cc:defs.bzl", "cc_library")

def kp_grpc_cc_library(name, srcs, grpc = True, deps = [], **kwargs):
    outs = []
    for s in srcs:
        base = s[:-len(".proto")]
        outs += [base + ".pb.h", base + ".pb.cc"]
        if grpc:
            outs += [base + ".grpc.pb.h", base + ".grpc.pb.cc"]
    pkg = native.package_name()
    grpc_flags = "--grpc_out=$(RULEDIR) --plugin=protoc-gen-grpc=/usr/bin/grpc_cpp_plugin" if grpc else ""
    native.genrule(
        name = name + "_codegen",
        srcs = srcs,
        outs = outs,
        cmd = "/usr/bin/protoc -I%s --cpp_out=$(RULEDIR) %s %s" % (
            pkg,
            grpc_flags,
            " ".join(["$(location %s)" % s for s in srcs]),
        ),
        message = "protoc %s" % name,
    )
    cc_library(
        name = name,
        srcs = [o for o in outs if o.endswith(".cc")],
        hdrs = [o for o in outs if o.endswith(".h")],
        includes = ["."],
        deps = deps + ["@system//:grpc"],
        **kwargs
    )
