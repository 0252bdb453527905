// Test helper: runs a function as N forked processes (one per rank) and
// collects each one's status. Children never return into the test framework:
// they report through a pipe and _exit. A child still running at the deadline
// is SIGKILLed and reported as such, so a hang fails the test instead of
// hanging it.
#ifndef KP_RUNTIME_COMM_MULTIPROCESS_H_
#define KP_RUNTIME_COMM_MULTIPROCESS_H_

#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include "runtime/common/status.h"

namespace kp::comm::testing {

std::vector<absl::Status> RunProcesses(int n, const std::function<absl::Status(int rank)>& fn,
                                       std::chrono::milliseconds deadline =
                                           std::chrono::seconds(50));

// A fresh directory under TEST_TMPDIR (or /tmp) for one test's FileStore.
std::string FreshDir(const std::string& name);

}  // namespace kp::comm::testing

#endif  // KP_RUNTIME_COMM_MULTIPROCESS_H_
