#include "launcher/mpi/rendezvous_file.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <thread>

#include "runtime/common/files.h"

namespace kp::launcher {
namespace {

// Sleeping jumps time forward at once: waits of any length cost nothing.
class JumpingClock final : public Clock {
 public:
  int64_t NowMicros() override { return now_; }
  void SleepMicros(int64_t micros) override {
    now_ += micros;
    if (on_sleep) on_sleep(now_);
  }
  std::function<void(int64_t)> on_sleep;

 private:
  int64_t now_ = 0;
};

std::string TempPath(const std::string& name) {
  const char* dir = std::getenv("TEST_TMPDIR");
  return std::string(dir != nullptr ? dir : "/tmp") + "/" + name;
}

TEST(RendezvousFile, PublishedAddressIsRead) {
  std::string path = TempPath("rdv1");
  ASSERT_TRUE(PublishCoordinator(path, "job7", "10.0.0.1:20000").ok());
  JumpingClock clock;
  auto target = AwaitCoordinator(path, "job7", 1'000'000, clock);
  ASSERT_TRUE(target.ok()) << target.status();
  EXPECT_EQ(*target, "10.0.0.1:20000");
}

TEST(RendezvousFile, WaitsUntilRankZeroPublishes) {
  std::string path = TempPath("rdv2");
  JumpingClock clock;
  clock.on_sleep = [&](int64_t now) {
    if (now >= 2'000'000) {
      EXPECT_TRUE(PublishCoordinator(path, "j", "127.0.0.1:1").ok());
    }
  };
  auto target = AwaitCoordinator(path, "j", 10'000'000, clock);
  ASSERT_TRUE(target.ok()) << target.status();
  EXPECT_EQ(*target, "127.0.0.1:1");
  EXPECT_GE(clock.NowMicros(), 2'000'000);
}

TEST(RendezvousFile, StaleFileOfAnotherRunIsIgnored) {
  std::string path = TempPath("rdv3");
  ASSERT_TRUE(PublishCoordinator(path, "old-run", "10.0.0.9:1").ok());
  JumpingClock clock;
  auto target = AwaitCoordinator(path, "new-run", 3'000'000, clock);
  ASSERT_FALSE(target.ok());
  EXPECT_EQ(target.status().code(), absl::StatusCode::kDeadlineExceeded);
  std::string msg(target.status().message());
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  EXPECT_NE(msg.find("names job 'old-run'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("within 3 s"), std::string::npos) << msg;
}

TEST(RendezvousFile, MissingFileTimesOutNamingIt) {
  JumpingClock clock;
  auto target = AwaitCoordinator(TempPath("never"), "k", 1'000'000, clock);
  ASSERT_FALSE(target.ok());
  EXPECT_NE(target.status().message().find("never"), std::string::npos);
}

TEST(RendezvousFile, RejectsSpaces) {
  EXPECT_FALSE(PublishCoordinator(TempPath("rdv4"), "a b", "x:1").ok());
  EXPECT_FALSE(PublishCoordinator(TempPath("rdv4"), "a", "").ok());
}

}  // namespace
}  // namespace kp::launcher
