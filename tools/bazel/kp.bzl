"""kp's C++ rules: the native rules plus our warning flags.

Warnings are errors for our own code only. Third-party headers (torch, CUDA,
the system libraries) come in through -isystem and so do not trip -Werror.
"""

load("@rules_cc//cc:defs.bzl", "cc_binary", "cc_library", "cc_test")

KP_COPTS = [
    "-Wall",
    "-Wextra",
    "-Werror",
    "-Wno-unused-parameter",
    "-Wno-missing-field-initializers",
]

def kp_cc_library(name, copts = [], **kwargs):
    cc_library(name = name, copts = KP_COPTS + copts, **kwargs)

def kp_cc_binary(name, copts = [], **kwargs):
    cc_binary(name = name, copts = KP_COPTS + copts, **kwargs)

def kp_cc_test(name, copts = [], deps = [], size = "small", **kwargs):
    """A GoogleTest test; links gtest_main unless the test brings its own main."""
    cc_test(
        name = name,
        copts = KP_COPTS + copts,
        size = size,
        deps = deps + ["@system//:gtest_main"],
        **kwargs
    )
