#include "runtime/comm/gloo_communicator.h"

#include <unistd.h>

#include <ATen/ATen.h>

#include <thread>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "runtime/comm/conformance.h"
#include "runtime/comm/multiprocess.h"
#include "runtime/comm/watchdog.h"

namespace kp::comm {
namespace {

using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

absl::StatusOr<std::unique_ptr<Communicator>> Join(Store& store, int rank, int n,
                                                   milliseconds timeout) {
  GlooOptions o;
  o.timeout = timeout;
  return CreateGlooCommunicator(rank, n, &store, o);
}

class GlooConformance : public ::testing::TestWithParam<int> {};

TEST_P(GlooConformance, AllCallsOverProcesses) {
  const int n = GetParam();
  const std::string dir = testing::FreshDir("gloo_conf");
  auto st = testing::RunProcesses(n, [&](int rank) -> absl::Status {
    FileStore store(dir);
    KP_ASSIGN_OR_RETURN(auto comm, Join(store, rank, n, milliseconds(20000)));
    if (comm->rank() != rank || comm->size() != n || comm->backend() != "gloo") {
      return absl::InternalError("wrong rank/size/backend");
    }
    return testing::RunConformance(*comm, 7 + n);
  });
  for (int r = 0; r < n; ++r) EXPECT_TRUE(st[r].ok()) << st[r];
}

INSTANTIATE_TEST_SUITE_P(Sizes, GlooConformance, ::testing::Values(1, 2, 4));

// Timing of a failure, measured inside the rank that saw it.
absl::Status ExpectDeadline(const absl::Status& s, Clock::time_point t0, milliseconds timeout,
                            const std::string& op) {
  const auto took = std::chrono::duration_cast<milliseconds>(Clock::now() - t0);
  if (s.code() != absl::StatusCode::kDeadlineExceeded) {
    return absl::InternalError(absl::StrCat(op, ": want DEADLINE_EXCEEDED, got ", s.ToString()));
  }
  if (s.message().find(op) == std::string::npos ||
      s.message().find(absl::StrCat(timeout.count(), " ms")) == std::string::npos) {
    return absl::InternalError(absl::StrCat("message does not name ", op, " and timeout: ",
                                            s.ToString()));
  }
  if (took > timeout + milliseconds(3000)) {
    return absl::InternalError(absl::StrCat(op, " took ", took.count(), " ms"));
  }
  return absl::OkStatus();
}

// A rank that exits after joining: its peers' next collective fails fast or
// at the timeout, never hangs; later calls say the communicator is broken.
TEST(GlooCommunicatorTest, PeerThatExitsGivesDeadlineExceeded) {
  const std::string dir = testing::FreshDir("gloo_exit");
  const milliseconds timeout(1500);
  auto st = testing::RunProcesses(3, [&](int rank) -> absl::Status {
    FileStore store(dir);
    KP_ASSIGN_OR_RETURN(auto comm, Join(store, rank, 3, timeout));
    KP_RETURN_IF_ERROR(comm->Barrier());
    if (rank == 2) ::_exit(0);  // dies without a word
    at::Tensor t = at::randn({1000});
    const auto t0 = Clock::now();
    KP_RETURN_IF_ERROR(ExpectDeadline(comm->AllReduce(t, ReduceOp::kSum), t0, timeout, "AllReduce"));
    if (comm->Barrier().code() != absl::StatusCode::kAborted) {
      return absl::InternalError("call after failure should be ABORTED");
    }
    return absl::OkStatus();
  });
  for (int r = 0; r < 3; ++r) EXPECT_TRUE(st[r].ok()) << st[r];
}

// A rank that stays connected but never calls: gloo's own timeout fires.
TEST(GlooCommunicatorTest, SilentPeerTimesOutInEveryCallKind) {
  const std::string dir = testing::FreshDir("gloo_silent");
  const milliseconds timeout(500);
  auto st = testing::RunProcesses(2, [&](int rank) -> absl::Status {
    FileStore store(dir);
    KP_ASSIGN_OR_RETURN(auto comm, Join(store, rank, 2, timeout));
    KP_RETURN_IF_ERROR(comm->Barrier());
    if (rank == 1) {
      // Stay alive (connections open) past every timeout of rank 0.
      KP_RETURN_IF_ERROR(store.Wait({"rank0_done"}, milliseconds(20000)));
      return absl::OkStatus();
    }
    at::Tensor t = at::randn({64});
    auto t0 = Clock::now();
    absl::Status s = ExpectDeadline(comm->AllReduce(t, ReduceOp::kSum), t0, timeout, "AllReduce");
    KP_RETURN_IF_ERROR(store.Set("rank0_done", ""));
    return s;
  });
  for (int r = 0; r < 2; ++r) EXPECT_TRUE(st[r].ok()) << st[r];
  auto st2 = testing::RunProcesses(2, [&](int rank) -> absl::Status {
    FileStore store(dir + "_p2p");
    KP_ASSIGN_OR_RETURN(auto comm, Join(store, rank, 2, timeout));
    if (rank == 1) {
      KP_RETURN_IF_ERROR(store.Wait({"rank0_done"}, milliseconds(20000)));
      return absl::OkStatus();
    }
    at::Tensor got = at::empty({64});
    auto t0 = Clock::now();
    absl::Status s = ExpectDeadline(comm->SendRecvAsync(at::Tensor(), 1, got, 1)->Wait(), t0,
                                    timeout, "SendRecv");
    KP_RETURN_IF_ERROR(store.Set("rank0_done", ""));
    return s;
  });
  for (int r = 0; r < 2; ++r) EXPECT_TRUE(st2[r].ok()) << st2[r];
}

// With a watchdog watching (as workers run): a rank that joined but never
// calls leaves the others with DEADLINE_EXCEEDED within timeout + slack.
TEST(GlooCommunicatorTest, WatchedRanksEndInDeadlineWhenAPeerNeverCalls) {
  const std::string dir = testing::FreshDir("gloo_watched");
  const milliseconds timeout(600);
  auto st = testing::RunProcesses(3, [&](int rank) -> absl::Status {
    FileStore store(dir);
    KP_ASSIGN_OR_RETURN(auto comm, Join(store, rank, 3, timeout));
    KP_RETURN_IF_ERROR(comm->Barrier());
    if (rank == 2) return store.Wait({"done0", "done1"}, milliseconds(20000));
    Watchdog dog(Watchdog::Options{milliseconds(20), milliseconds(100)});
    Watchdog::Scoped watch(&dog, comm.get());
    at::Tensor t = at::randn({4096});
    const auto t0 = Clock::now();
    absl::Status s = comm->AllReduceAsync(t, ReduceOp::kAvg)->Wait();
    KP_RETURN_IF_ERROR(store.Set(absl::StrCat("done", rank), ""));
    if (s.code() != absl::StatusCode::kDeadlineExceeded) {
      return absl::InternalError(absl::StrCat("want DEADLINE_EXCEEDED, got ", s.ToString()));
    }
    if (Clock::now() - t0 > timeout + milliseconds(3000)) {
      return absl::InternalError("took longer than timeout + 3 s");
    }
    return absl::OkStatus();
  });
  for (int r = 0; r < 3; ++r) EXPECT_TRUE(st[r].ok()) << st[r];
}

TEST(GlooCommunicatorTest, RankThatNeverJoinsFailsRendezvous) {
  const std::string dir = testing::FreshDir("gloo_nojoin");
  const milliseconds timeout(400);
  auto st = testing::RunProcesses(2, [&](int rank) -> absl::Status {
    FileStore store(dir);
    const auto t0 = Clock::now();
    auto comm = Join(store, rank, 3, timeout);  // rank 2 never comes
    return ExpectDeadline(comm.status(), t0, timeout, "rendezvous");
  });
  for (int r = 0; r < 2; ++r) EXPECT_TRUE(st[r].ok()) << st[r];
}

TEST(GlooCommunicatorTest, AbortFromAnotherThread) {
  const std::string dir = testing::FreshDir("gloo_abort");
  auto st = testing::RunProcesses(2, [&](int rank) -> absl::Status {
    FileStore store(dir);
    KP_ASSIGN_OR_RETURN(auto comm, Join(store, rank, 2, milliseconds(3000)));
    KP_RETURN_IF_ERROR(comm->Barrier());
    if (rank == 1) {
      return store.Wait({"rank0_done"}, milliseconds(20000));
    }
    std::thread aborter([&] {
      std::this_thread::sleep_for(milliseconds(100));
      comm->Abort(absl::UnavailableError("abort test"));
    });
    at::Tensor t = at::randn({64});
    const auto t0 = Clock::now();
    absl::Status s = comm->AllReduce(t, ReduceOp::kSum);
    const auto took = Clock::now() - t0;
    aborter.join();
    KP_RETURN_IF_ERROR(store.Set("rank0_done", ""));
    if (s.code() != absl::StatusCode::kUnavailable || took > milliseconds(2000)) {
      return absl::InternalError(absl::StrCat("abort: got ", s.ToString(), " after ",
                                              std::chrono::duration_cast<milliseconds>(took).count(),
                                              " ms"));
    }
    if (comm->Barrier().code() != absl::StatusCode::kAborted) {
      return absl::InternalError("call after Abort should be ABORTED");
    }
    return absl::OkStatus();
  });
  for (int r = 0; r < 2; ++r) EXPECT_TRUE(st[r].ok()) << st[r];
}

TEST(GlooCommunicatorTest, RejectsRankOutsideWorld) {
  InMemoryStore store;
  GlooOptions o;
  o.timeout = milliseconds(100);
  EXPECT_EQ(CreateGlooCommunicator(3, 2, &store, o).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kp::comm
