// The worker's snapshots against a real SnapshotService on loopback: the
// sender's images arrive whole and decode to the very tensors it was given;
// a snapshot due while one is in flight is dropped without stalling the
// caller; FetchSnapshot verifies what it gets and names the cause of every
// failure the worker falls back to the disk checkpoint on; the ranks agree.
#include "runtime/snapshot/worker_snapshots.h"

#include <ATen/ATen.h>
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "runtime/comm/fake_communicator.h"
#include "runtime/engine/checkpoint/safetensors.h"
#include "runtime/snapshot/loopback_agent.h"

namespace kp::snapshot {
namespace {

constexpr char kToken[] = "snapshot-test-token";
constexpr char kHash[] = "v256_d64";

// Random state of a step (never zeros): what a capture hands over.
std::pair<ckpt::CheckpointState, Parts> State(int64_t next_step) {
  at::manual_seed(static_cast<uint64_t>(next_step));
  ckpt::CheckpointState s;
  s.step = next_step;
  s.data_position = next_step * 8;
  s.config_hash = kHash;
  s.part_names = {"model", "optimizer"};
  s.rng["cpu"] = std::string("\x01\x00\xff rng", 7);
  s.extra["note"] = "x";
  Parts p;
  p["model"]["w"] = at::randn({16, 8});
  p["model"]["b"] = at::randn({8}).to(at::kBFloat16);
  p["optimizer"]["w.exp_avg"] = at::randn({16, 8});
  p["optimizer"]["step"] = at::full({1}, next_step, at::kLong);
  return {s, p};
}

struct Agent {
  std::unique_ptr<LoopbackAgent> impl;
  std::string address;
  Agent() {
    auto s = LoopbackAgent::Start(kToken);
    EXPECT_TRUE(s.ok()) << s.status();
    impl = std::move(*s);
    address = impl->address();
  }
};

// A capture that hands State(step) to the sender (declared before it).
SnapshotSender::Capture Capture(std::unique_ptr<SnapshotSender>* sender) {
  return [sender](int64_t step) {
    auto [state, parts] = State(step);
    (*sender)->Give(state, std::move(parts));
    return absl::OkStatus();
  };
}

WorkerSnapshotOptions Options(std::vector<std::string> targets) {
  WorkerSnapshotOptions o;
  o.every_steps = 2;
  o.targets = std::move(targets);
  o.job_id = "j000001";
  o.generation = 1;
  o.token = kToken;
  o.timeout_ms = 2000;
  return o;
}

void ExpectSameTensors(const ckpt::TensorMap& got, const ckpt::TensorMap& want) {
  ASSERT_EQ(got.size(), want.size());
  for (const auto& [name, t] : want) {
    ASSERT_TRUE(got.count(name)) << name;
    EXPECT_TRUE(at::equal(got.at(name), t)) << name;
  }
}

TEST(WorkerSnapshots, SentToEveryTargetAndFetchedBackVerified) {
  Agent own, peer;
  auto options = Options({own.address, peer.address});
  {
    std::unique_ptr<SnapshotSender> sender;
    sender = std::make_unique<SnapshotSender>(options, /*rank=*/1, /*world_size=*/2, Capture(&sender));
    sender->Offer(4);
    sender->Drain();
    const SenderStats st = sender->stats();
    EXPECT_EQ(st.sent, 2);
    EXPECT_EQ(st.failed, 0);
    EXPECT_EQ(st.last_step, 4);
  }
  for (Agent* a : {&own, &peer}) {
    auto h = a->impl->Held();
    ASSERT_EQ(h.size(), 1u);
    EXPECT_EQ(h[0], (Key{"j000001", 1, 4, 1, 2}));
  }
  options.resume_address = peer.address;
  options.resume_step = 4;
  auto loaded = FetchSnapshot(options, 1, 2, kHash);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const auto [want_state, want_parts] = State(4);
  EXPECT_EQ(loaded->state.step, 4);
  EXPECT_EQ(loaded->state.data_position, want_state.data_position);
  EXPECT_EQ(loaded->state.rng, want_state.rng);
  EXPECT_EQ(loaded->state.extra, want_state.extra);
  EXPECT_EQ(loaded->dir, "snapshot@" + peer.address);
  ExpectSameTensors(loaded->parts.at("model"), want_parts.at("model"));
  ExpectSameTensors(loaded->parts.at("optimizer"), want_parts.at("optimizer"));
  // The image is a safetensors file as the disk checkpoint's loader reads it.
  auto stored = peer.impl->Image(Key{"j000001", 1, 4, 1, 2});
  ASSERT_TRUE(stored.ok());
  auto raw = ckpt::DecodeSafetensors(*stored, "image");
  ASSERT_TRUE(raw.ok()) << raw.status();
  EXPECT_TRUE(at::equal(raw->tensors.at("model/w"), want_parts.at("model").at("w")));
}

TEST(WorkerSnapshots, EveryKthStepAfterTheStart) {
  Agent own;
  std::unique_ptr<SnapshotSender> sender;
  sender = std::make_unique<SnapshotSender>(Options({own.address}), 0, 1, Capture(&sender));
  struct Zeros final : engine::BatchSource {
    absl::StatusOr<at::Tensor> Batch(int64_t, int) override { return at::ones({1, 2}, at::kLong); }
  } inner;
  SnapshotEveryK hook(&inner, /*every=*/2, /*start_step=*/4, sender.get());
  for (int64_t step = 4; step < 9; ++step) {
    for (int micro = 0; micro < 2; ++micro) ASSERT_TRUE(hook.Batch(step, micro).ok());
    sender->Drain();
  }
  std::vector<int64_t> steps;
  for (const auto& k : own.impl->Held()) steps.push_back(k.step);
  EXPECT_EQ(steps, (std::vector<int64_t>{6, 8}));  // not 4: the state resumed from; once per step
}

// A peer that accepts connections and never answers: the Put waits for its
// deadline; the snapshot due meanwhile is dropped and the caller not held up.
TEST(WorkerSnapshots, DroppedNotQueuedWhileAPeerHangs) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(::listen(fd, 8), 0);
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  auto options = Options({"127.0.0.1:" + std::to_string(ntohs(addr.sin_port))});
  options.timeout_ms = 800;
  {
    std::unique_ptr<SnapshotSender> sender;
    sender = std::make_unique<SnapshotSender>(options, 0, 1, Capture(&sender));
    sender->Offer(2);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    const auto t0 = std::chrono::steady_clock::now();
    sender->Offer(4);
    sender->Offer(6);
    const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    EXPECT_LT(took, 0.1) << "Offer waited for the hung peer";
    sender->Drain();
    const SenderStats st = sender->stats();
    EXPECT_EQ(st.offered, 3);
    EXPECT_EQ(st.dropped, 2);
    EXPECT_EQ(st.failed, 1);
    EXPECT_EQ(st.sent, 0);
    EXPECT_EQ(st.last_step, -1);
  }
  ::close(fd);
}

TEST(WorkerSnapshots, FetchNamesEveryCauseToFallBack) {
  Agent agent;
  auto options = Options({agent.address});
  {
    std::unique_ptr<SnapshotSender> sender;
    sender = std::make_unique<SnapshotSender>(options, 0, 2, Capture(&sender));
    sender->Offer(6);
    sender->Drain();
  }
  options.resume_address = agent.address;
  options.resume_step = 6;
  ASSERT_TRUE(FetchSnapshot(options, 0, 2, kHash).ok());

  auto step8 = options;
  step8.resume_step = 8;
  EXPECT_TRUE(absl::IsNotFound(FetchSnapshot(step8, 0, 2, kHash).status()));
  EXPECT_TRUE(absl::IsNotFound(FetchSnapshot(options, 1, 2, kHash).status()));  // another rank's
  auto status = FetchSnapshot(options, 0, 2, "other-model").status();
  EXPECT_TRUE(absl::IsDataLoss(status)) << status;
  EXPECT_NE(status.message().find("other-model"), std::string::npos) << status;
  status = FetchSnapshot(options, 0, 4, kHash).status();  // the world changed
  EXPECT_TRUE(absl::IsDataLoss(status)) << status;
  auto bad_token = options;
  bad_token.token = "wrong";
  EXPECT_TRUE(absl::IsUnauthenticated(FetchSnapshot(bad_token, 0, 2, kHash).status()));
  auto gone = options;
  gone.resume_address = "127.0.0.1:1";  // nothing listens
  gone.timeout_ms = 1000;
  EXPECT_FALSE(FetchSnapshot(gone, 0, 2, kHash).ok());

  // An agent that holds well-formed bytes that are not this key's image (a
  // bug, or an image of another job stored under this key): the worker's
  // own check of the decoded metadata catches it.
  auto [state, parts] = State(6);
  auto image = EncodeSnapshot(Key{"j000002", 0, 6, 1, 2}, state, parts);
  ASSERT_TRUE(image.ok());
  // Stored as generation 2 of our job, which Get prefers over generation 1.
  ASSERT_TRUE(agent.impl->StoreRaw(Key{"j000001", 0, 6, 2, 2}, *image).ok());
  status = FetchSnapshot(options, 0, 2, kHash).status();
  EXPECT_TRUE(absl::IsDataLoss(status)) << status;
  EXPECT_NE(status.message().find("j000002"), std::string::npos) << status;
}

TEST(WorkerSnapshots, RanksResumeFromSnapshotsOnlyIfAllCan) {
  for (bool rank1_ok : {true, false}) {
    comm::FakeWorld world(2, std::chrono::milliseconds(5000));
    bool agreed[2] = {false, false};
    std::vector<std::thread> ranks;
    for (int r = 0; r < 2; ++r) {
      ranks.emplace_back([&, r] {
        auto comm = world.Join(r);
        auto all = AllRanksAgree(comm.get(), r == 0 ? true : rank1_ok);
        ASSERT_TRUE(all.ok()) << all.status();
        agreed[r] = *all;
      });
    }
    for (auto& t : ranks) t.join();
    EXPECT_EQ(agreed[0], rank1_ok);
    EXPECT_EQ(agreed[1], rank1_ok);
  }
  auto alone = AllRanksAgree(nullptr, true);
  ASSERT_TRUE(alone.ok());
  EXPECT_TRUE(*alone);
}

}  // namespace
}  // namespace kp::snapshot
