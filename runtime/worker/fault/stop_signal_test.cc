#include "runtime/worker/fault/stop_signal.h"

#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <thread>

namespace kp::worker::fault {
namespace {

using std::chrono::milliseconds;

TEST(StopSignal, SigtermSetsTheFlagWithoutKillingTheProcess) {
  std::atomic<int> expired{0};
  StopSignal::Options o;
  o.grace = milliseconds(5000);
  o.on_grace_expired = [&] { ++expired; };
  StopSignal stop(o);
  EXPECT_FALSE(stop.requested());
  // SIGTERM is blocked in this thread (Install-before-threads rule) and
  // picked up by the signal thread.
  ASSERT_EQ(::kill(::getpid(), SIGTERM), 0);
  for (int i = 0; i < 200 && !stop.requested(); ++i) std::this_thread::sleep_for(milliseconds(10));
  EXPECT_TRUE(stop.requested());
  EXPECT_TRUE(stop.flag()->load());
  stop.Done();
  EXPECT_EQ(expired.load(), 0);
}

TEST(StopSignal, GraceExpiryFiresOnceWhenTheRunDoesNotStop) {
  std::atomic<int> expired{0};
  StopSignal::Options o;
  o.grace = milliseconds(100);
  o.on_grace_expired = [&] { ++expired; };
  o.handle_signals = false;
  StopSignal stop(o);
  const auto t0 = std::chrono::steady_clock::now();
  stop.Request("test");
  for (int i = 0; i < 300 && expired.load() == 0; ++i) std::this_thread::sleep_for(milliseconds(5));
  EXPECT_EQ(expired.load(), 1);
  EXPECT_GE(std::chrono::steady_clock::now() - t0, milliseconds(100));
  std::this_thread::sleep_for(milliseconds(150));
  EXPECT_EQ(expired.load(), 1);
}

TEST(StopSignal, DoneBeforeTheGraceCancelsTheForcedExit) {
  std::atomic<int> expired{0};
  StopSignal::Options o;
  o.grace = milliseconds(100);
  o.on_grace_expired = [&] { ++expired; };
  o.handle_signals = false;
  StopSignal stop(o);
  stop.Request("test");
  stop.Done();
  std::this_thread::sleep_for(milliseconds(250));
  EXPECT_EQ(expired.load(), 0);
}

}  // namespace
}  // namespace kp::worker::fault
