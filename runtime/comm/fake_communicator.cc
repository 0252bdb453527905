#include "runtime/comm/fake_communicator.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <string>
#include <tuple>

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "runtime/comm/reduce_math.h"
#include "runtime/comm/shrink.h"
#include "runtime/comm/work_queue.h"

namespace kp::comm {

struct FakeWorld::Shared {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<bool> dead;

  // One meeting of a group's ranks: each deposits a tensor and a few ints.
  struct Slot {
    std::vector<at::Tensor> tensors;
    std::vector<std::vector<int64_t>> ints;
    std::vector<bool> arrived;
    int count = 0;
    int taken = 0;
  };
  std::map<std::string, Slot> slots;
  std::map<std::string, std::deque<at::Tensor>> mailboxes;  // "group/src>dst"
};

namespace {

using Clock = std::chrono::steady_clock;

// A communicator's state, shared with the calls in flight on its queue (they
// may outlive the communicator object after an Abort).
struct Ctx {
  std::shared_ptr<FakeWorld::Shared> world;
  std::string group;
  std::vector<int> members;  // global ranks, by group rank
  int index = 0;             // my group rank
  std::chrono::milliseconds timeout{0};
  std::atomic<bool> aborted{false};
  // Touched only on the queue's thread.
  uint64_t seq = 0;
  uint64_t splits = 0;
  // Touched only by Shrink, which the caller issues with no call in flight.
  uint64_t shrinks = 0;

  int global() const { return members[index]; }
  int size() const { return static_cast<int>(members.size()); }

  // Why this rank cannot go on, if it cannot (world mutex held).
  absl::Status StopReasonLocked(const std::string& op) const {
    if (world->dead[global()]) {
      return absl::AbortedError(absl::StrCat("fake ", op, ": rank ", global(),
                                             " was killed by failure injection"));
    }
    if (aborted.load()) {
      return absl::AbortedError(absl::StrCat("fake ", op, " on rank ", index, ": aborted"));
    }
    return absl::OkStatus();
  }

  struct Gathered {
    std::vector<at::Tensor> tensors;
    std::vector<std::vector<int64_t>> ints;
  };

  // Everyone's deposit for this group's next collective.
  absl::StatusOr<Gathered> Exchange(const std::string& op, at::Tensor mine,
                                    std::vector<int64_t> ints = {}) {
    const std::string key = absl::StrCat(group, "#", seq++);
    const auto deadline = Clock::now() + timeout;
    std::unique_lock<std::mutex> lock(world->mu);
    KP_RETURN_IF_ERROR(StopReasonLocked(op));
    auto& slot = world->slots[key];
    if (slot.arrived.empty()) {
      slot.tensors.resize(size());
      slot.ints.resize(size());
      slot.arrived.assign(size(), false);
    }
    slot.tensors[index] = std::move(mine);
    slot.ints[index] = std::move(ints);
    slot.arrived[index] = true;
    ++slot.count;
    world->cv.notify_all();
    while (slot.count < size()) {
      KP_RETURN_IF_ERROR(StopReasonLocked(op));
      if (world->cv.wait_until(lock, deadline) == std::cv_status::timeout &&
          slot.count < size()) {
        std::vector<int> missing;
        for (int i = 0; i < size(); ++i) {
          if (!slot.arrived[i]) missing.push_back(i);
        }
        return absl::DeadlineExceededError(absl::StrCat(
            "fake ", op, " on rank ", index, " of group '", group, "': ranks [",
            absl::StrJoin(missing, ","), "] did not join within ", timeout.count(), " ms"));
      }
    }
    Gathered out{slot.tensors, slot.ints};
    if (++slot.taken == size()) world->slots.erase(key);
    return out;
  }

  absl::Status Send(const at::Tensor& t, int dst) {
    std::lock_guard<std::mutex> lock(world->mu);
    KP_RETURN_IF_ERROR(StopReasonLocked("Send"));
    world->mailboxes[absl::StrCat(group, "/", index, ">", dst)].push_back(t.clone());
    world->cv.notify_all();
    return absl::OkStatus();
  }

  absl::Status Recv(at::Tensor& t, int src) {
    const std::string box = absl::StrCat(group, "/", src, ">", index);
    const auto deadline = Clock::now() + timeout;
    std::unique_lock<std::mutex> lock(world->mu);
    while (true) {
      KP_RETURN_IF_ERROR(StopReasonLocked("Recv"));
      auto& q = world->mailboxes[box];
      if (!q.empty()) {
        at::Tensor got = std::move(q.front());
        q.pop_front();
        lock.unlock();
        if (got.numel() != t.numel()) {
          return absl::InvalidArgumentError(absl::StrCat("fake Recv on rank ", index, ": got ",
                                                         got.numel(), " elements from rank ", src,
                                                         ", expected ", t.numel()));
        }
        t.view(-1).copy_(got.view(-1));
        return absl::OkStatus();
      }
      if (world->cv.wait_until(lock, deadline) == std::cv_status::timeout &&
          world->mailboxes[box].empty()) {
        return absl::DeadlineExceededError(
            absl::StrCat("fake SendRecv on rank ", index, " of group '", group, "': rank ", src,
                         " sent nothing within ", timeout.count(), " ms"));
      }
    }
  }
};

class FakeCommunicator final : public Communicator {
 public:
  explicit FakeCommunicator(std::shared_ptr<Ctx> ctx) : ctx_(std::move(ctx)) {}
  ~FakeCommunicator() override = default;

  int rank() const override { return ctx_->index; }
  int size() const override { return ctx_->size(); }
  std::string backend() const override { return "fake"; }
  std::chrono::milliseconds timeout() const override { return ctx_->timeout; }

  absl::Status AllReduce(at::Tensor& tensor, ReduceOp op) override {
    return AllReduceAsync(tensor, op)->Wait();
  }

  std::unique_ptr<Work> AllReduceAsync(at::Tensor tensor, ReduceOp op) override {
    if (auto s = CheckContiguous(tensor, "AllReduce", rank()); !s.ok()) return Failed(s);
    return queue_.Enqueue("AllReduce", [c = ctx_, tensor, op]() mutable -> absl::Status {
      KP_ASSIGN_OR_RETURN(auto g, c->Exchange("AllReduce", tensor.clone()));
      at::Tensor acc = g.tensors[0].clone();
      for (size_t i = 1; i < g.tensors.size(); ++i) Accumulate(acc, g.tensors[i], op);
      FinishAverage(acc, op, c->size());
      tensor.copy_(acc);
      return absl::OkStatus();
    });
  }

  absl::Status AllGather(const at::Tensor& input, at::Tensor& output) override {
    return AllGatherAsync(input, output)->Wait();
  }

  std::unique_ptr<Work> AllGatherAsync(at::Tensor input, at::Tensor output) override {
    if (auto s = CheckContiguous(input, "AllGather", rank()); !s.ok()) return Failed(s);
    if (auto s = CheckContiguous(output, "AllGather", rank()); !s.ok()) return Failed(s);
    if (auto s = CheckNumel(output, input.numel() * size(), "output", "AllGather", rank());
        !s.ok()) {
      return Failed(s);
    }
    return queue_.Enqueue("AllGather", [c = ctx_, input, output]() mutable -> absl::Status {
      KP_ASSIGN_OR_RETURN(auto g, c->Exchange("AllGather", input.clone()));
      std::vector<at::Tensor> flat;
      for (auto& t : g.tensors) flat.push_back(t.reshape({-1}));
      output.view(-1).copy_(at::cat(flat));
      return absl::OkStatus();
    });
  }

  absl::Status ReduceScatter(const at::Tensor& input, at::Tensor& output, ReduceOp op) override {
    KP_RETURN_IF_ERROR(CheckContiguous(input, "ReduceScatter", rank()));
    KP_RETURN_IF_ERROR(CheckContiguous(output, "ReduceScatter", rank()));
    KP_RETURN_IF_ERROR(
        CheckNumel(input, output.numel() * size(), "input", "ReduceScatter", rank()));
    return queue_
        .Enqueue("ReduceScatter",
                 [c = ctx_, input, output, op]() mutable -> absl::Status {
                   KP_ASSIGN_OR_RETURN(auto g, c->Exchange("ReduceScatter", input.clone()));
                   const int64_t n = output.numel();
                   at::Tensor acc = g.tensors[0].reshape({-1}).narrow(0, c->index * n, n).clone();
                   for (size_t i = 1; i < g.tensors.size(); ++i) {
                     Accumulate(acc, g.tensors[i].reshape({-1}).narrow(0, c->index * n, n), op);
                   }
                   FinishAverage(acc, op, c->size());
                   output.view(-1).copy_(acc);
                   return absl::OkStatus();
                 })
        ->Wait();
  }

  absl::Status Broadcast(at::Tensor& tensor, int root) override {
    KP_RETURN_IF_ERROR(CheckContiguous(tensor, "Broadcast", rank()));
    if (root < 0 || root >= size()) {
      return absl::InvalidArgumentError(absl::StrCat("Broadcast: root ", root, " out of range"));
    }
    return queue_
        .Enqueue("Broadcast",
                 [c = ctx_, tensor, root]() mutable -> absl::Status {
                   KP_ASSIGN_OR_RETURN(auto g, c->Exchange("Broadcast", c->index == root
                                                                            ? tensor.clone()
                                                                            : at::Tensor()));
                   if (c->index != root) tensor.copy_(g.tensors[root].view(tensor.sizes()));
                   return absl::OkStatus();
                 })
        ->Wait();
  }

  std::unique_ptr<Work> SendRecvAsync(at::Tensor send, int dst, at::Tensor recv,
                                      int src) override {
    if (send.defined() && (dst < 0 || dst >= size())) {
      return Failed(absl::InvalidArgumentError(absl::StrCat("SendRecv: dst ", dst, " out of range")));
    }
    if (recv.defined() && (src < 0 || src >= size())) {
      return Failed(absl::InvalidArgumentError(absl::StrCat("SendRecv: src ", src, " out of range")));
    }
    return queue_.Enqueue("SendRecv", [c = ctx_, send, dst, recv, src]() mutable -> absl::Status {
      if (send.defined()) KP_RETURN_IF_ERROR(c->Send(send, dst));
      if (recv.defined()) KP_RETURN_IF_ERROR(c->Recv(recv, src));
      return absl::OkStatus();
    });
  }

  absl::Status Barrier() override {
    return queue_
        .Enqueue("Barrier",
                 [c = ctx_]() -> absl::Status {
                   return c->Exchange("Barrier", at::Tensor()).status();
                 })
        ->Wait();
  }

  absl::StatusOr<std::unique_ptr<Communicator>> Split(int color, int key) override {
    auto out = std::make_shared<std::shared_ptr<Ctx>>();
    KP_RETURN_IF_ERROR(
        queue_
            .Enqueue("Split",
                     [c = ctx_, color, key, out]() -> absl::Status {
                       const uint64_t n = c->splits++;
                       KP_ASSIGN_OR_RETURN(auto g, c->Exchange("Split", at::Tensor(), {color, key}));
                       if (color < 0) return absl::OkStatus();
                       std::vector<std::tuple<int64_t, int, int>> mine;  // key, index, global
                       for (int i = 0; i < c->size(); ++i) {
                         if (g.ints[i][0] == color) mine.emplace_back(g.ints[i][1], i, c->members[i]);
                       }
                       std::sort(mine.begin(), mine.end());
                       auto sub = std::make_shared<Ctx>();
                       sub->world = c->world;
                       sub->group = absl::StrCat(c->group, "/split", n, "c", color);
                       sub->timeout = c->timeout;
                       for (auto& [k, i, gl] : mine) {
                         if (i == c->index) sub->index = static_cast<int>(sub->members.size());
                         sub->members.push_back(gl);
                       }
                       *out = sub;
                       return absl::OkStatus();
                     })
            ->Wait());
    if (!*out) return std::unique_ptr<Communicator>();
    return std::unique_ptr<Communicator>(std::make_unique<FakeCommunicator>(*out));
  }

  // Not through the queue: it serves a communicator that has usually failed
  // or been aborted. The new group meets under a name derived from this one
  // and the excluded ranks, so survivors that disagree never meet.
  absl::StatusOr<std::unique_ptr<Communicator>> Shrink(const std::vector<int>& exclude) override {
    KP_ASSIGN_OR_RETURN(std::vector<int> map, ShrinkRankMap(size(), exclude));
    if (map[ctx_->index] < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("fake Shrink: rank ", ctx_->index, " is in its own exclude list"));
    }
    auto sub = std::make_shared<Ctx>();
    sub->world = ctx_->world;
    sub->group = absl::StrCat(ctx_->group, "/shrink", ctx_->shrinks++, ShrinkTag(exclude));
    sub->timeout = ctx_->timeout;
    for (int i = 0; i < size(); ++i) {
      if (map[i] >= 0) sub->members.push_back(ctx_->members[i]);
    }
    sub->index = map[ctx_->index];
    return std::unique_ptr<Communicator>(std::make_unique<FakeCommunicator>(std::move(sub)));
  }

  void Abort(const absl::Status& reason) override {
    // The queue first: its reason must reach the caller before the woken
    // worker reports its own, vaguer ABORTED.
    queue_.Abort(reason);
    {
      std::lock_guard<std::mutex> lock(ctx_->world->mu);
      ctx_->aborted = true;
    }
    ctx_->world->cv.notify_all();
  }

  std::optional<PendingOp> OldestPendingOp() override { return queue_.Running(); }

 private:
  static std::unique_ptr<Work> Failed(absl::Status s) { return CompletedWork(std::move(s)); }

  std::shared_ptr<Ctx> ctx_;
  WorkQueue queue_;
};

}  // namespace

FakeWorld::FakeWorld(int size, std::chrono::milliseconds timeout)
    : size_(size), timeout_(timeout), shared_(std::make_shared<Shared>()) {
  KP_CHECK(size > 0);
  shared_->dead.assign(size, false);
}

FakeWorld::~FakeWorld() = default;

std::unique_ptr<Communicator> FakeWorld::Join(int rank) {
  KP_CHECK(rank >= 0 && rank < size_);
  auto ctx = std::make_shared<Ctx>();
  ctx->world = shared_;
  ctx->group = "world";
  for (int r = 0; r < size_; ++r) ctx->members.push_back(r);
  ctx->index = rank;
  ctx->timeout = timeout_;
  return std::make_unique<FakeCommunicator>(std::move(ctx));
}

void FakeWorld::Kill(int rank) {
  {
    std::lock_guard<std::mutex> lock(shared_->mu);
    shared_->dead[rank] = true;
  }
  shared_->cv.notify_all();
}

}  // namespace kp::comm
