#include "runtime/worker/fault/step_boundary_stop.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <thread>
#include <vector>

#include "runtime/comm/fake_communicator.h"

namespace kp::worker::fault {
namespace {

using std::chrono::milliseconds;

class CountingBatches final : public engine::BatchSource {
 public:
  absl::StatusOr<at::Tensor> Batch(int64_t step, int micro) override {
    calls.push_back({step, micro});
    return at::full({1, 2}, step, at::kLong);
  }
  std::vector<std::pair<int64_t, int>> calls;
};

// Drives the source like TrainLoop: every step asks for micro 0..accum-1.
absl::Status DriveSteps(engine::BatchSource& src, int64_t from, int64_t to, int accum,
                 const std::function<void(int64_t)>& after_step = nullptr) {
  for (int64_t s = from; s < to; ++s) {
    for (int m = 0; m < accum; ++m) {
      KP_ASSIGN_OR_RETURN(at::Tensor b, src.Batch(s, m));
      (void)b;
    }
    if (after_step) after_step(s);
  }
  return absl::OkStatus();
}

TEST(StopAtStepBoundary, StopsAtTheNextStepWithACheckpointOfTheStepsDone) {
  CountingBatches inner;
  std::atomic<bool> stop{false};
  std::vector<int64_t> saved;
  StopAtStepBoundary src(&inner, &stop, nullptr, 3, [&](int64_t step) {
    saved.push_back(step);
    return absl::OkStatus();
  });
  absl::Status st = DriveSteps(src, 3, 100, 2, [&](int64_t s) {
    if (s == 6) stop = true;  // SIGTERM arrives during step 6
  });
  EXPECT_EQ(st.code(), absl::StatusCode::kCancelled) << st;
  EXPECT_NE(st.message().find("before step 7"), std::string::npos) << st;
  EXPECT_EQ(saved, std::vector<int64_t>{7});
  ASSERT_TRUE(src.stopped_at());
  EXPECT_EQ(*src.stopped_at(), 7);
  // Steps 3..6 ran whole (2 micro-steps each); step 7 never started.
  EXPECT_EQ(inner.calls.size(), 8u);
  EXPECT_EQ(inner.calls.back(), (std::pair<int64_t, int>{6, 1}));
}

TEST(StopAtStepBoundary, StopBeforeTheFirstStepSavesNothing) {
  CountingBatches inner;
  std::atomic<bool> stop{true};
  int saves = 0;
  StopAtStepBoundary src(&inner, &stop, nullptr, 5, [&](int64_t) {
    ++saves;
    return absl::OkStatus();
  });
  EXPECT_EQ(DriveSteps(src, 5, 10, 1).code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(saves, 0);
  EXPECT_TRUE(inner.calls.empty());
}

TEST(StopAtStepBoundary, AFailedCheckpointIsReturnedNotSwallowed) {
  CountingBatches inner;
  std::atomic<bool> stop{false};
  StopAtStepBoundary src(&inner, &stop, nullptr, 0,
                         [&](int64_t) { return absl::ResourceExhaustedError("disk full"); });
  absl::Status st = DriveSteps(src, 0, 10, 1, [&](int64_t s) { stop = s == 2; });
  EXPECT_EQ(st.code(), absl::StatusCode::kResourceExhausted) << st;
}

// SIGTERM reaches rank 1 only (or rank 1 first): both ranks still stop
// before the same step, so neither is left waiting in a collective.
TEST(StopAtStepBoundary, RanksAgreeOnTheStopStep) {
  comm::FakeWorld world(2, milliseconds(5000));
  std::vector<std::unique_ptr<comm::Communicator>> comms;
  for (int r = 0; r < 2; ++r) comms.push_back(world.Join(r));
  std::atomic<bool> stop[2] = {false, false};
  std::vector<int64_t> saved[2];
  absl::Status status[2];
  std::optional<int64_t> at[2];
  std::vector<std::thread> threads;
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([&, r] {
      CountingBatches inner;
      StopAtStepBoundary src(&inner, &stop[r], comms[r].get(), 0, [&, r](int64_t s) {
        saved[r].push_back(s);
        return absl::OkStatus();
      });
      status[r] = DriveSteps(src, 0, 50, 1, [&, r](int64_t s) {
        if (r == 1 && s == 4) stop[1] = true;
      });
      at[r] = src.stopped_at();
    });
  }
  for (auto& t : threads) t.join();
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(status[r].code(), absl::StatusCode::kCancelled) << "rank " << r << ": " << status[r];
    ASSERT_TRUE(at[r]);
    EXPECT_EQ(*at[r], 5) << "rank " << r;
    EXPECT_EQ(saved[r], std::vector<int64_t>{5});
  }
}

TEST(StopAtStepBoundary, DeadPeerSurfacesAsTheCommunicatorError) {
  comm::FakeWorld world(2, milliseconds(200));
  auto c0 = world.Join(0);
  auto c1 = world.Join(1);
  world.Kill(1);
  CountingBatches inner;
  std::atomic<bool> stop{true};
  StopAtStepBoundary src(&inner, &stop, c0.get(), 0, [](int64_t) { return absl::OkStatus(); });
  auto b = src.Batch(0, 0);
  EXPECT_EQ(b.status().code(), absl::StatusCode::kDeadlineExceeded) << b.status();
}

}  // namespace
}  // namespace kp::worker::fault
