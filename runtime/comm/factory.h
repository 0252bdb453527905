// One entry point for the worker and the engine: a communicator by backend
// name, meeting the other ranks through a Store.
#ifndef KP_RUNTIME_COMM_FACTORY_H_
#define KP_RUNTIME_COMM_FACTORY_H_

#include <chrono>
#include <memory>
#include <string>

#include "runtime/comm/communicator.h"
#include "runtime/comm/store.h"

namespace kp::comm {

struct CommOptions {
  std::chrono::milliseconds timeout{std::chrono::minutes(5)};
  // gloo: the address peers reach this rank at (the node's address across
  // nodes; loopback on one host).
  std::string hostname = "127.0.0.1";
  // nccl: CUDA device index; -1 = the current device.
  int cuda_device = -1;
  // nccl: Abort() revokes (ncclCommRevoke) instead of freeing
  // (ncclCommAbort), so the survivors can Shrink() the communicator after a
  // failure (in-process re-formation, shrink.h). Needs NCCL >= 2.28.7.
  bool shrinkable = false;
};

// backend: "gloo" (CPU tensors) or "nccl" (CUDA tensors). The in-process
// "fake" backend has no store rendezvous: use FakeWorld::Join. `store` must
// outlive the communicator (Gloo's Split rendezvouses through it) and serve
// one communicator (namespace several, e.g. per restart generation, with
// PrefixStore).
absl::StatusOr<std::unique_ptr<Communicator>> CreateCommunicator(const std::string& backend,
                                                                 int rank, int world, Store& store,
                                                                 const CommOptions& options);

absl::StatusOr<std::unique_ptr<Communicator>> CreateCommunicator(const std::string& backend,
                                                                 int rank, int world, Store& store,
                                                                 std::chrono::milliseconds timeout);

}  // namespace kp::comm

#endif  // KP_RUNTIME_COMM_FACTORY_H_
