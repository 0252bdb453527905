#include "runtime/comm/run_ranks.h"

#include <chrono>
#include <memory>
#include <thread>
#include <vector>

#include "runtime/comm/fake_communicator.h"

namespace kp::comm::testing {

void RunRanks(int n, const std::function<void(int rank, Communicator& comm)>& fn) {
  FakeWorld world(n, std::chrono::seconds(60));
  std::vector<std::unique_ptr<Communicator>> comms;
  for (int r = 0; r < n; ++r) comms.push_back(world.Join(r));
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r) {
    threads.emplace_back([&, r] { fn(r, *comms[r]); });
  }
  for (std::thread& t : threads) t.join();
}

}  // namespace kp::comm::testing
