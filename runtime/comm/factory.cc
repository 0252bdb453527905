#include "runtime/comm/factory.h"

#include "absl/strings/str_cat.h"
#include "runtime/comm/gloo_communicator.h"
#include "runtime/comm/nccl_communicator.h"

namespace kp::comm {

absl::StatusOr<std::unique_ptr<Communicator>> CreateCommunicator(const std::string& backend,
                                                                 int rank, int world, Store& store,
                                                                 const CommOptions& options) {
  if (backend == "gloo") {
    GlooOptions o;
    o.timeout = options.timeout;
    o.hostname = options.hostname;
    return CreateGlooCommunicator(rank, world, &store, o);
  }
  if (backend == "nccl") {
    NcclOptions o;
    o.timeout = options.timeout;
    o.device = options.cuda_device;
    o.revoke_on_abort = options.shrinkable;
    return CreateNcclCommunicator(rank, world, &store, o);
  }
  if (backend == "fake") {
    return absl::InvalidArgumentError(
        "communicator backend 'fake' runs ranks as threads of one process: use FakeWorld::Join");
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown communicator backend '", backend, "' (expected gloo or nccl)"));
}

absl::StatusOr<std::unique_ptr<Communicator>> CreateCommunicator(const std::string& backend,
                                                                 int rank, int world, Store& store,
                                                                 std::chrono::milliseconds timeout) {
  CommOptions o;
  o.timeout = timeout;
  return CreateCommunicator(backend, rank, world, store, o);
}

}  // namespace kp::comm
