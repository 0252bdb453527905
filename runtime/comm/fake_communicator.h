// An in-process backend: N ranks are threads of one process sharing a
// FakeWorld. Same semantics as the real backends (ordered calls, timeouts,
// Abort, Split), for fast unit tests of data- and context-parallel logic on
// any tensors (CPU or CUDA: the math runs in ATen on the tensors' device).
//
// Failure injection: Kill(rank) makes that rank "die": its own calls fail with
// ABORTED and it never contributes again, so its peers see DEADLINE_EXCEEDED
// after their timeout, as with a crashed process.
//
// Every rank's k-th collective on a group meets the others' k-th; sends are
// buffered (a send completes without waiting for its receive).
#ifndef KP_RUNTIME_COMM_FAKE_COMMUNICATOR_H_
#define KP_RUNTIME_COMM_FAKE_COMMUNICATOR_H_

#include <chrono>
#include <memory>
#include <vector>

#include "runtime/comm/communicator.h"

namespace kp::comm {

class FakeWorld {
 public:
  FakeWorld(int size, std::chrono::milliseconds timeout);
  ~FakeWorld();

  int size() const { return size_; }
  // Rank `rank`'s communicator over the whole world. The world must outlive it.
  std::unique_ptr<Communicator> Join(int rank);
  // Failure injection (any thread): `rank` dies.
  void Kill(int rank);

  struct Shared;

 private:
  int size_;
  std::chrono::milliseconds timeout_;
  std::shared_ptr<Shared> shared_;
};

}  // namespace kp::comm

#endif  // KP_RUNTIME_COMM_FAKE_COMMUNICATOR_H_
