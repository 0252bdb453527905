#include "runtime/common/clock.h"

#include <atomic>
#include <thread>

#include <gtest/gtest.h>

namespace kp {
namespace {

TEST(FakeClock, SleeperWakesOnlyWhenTimePasses) {
  FakeClock clock(100);
  std::atomic<bool> woke{false};
  std::thread t([&] {
    clock.SleepMicros(50);
    woke = true;
  });
  while (clock.Sleepers() == 0) std::this_thread::yield();
  clock.Advance(49);
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_FALSE(woke);
  clock.Advance(1);
  t.join();
  EXPECT_TRUE(woke);
  EXPECT_EQ(clock.NowMicros(), 150);
}

TEST(RealClock, IsMonotonic) {
  RealClock clock;
  int64_t a = clock.NowMicros();
  clock.SleepMicros(1000);
  EXPECT_GE(clock.NowMicros() - a, 1000);
}

}  // namespace
}  // namespace kp
