#include "runtime/common/clock.h"

#include <thread>

namespace kp {

int64_t RealClock::NowMicros() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

void RealClock::SleepMicros(int64_t micros) {
  std::this_thread::sleep_for(std::chrono::microseconds(micros));
}

int64_t FakeClock::NowMicros() {
  std::lock_guard<std::mutex> lock(mu_);
  return now_;
}

void FakeClock::SleepMicros(int64_t micros) {
  std::unique_lock<std::mutex> lock(mu_);
  const int64_t until = now_ + micros;
  ++sleepers_;
  cv_.notify_all();
  cv_.wait(lock, [&] { return now_ >= until; });
  --sleepers_;
}

int FakeClock::Sleepers() {
  std::lock_guard<std::mutex> lock(mu_);
  return sleepers_;
}

void FakeClock::Advance(int64_t micros) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    now_ += micros;
  }
  cv_.notify_all();
}

}  // namespace kp
