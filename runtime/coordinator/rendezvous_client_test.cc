#include "runtime/coordinator/rendezvous_client.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>
#include <random>
#include <thread>

#include "runtime/coordinator/server.h"

namespace kp::rpc {
namespace {

TEST(RendezvousClient, RankZeroPublishesAnIdTheOthersWaitFor) {
  RealClock clock;
  auto store = coordinator::NewMemoryStateStore();
  auto coord = *coordinator::Coordinator::Create(store.get(), &clock, {});
  coordinator::ServerOptions so;
  so.token = "rdzv-token";
  auto server = *coordinator::CoordinatorServer::Start(coord.get(), so);

  // What kp-agent puts in a worker's environment.
  const char* tmp = std::getenv("TEST_TMPDIR");
  const std::string token_file = std::string(tmp != nullptr ? tmp : "/tmp") + "/token-" + std::to_string(::getpid());
  std::ofstream(token_file) << "rdzv-token\n";
  ::setenv("KP_RENDEZVOUS_ADDRESS", server->address().c_str(), 1);
  ::setenv("KP_RENDEZVOUS_PREFIX", "jobs/j000001/g1/", 1);
  ::setenv("KP_TOKEN_FILE", token_file.c_str(), 1);

  std::string id(128, '\0');  // an ncclUniqueId's size, random bytes
  std::mt19937 rng(7);
  for (auto& c : id) c = static_cast<char>(rng());
  std::vector<std::string> got(3);
  std::vector<std::thread> ranks;
  for (int r = 1; r <= 3; ++r) {
    ranks.emplace_back([&, r] {
      auto c = RendezvousClient::FromEnv();
      ASSERT_TRUE(c.ok()) << c.status();
      auto v = (*c)->Wait({"nccl_id"}, std::chrono::seconds(10));
      ASSERT_TRUE(v.ok()) << v.status();
      got[r - 1] = (*v)[0];
    });
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  auto rank0 = RendezvousClient::FromEnv();
  ASSERT_TRUE(rank0.ok());
  ASSERT_TRUE((*rank0)->Set("nccl_id", id).ok());
  for (auto& t : ranks) t.join();
  for (const auto& g : got) EXPECT_EQ(g, id);
  EXPECT_EQ(*(*rank0)->Get("nccl_id"), std::optional<std::string>(id));
  // Keys are per generation: the next generation does not see this id.
  auto other = RendezvousClient::Connect(server->address(), "rdzv-token", "jobs/j000001/g2/");
  EXPECT_FALSE((*(*other)->Get("nccl_id")).has_value());
  auto missing = (*other)->Wait({"nccl_id"}, std::chrono::milliseconds(100));
  EXPECT_TRUE(absl::IsDeadlineExceeded(missing.status())) << missing.status();
  auto bad = RendezvousClient::Connect(server->address(), "wrong", "jobs/j000001/g1/");
  EXPECT_TRUE(absl::IsUnauthenticated((*bad)->Set("x", "y")));
  ::unsetenv("KP_TOKEN_FILE");
  EXPECT_TRUE(absl::IsFailedPrecondition(RendezvousClient::FromEnv().status()));
}

}  // namespace
}  // namespace kp::rpc
