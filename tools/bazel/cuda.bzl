"""kp_cuda_library: compiles .cu files with nvcc into a static cc_library.

Bazel 4 has no CUDA rules; this runs the toolkit's nvcc in a genrule for
sm_90a (Hopper machine code, with wgmma) plus compute_90 PTX so newer GPUs can
JIT it, and wraps the archive in a cc_library that C++ code links like any
other. Kernels keep a plain C++ launch API in their headers so the engine never
needs nvcc.
"""

load("@rules_cc//cc:defs.bzl", "cc_library")

NVCC = "/usr/local/cuda/bin/nvcc"

NVCC_FLAGS = [
    "-std=c++17",
    "-O3",
    "-lineinfo",
    "-gencode arch=compute_90a,code=sm_90a",
    "-gencode arch=compute_90,code=compute_90",
    "-Xcompiler -fPIC",
    "-Xcompiler -Wall",
    "-Werror all-warnings",
    "--expt-relaxed-constexpr",
]

def kp_cuda_library(name, srcs, hdrs = [], deps = [], nvcc_flags = [], **kwargs):
    cu = [s for s in srcs if s.endswith(".cu")]
    other = [s for s in srcs if not s.endswith(".cu")]
    archive = "lib%s_cuda.a" % name
    compile_cmds = []
    for s in cu:
        obj = "$$T/%s.o" % s.replace("/", "_")
        compile_cmds.append("%s %s -I. -I$(GENDIR) -isystem /usr/local/cuda/include -c $(location %s) -o %s" % (
            NVCC,
            " ".join(NVCC_FLAGS + nvcc_flags),
            s,
            obj,
        ))
    native.genrule(
        name = name + "_nvcc",
        srcs = cu + other + hdrs,
        outs = [archive],
        cmd = "set -e; T=$$(mktemp -d); " + "; ".join(compile_cmds) +
              "; ar rcs $@ $$T/*.o; rm -rf $$T",
        message = "nvcc %s" % name,
    )
    cc_library(
        name = name,
        srcs = [archive],
        hdrs = hdrs,
        linkstatic = 1,
        deps = deps + ["@cuda//:cudart"],
        **kwargs
    )
