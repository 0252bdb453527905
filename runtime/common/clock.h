// Time as a seam: the coordinator's heartbeats, timeouts and watchdogs take a
// Clock so tests drive time with FakeClock instead of sleeping.
#ifndef KP_RUNTIME_COMMON_CLOCK_H_
#define KP_RUNTIME_COMMON_CLOCK_H_

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>

namespace kp {

class Clock {
 public:
  virtual ~Clock() = default;
  // Monotonic time in microseconds.
  virtual int64_t NowMicros() = 0;
  virtual void SleepMicros(int64_t micros) = 0;
};

class RealClock final : public Clock {
 public:
  int64_t NowMicros() override;
  void SleepMicros(int64_t micros) override;
};

// Time moves only when Advance() is called; sleepers wake when it passes them.
class FakeClock final : public Clock {
 public:
  explicit FakeClock(int64_t start_micros = 0) : now_(start_micros) {}
  int64_t NowMicros() override;
  void SleepMicros(int64_t micros) override;
  void Advance(int64_t micros);
  // Threads blocked in SleepMicros now; lets tests wait for a sleeper.
  int Sleepers();

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int64_t now_;
  int sleepers_ = 0;
};

}  // namespace kp

#endif  // KP_RUNTIME_COMMON_CLOCK_H_
