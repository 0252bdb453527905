// Tests: N in-process ranks, one thread each, over a FakeWorld.
#ifndef KP_RUNTIME_COMM_RUN_RANKS_H_
#define KP_RUNTIME_COMM_RUN_RANKS_H_

#include <functional>

#include "runtime/comm/communicator.h"

namespace kp::comm::testing {

// Runs fn(rank, comm) on n threads, one rank each; returns when all are done.
void RunRanks(int n, const std::function<void(int rank, Communicator& comm)>& fn);

}  // namespace kp::comm::testing

#endif  // KP_RUNTIME_COMM_RUN_RANKS_H_
