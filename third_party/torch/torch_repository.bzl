"""Finds libtorch inside the project's virtualenv by asking its Python.

The GPU machines run torch 2.11.0 (C++11 ABI); tools/setup.sh installs the same
wheel into <workspace>/.venv. We never hard-code a path: the Python named by
$KP_PYTHON (default <workspace>/.venv/bin/python3) reports where torch lives.
importlib.util.find_spec is used instead of `import torch` because the wheel is
installed without its Python dependencies (we only need the C++ library).
"""

_FIND_TORCH = """
import importlib.util, sys
spec = importlib.util.find_spec("torch")
if spec is None or not spec.submodule_search_locations:
    sys.exit("torch is not installed in this Python")
print(list(spec.submodule_search_locations)[0])
"""

_BUILD = """
package(default_visibility = ["//visibility:public"])

load("@rules_cc//cc:defs.bzl", "cc_library")

# Headers only: lets a target compile against ATen without linking it.
cc_library(
    name = "headers",
    hdrs = glob(["include/**/*.h", "include/**/*.hpp", "include/**/*.cuh"]),
    includes = ["include", "include/torch/csrc/api/include"],
    defines = ["_GLIBCXX_USE_CXX11_ABI=1"],
)

cc_library(
    name = "torch_cpu",
    linkopts = [
        "-L{lib}",
        "-Wl,-rpath,{lib}",
        "-Wl,-rpath-link,/usr/local/cuda/lib64",
        # push/pop-state: a bare --as-needed here would switch the linker
        # mode for every library after torch's and drop needed ones.
        "-Wl,--push-state,--no-as-needed",
        "-ltorch_cpu",
        "-ltorch",
        "-lc10",
        "-Wl,--pop-state",
    ],
    deps = [":headers"],
)

cc_library(
    name = "torch_cuda",
    linkopts = [
        "-L{lib}",
        "-Wl,--push-state,--no-as-needed",
        "-ltorch_cuda",
        "-lc10_cuda",
        "-Wl,--pop-state",
    ],
    deps = [":torch_cpu", "@cuda//:cudart"],
)
"""

def _torch_repository_impl(ctx):
    workspace = ctx.path(Label("//:WORKSPACE")).dirname
    python = ctx.os.environ.get("KP_PYTHON", "%s/.venv/bin/python3" % workspace)
    if not ctx.path(python).exists:
        fail("kp: no Python at %s. Run tools/setup.sh first (it creates .venv with torch 2.11.0), or set KP_PYTHON." % python)
    result = ctx.execute([python, "-c", _FIND_TORCH])
    if result.return_code != 0:
        fail("kp: cannot find torch with %s: %s. Run tools/setup.sh." % (python, result.stderr))
    root = result.stdout.strip()
    ctx.symlink(root + "/include", "include")
    ctx.symlink(root + "/lib", "lib")
    lib = str(ctx.path("lib").realpath)
    ctx.file("WORKSPACE", "")
    ctx.file("BUILD", _BUILD.replace("{lib}", lib))

torch_repository = repository_rule(
    implementation = _torch_repository_impl,
    environ = ["KP_PYTHON"],
    local = True,
)
