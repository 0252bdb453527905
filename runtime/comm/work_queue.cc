#include "runtime/comm/work_queue.h"

#include <condition_variable>
#include <deque>
#include <mutex>

#include "absl/strings/str_cat.h"

namespace kp::comm {
namespace {

// One call's outcome, shared by the queue and the caller's Work.
struct Result {
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  absl::Status status;

  // The first completion wins (Abort and the worker may race).
  void Complete(absl::Status s) {
    {
      std::lock_guard<std::mutex> lock(mu);
      if (done) return;
      done = true;
      status = std::move(s);
    }
    cv.notify_all();
  }
};

class QueuedWork final : public Work {
 public:
  explicit QueuedWork(std::shared_ptr<Result> r) : r_(std::move(r)) {}
  absl::Status Wait() override {
    std::unique_lock<std::mutex> lock(r_->mu);
    r_->cv.wait(lock, [&] { return r_->done; });
    return r_->status;
  }
  bool Done() override {
    std::lock_guard<std::mutex> lock(r_->mu);
    return r_->done;
  }

 private:
  std::shared_ptr<Result> r_;
};

struct Item {
  std::string op;
  std::function<absl::Status()> fn;
  std::shared_ptr<Result> result;
};

}  // namespace

std::unique_ptr<Work> CompletedWork(absl::Status status) {
  auto r = std::make_shared<Result>();
  r->Complete(std::move(status));
  return std::make_unique<QueuedWork>(std::move(r));
}

struct WorkQueue::State {
  mutable std::mutex mu;
  std::condition_variable cv;
  std::deque<Item> queue;
  std::optional<Item> running;
  std::chrono::steady_clock::time_point running_since;
  bool stop = false;
  absl::Status abort_reason;  // OK while not aborted
};

namespace {

void WorkerLoop(std::shared_ptr<WorkQueue::State> s) {
  while (true) {
    Item item;
    {
      std::unique_lock<std::mutex> lock(s->mu);
      s->cv.wait(lock, [&] { return s->stop || !s->queue.empty(); });
      if (s->queue.empty()) return;
      item = std::move(s->queue.front());
      s->queue.pop_front();
      s->running = item;
      s->running_since = std::chrono::steady_clock::now();
    }
    absl::Status status;
    try {
      status = item.fn();
    } catch (const std::exception& e) {
      status = absl::InternalError(absl::StrCat(item.op, ": ", e.what()));
    }
    {
      std::lock_guard<std::mutex> lock(s->mu);
      s->running.reset();
      // After an abort, the queue's reason stands (it already completed the
      // caller); a late success would be misleading.
    }
    item.result->Complete(std::move(status));
  }
}

}  // namespace

WorkQueue::WorkQueue() : state_(std::make_shared<State>()) {
  thread_ = std::thread(WorkerLoop, state_);
}

WorkQueue::~WorkQueue() {
  bool detach = false;
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    state_->stop = true;
    if (!state_->abort_reason.ok()) {
      for (auto& item : state_->queue) item.result->Complete(state_->abort_reason);
      state_->queue.clear();
      detach = state_->running.has_value();
    }
  }
  state_->cv.notify_all();
  if (detach) {
    thread_.detach();  // stuck in a transport until its own timeout; owns its state
  } else {
    thread_.join();
  }
}

std::unique_ptr<Work> WorkQueue::Enqueue(std::string op, std::function<absl::Status()> fn) {
  auto result = std::make_shared<Result>();
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    if (!state_->abort_reason.ok()) {
      result->Complete(absl::AbortedError(absl::StrCat(
          op, ": communicator was aborted: ", state_->abort_reason.ToString())));
      return std::make_unique<QueuedWork>(result);
    }
    state_->queue.push_back(Item{std::move(op), std::move(fn), result});
  }
  state_->cv.notify_all();
  return std::make_unique<QueuedWork>(result);
}

void WorkQueue::Abort(const absl::Status& reason) {
  std::vector<std::shared_ptr<Result>> to_complete;
  absl::Status stored;
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    if (!state_->abort_reason.ok()) return;
    state_->abort_reason =
        reason.ok() ? absl::AbortedError("communicator aborted") : reason;
    stored = state_->abort_reason;
    for (auto& item : state_->queue) to_complete.push_back(item.result);
    state_->queue.clear();
    if (state_->running) to_complete.push_back(state_->running->result);
  }
  for (auto& r : to_complete) r->Complete(stored);
}

bool WorkQueue::aborted() const {
  std::lock_guard<std::mutex> lock(state_->mu);
  return !state_->abort_reason.ok();
}

absl::Status WorkQueue::abort_status() const {
  std::lock_guard<std::mutex> lock(state_->mu);
  return state_->abort_reason;
}

std::optional<PendingOp> WorkQueue::Running() const {
  std::lock_guard<std::mutex> lock(state_->mu);
  if (!state_->running) return std::nullopt;
  return PendingOp{state_->running->op, state_->running_since};
}

}  // namespace kp::comm
