#include "runtime/comm/gloo_communicator.h"

#include <gloo/allgather.h>
#include <gloo/allreduce.h>
#include <gloo/barrier.h>
#include <gloo/broadcast.h>
#include <gloo/common/error.h>
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/store.h>
#include <gloo/transport/tcp/device.h>
#include <gloo/transport/unbound_buffer.h>
#include <gloo/types.h>

#include <dlfcn.h>

#include <ATen/ATen.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <deque>
#include <map>
#include <mutex>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "runtime/comm/reduce_math.h"
#include "runtime/comm/shrink.h"
#include "runtime/comm/work_queue.h"

namespace kp::comm {
namespace {

// Gloo's rendezvous calls through this; gloo expects exceptions on failure.
class GlooStoreAdapter final : public gloo::rendezvous::Store {
 public:
  GlooStoreAdapter(kp::comm::Store* store, std::chrono::milliseconds timeout)
      : store_(store), timeout_(timeout) {}

  void set(const std::string& key, const std::vector<char>& data) override {
    auto s = store_->Set(key, std::string(data.begin(), data.end()));
    if (!s.ok()) throw gloo::IoException(s.ToString());
  }
  std::vector<char> get(const std::string& key) override {
    auto v = store_->Get(key, timeout_);
    if (!v.ok()) throw gloo::IoException(v.status().ToString());
    return std::vector<char>(v->begin(), v->end());
  }
  void wait(const std::vector<std::string>& keys) override { wait(keys, timeout_); }
  void wait(const std::vector<std::string>& keys,
            const std::chrono::milliseconds& timeout) override {
    // Gloo's kNoTimeout is zero: then ours applies.
    const auto t = timeout.count() > 0 ? std::min(timeout, timeout_) : timeout_;
    auto s = store_->Wait(keys, t);
    if (!s.ok()) throw gloo::IoException(s.ToString());
  }

 private:
  kp::comm::Store* store_;
  std::chrono::milliseconds timeout_;
};

// Slots for point-to-point transfers: a prefix no gloo collective uses, then
// a per-(src, dst) sequence number so the k-th send meets the k-th receive.
constexpr uint64_t kP2pSlotPrefix = 0x20;
uint64_t P2pSlot(uint64_t seq, int src, int dst) {
  return (kP2pSlotPrefix << 56) | ((seq & 0xfffff) << 24) | (uint64_t(src & 0xfff) << 12) |
         uint64_t(dst & 0xfff);
}

template <typename T>
void ReduceFn(void* c, const void* a, const void* b, size_t n, ReduceOp op) {
  T* out = static_cast<T*>(c);
  const T* x = static_cast<const T*>(a);
  const T* y = static_cast<const T*>(b);
  switch (op) {
    case ReduceOp::kSum:
    case ReduceOp::kAvg:
      for (size_t i = 0; i < n; ++i) out[i] = x[i] + y[i];
      break;
    case ReduceOp::kMax:
      for (size_t i = 0; i < n; ++i) out[i] = x[i] < y[i] ? y[i] : x[i];
      break;
    case ReduceOp::kMin:
      for (size_t i = 0; i < n; ++i) out[i] = y[i] < x[i] ? y[i] : x[i];
      break;
  }
}

template <typename T>
void SetAllreduce(gloo::AllreduceOptions& o, at::Tensor& t, ReduceOp op) {
  o.setOutput<T>(static_cast<T*>(t.data_ptr()), t.numel());
  o.setReduceFunction([op](void* c, const void* a, const void* b, size_t n) {
    ReduceFn<T>(c, a, b, n, op);
  });
}

absl::Status SetAllreduceTyped(gloo::AllreduceOptions& o, at::Tensor& t, ReduceOp op) {
  switch (t.scalar_type()) {
    case at::kFloat: SetAllreduce<float>(o, t, op); break;
    case at::kDouble: SetAllreduce<double>(o, t, op); break;
    case at::kBFloat16: SetAllreduce<c10::BFloat16>(o, t, op); break;
    case at::kHalf: SetAllreduce<c10::Half>(o, t, op); break;
    case at::kInt: SetAllreduce<int32_t>(o, t, op); break;
    case at::kLong: SetAllreduce<int64_t>(o, t, op); break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("gloo AllReduce: unsupported dtype ", at::toString(t.scalar_type())));
  }
  return absl::OkStatus();
}

// What the calls in flight share with the communicator (they may outlive it
// after an Abort).
struct Ctx {
  std::shared_ptr<gloo::transport::Device> device;
  std::shared_ptr<gloo::rendezvous::Context> context;
  kp::comm::Store* store = nullptr;
  std::string prefix;  // of this communicator's rendezvous keys
  int rank = 0, size = 1;
  std::chrono::milliseconds timeout{0};
  // Touched only on the queue's thread.
  std::map<std::pair<int, int>, uint64_t> p2p_seq;
  // Touched only by Split, which callers issue from one thread in rank order.
  uint64_t splits = 0;
  std::deque<at::Tensor> to_self;  // gloo has no pair to oneself
  absl::Status broken;  // set by the first transport failure

  // Runs one gloo call, converting its exceptions into statuses.
  template <typename Fn>
  absl::Status Guard(const char* op, Fn&& fn) {
    if (!broken.ok()) {
      return absl::AbortedError(absl::StrCat("gloo ", op, " on rank ", rank,
                                             ": communicator failed earlier: ", broken.message()));
    }
    try {
      return fn();
    } catch (const gloo::IoException& e) {
      broken = absl::DeadlineExceededError(
          absl::StrCat("gloo ", op, " on rank ", rank, " of ", size, ": a peer did not answer within ",
                       timeout.count(), " ms (", e.what(), ")"));
      return broken;
    } catch (const std::exception& e) {
      return absl::InternalError(absl::StrCat("gloo ", op, " on rank ", rank, ": ", e.what()));
    }
  }
};

absl::Status CheckCpu(const at::Tensor& t, const char* op, int rank) {
  KP_RETURN_IF_ERROR(CheckContiguous(t, op, rank));
  if (!t.device().is_cpu()) {
    return absl::InvalidArgumentError(
        absl::StrCat("gloo ", op, " on rank ", rank, ": tensor is on ", t.device().str(),
                     "; the gloo backend takes CPU tensors"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<Ctx>> Connect(std::shared_ptr<gloo::transport::Device> device,
                                             kp::comm::Store* store, std::string prefix, int rank,
                                             int size, std::chrono::milliseconds timeout) {
  auto ctx = std::make_shared<Ctx>();
  ctx->device = std::move(device);
  ctx->store = store;
  ctx->prefix = std::move(prefix);
  ctx->rank = rank;
  ctx->size = size;
  ctx->timeout = timeout;
  PrefixStore scoped(ctx->prefix, store);
  GlooStoreAdapter adapter(&scoped, timeout);
  try {
    ctx->context = std::make_shared<gloo::rendezvous::Context>(rank, size);
    ctx->context->setTimeout(timeout);
    ctx->context->connectFullMesh(adapter, ctx->device);
  } catch (const std::exception& e) {
    return absl::DeadlineExceededError(absl::StrCat("gloo rendezvous '", ctx->prefix, "' on rank ",
                                                    rank, " of ", size, " (timeout ",
                                                    timeout.count(), " ms): ", e.what()));
  }
  return ctx;
}

class GlooCommunicator final : public Communicator {
 public:
  explicit GlooCommunicator(std::shared_ptr<Ctx> ctx) : ctx_(std::move(ctx)) {}

  int rank() const override { return ctx_->rank; }
  int size() const override { return ctx_->size; }
  std::string backend() const override { return "gloo"; }
  std::chrono::milliseconds timeout() const override { return ctx_->timeout; }

  absl::Status AllReduce(at::Tensor& tensor, ReduceOp op) override {
    return AllReduceAsync(tensor, op)->Wait();
  }

  std::unique_ptr<Work> AllReduceAsync(at::Tensor tensor, ReduceOp op) override {
    if (auto s = CheckCpu(tensor, "AllReduce", rank()); !s.ok()) return CompletedWork(s);
    return queue_.Enqueue("AllReduce", [c = ctx_, tensor, op]() mutable {
      return c->Guard("AllReduce", [&]() -> absl::Status {
        if (c->size == 1 || tensor.numel() == 0) return absl::OkStatus();
        gloo::AllreduceOptions o(c->context);
        KP_RETURN_IF_ERROR(SetAllreduceTyped(o, tensor, op));
        o.setTimeout(c->timeout);
        gloo::allreduce(o);
        FinishAverage(tensor, op, c->size);
        return absl::OkStatus();
      });
    });
  }

  absl::Status AllGather(const at::Tensor& input, at::Tensor& output) override {
    return AllGatherAsync(input, output)->Wait();
  }

  std::unique_ptr<Work> AllGatherAsync(at::Tensor input, at::Tensor output) override {
    for (const at::Tensor* t : {&input, &output}) {
      if (auto s = CheckCpu(*t, "AllGather", rank()); !s.ok()) return CompletedWork(s);
    }
    if (auto s = CheckNumel(output, input.numel() * size(), "output", "AllGather", rank());
        !s.ok()) {
      return CompletedWork(s);
    }
    if (input.scalar_type() != output.scalar_type()) {
      return CompletedWork(absl::InvalidArgumentError("gloo AllGather: input and output dtypes differ"));
    }
    return queue_.Enqueue("AllGather", [c = ctx_, input, output]() mutable {
      return c->Guard("AllGather", [&]() -> absl::Status {
        const size_t bytes = input.nbytes();
        if (c->size == 1) {
          output.view(-1).copy_(input.view(-1));
          return absl::OkStatus();
        }
        gloo::AllgatherOptions o(c->context);
        // Bytes: gathering needs no arithmetic, so any dtype goes.
        o.setInput<char>(static_cast<char*>(input.data_ptr()), bytes);
        o.setOutput<char>(static_cast<char*>(output.data_ptr()), bytes * c->size);
        o.setTimeout(c->timeout);
        gloo::allgather(o);
        return absl::OkStatus();
      });
    });
  }

  // Gloo's reduce-scatter takes fixed algorithms and buffers; an AllReduce of
  // a copy followed by our slice is simpler and fine at CPU scale.
  absl::Status ReduceScatter(const at::Tensor& input, at::Tensor& output, ReduceOp op) override {
    KP_RETURN_IF_ERROR(CheckCpu(input, "ReduceScatter", rank()));
    KP_RETURN_IF_ERROR(CheckCpu(output, "ReduceScatter", rank()));
    KP_RETURN_IF_ERROR(
        CheckNumel(input, output.numel() * size(), "input", "ReduceScatter", rank()));
    at::Tensor full = input.clone();
    KP_RETURN_IF_ERROR(AllReduce(full, op));
    const int64_t n = output.numel();
    output.view(-1).copy_(full.view(-1).narrow(0, rank() * n, n));
    return absl::OkStatus();
  }

  absl::Status Broadcast(at::Tensor& tensor, int root) override {
    KP_RETURN_IF_ERROR(CheckCpu(tensor, "Broadcast", rank()));
    if (root < 0 || root >= size()) {
      return absl::InvalidArgumentError(absl::StrCat("gloo Broadcast: root ", root, " out of range"));
    }
    return queue_
        .Enqueue("Broadcast",
                 [c = ctx_, tensor, root]() mutable {
                   return c->Guard("Broadcast", [&]() -> absl::Status {
                     if (c->size == 1) return absl::OkStatus();
                     gloo::BroadcastOptions o(c->context);
                     o.setOutput<char>(static_cast<char*>(tensor.data_ptr()), tensor.nbytes());
                     o.setRoot(root);
                     o.setTimeout(c->timeout);
                     gloo::broadcast(o);
                     return absl::OkStatus();
                   });
                 })
        ->Wait();
  }

  std::unique_ptr<Work> SendRecvAsync(at::Tensor send, int dst, at::Tensor recv,
                                      int src) override {
    if (send.defined()) {
      if (auto s = CheckCpu(send, "SendRecv", rank()); !s.ok()) return CompletedWork(s);
      if (dst < 0 || dst >= size()) {
        return CompletedWork(absl::InvalidArgumentError(absl::StrCat("gloo SendRecv: dst ", dst, " out of range")));
      }
    }
    if (recv.defined()) {
      if (auto s = CheckCpu(recv, "SendRecv", rank()); !s.ok()) return CompletedWork(s);
      if (src < 0 || src >= size()) {
        return CompletedWork(absl::InvalidArgumentError(absl::StrCat("gloo SendRecv: src ", src, " out of range")));
      }
    }
    return queue_.Enqueue("SendRecv", [c = ctx_, send, dst, recv, src]() mutable {
      return c->Guard("SendRecv", [&]() -> absl::Status {
        std::unique_ptr<gloo::transport::UnboundBuffer> sbuf, rbuf;
        if (send.defined() && dst == c->rank) {
          c->to_self.push_back(send.clone());
          send = at::Tensor();
        }
        if (recv.defined() && src == c->rank) {
          if (c->to_self.empty()) {
            return absl::InvalidArgumentError(absl::StrCat(
                "gloo SendRecv on rank ", c->rank, ": receive from itself without a send"));
          }
          recv.view(-1).copy_(c->to_self.front().view(-1));
          c->to_self.pop_front();
          recv = at::Tensor();
        }
        // Post the receive first, then the send, then wait for both: a ring
        // of blocking sends would deadlock.
        if (recv.defined()) {
          rbuf = c->context->createUnboundBuffer(recv.data_ptr(), recv.nbytes());
          rbuf->recv(src, P2pSlot(c->p2p_seq[{src, c->rank}]++, src, c->rank));
        }
        if (send.defined()) {
          sbuf = c->context->createUnboundBuffer(send.data_ptr(), send.nbytes());
          sbuf->send(dst, P2pSlot(c->p2p_seq[{c->rank, dst}]++, c->rank, dst));
        }
        if (sbuf && !sbuf->waitSend(c->timeout)) {
          return absl::AbortedError(absl::StrCat("gloo Send to rank ", dst, " aborted"));
        }
        if (rbuf && !rbuf->waitRecv(c->timeout)) {
          return absl::AbortedError(absl::StrCat("gloo Recv from rank ", src, " aborted"));
        }
        return absl::OkStatus();
      });
    });
  }

  absl::Status Barrier() override {
    return queue_
        .Enqueue("Barrier",
                 [c = ctx_]() {
                   return c->Guard("Barrier", [&]() -> absl::Status {
                     if (c->size == 1) return absl::OkStatus();
                     gloo::BarrierOptions o(c->context);
                     o.setTimeout(c->timeout);
                     gloo::barrier(o);
                     return absl::OkStatus();
                   });
                 })
        ->Wait();
  }

  // Everyone's (color, key) by AllGather, then a fresh gloo context for each
  // color, meeting under "<prefix>/split<n>/c<color>" of the same store.
  absl::StatusOr<std::unique_ptr<Communicator>> Split(int color, int key) override {
    at::Tensor mine = at::tensor({int64_t{color}, int64_t{key}}, at::kLong);
    at::Tensor all = at::empty({size(), 2}, at::kLong);
    KP_RETURN_IF_ERROR(AllGather(mine, all));
    const uint64_t n = ctx_->splits++;
    if (color < 0) return std::unique_ptr<Communicator>();
    std::vector<std::tuple<int64_t, int>> part;  // key, parent rank
    auto a = all.accessor<int64_t, 2>();
    for (int r = 0; r < size(); ++r) {
      if (a[r][0] == color) part.emplace_back(a[r][1], r);
    }
    std::sort(part.begin(), part.end());
    int sub_rank = 0;
    while (std::get<1>(part[sub_rank]) != rank()) ++sub_rank;
    KP_ASSIGN_OR_RETURN(auto sub, Connect(ctx_->device, ctx_->store,
                                          absl::StrCat(ctx_->prefix, "/split", n, "c", color),
                                          sub_rank, static_cast<int>(part.size()), ctx_->timeout));
    return std::unique_ptr<Communicator>(std::make_unique<GlooCommunicator>(std::move(sub)));
  }

  // A fresh gloo context over the survivors on the same device, meeting
  // under "<prefix>/shrink<n>x<excluded>" of the same store (the excluded
  // ranks never write there). Not through the queue: it is usually broken or
  // aborted by now. The old context keeps its connections until this
  // communicator is destroyed.
  absl::StatusOr<std::unique_ptr<Communicator>> Shrink(const std::vector<int>& exclude) override {
    KP_ASSIGN_OR_RETURN(std::vector<int> map, ShrinkRankMap(size(), exclude));
    if (map[rank()] < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("gloo Shrink: rank ", rank(), " is in its own exclude list"));
    }
    const int survivors = *std::max_element(map.begin(), map.end()) + 1;
    queue_.Abort(absl::AbortedError(absl::StrCat("gloo communicator of rank ", rank(),
                                                 " was shrunk to ", survivors, " ranks")));
    KP_ASSIGN_OR_RETURN(auto sub, Connect(ctx_->device, ctx_->store,
                                          absl::StrCat(ctx_->prefix, "/shrink", shrinks_++,
                                                       ShrinkTag(exclude)),
                                          map[rank()], survivors, ctx_->timeout));
    return std::unique_ptr<Communicator>(std::make_unique<GlooCommunicator>(std::move(sub)));
  }

  void Abort(const absl::Status& reason) override { queue_.Abort(reason); }

  std::optional<PendingOp> OldestPendingOp() override { return queue_.Running(); }

 private:
  std::shared_ptr<Ctx> ctx_;
  WorkQueue queue_;
  uint64_t shrinks_ = 0;
};

}  // namespace

absl::Status CheckGlooBinding() {
  // libtorch_cpu and libtorch_cuda export their own (newer, ABI-incompatible)
  // copy of gloo's symbols. If either is searched before Debian's libgloo,
  // our calls land in torch's copy and corrupt memory; fail loudly instead.
  struct Probe {
    const char* name;
    void* addr;
  };
  const Probe probes[] = {
      {"gloo::allreduce",
       reinterpret_cast<void*>(static_cast<void (*)(const gloo::AllreduceOptions&)>(&gloo::allreduce))},
      {"gloo::allgather",
       reinterpret_cast<void*>(static_cast<void (*)(gloo::AllgatherOptions&)>(&gloo::allgather))},
      {"gloo::broadcast",
       reinterpret_cast<void*>(static_cast<void (*)(gloo::BroadcastOptions&)>(&gloo::broadcast))},
      {"gloo::transport::tcp::CreateDevice",
       reinterpret_cast<void*>(&gloo::transport::tcp::CreateDevice)},
  };
  for (const Probe& p : probes) {
    Dl_info info{};
    if (::dladdr(p.addr, &info) == 0 || info.dli_fname == nullptr) continue;
    const std::string lib = info.dli_fname;
    if (lib.find("libgloo") == std::string::npos) {
      return absl::FailedPreconditionError(absl::StrCat(
          "gloo: ", p.name, " resolves into ", lib,
          " instead of Debian's libgloo (libtorch exports its own gloo copy). Link libgloo "
          "before libtorch: depend on //runtime/comm:gloo before any torch target."));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Communicator>> CreateGlooCommunicator(int rank, int world,
                                                                     Store* store,
                                                                     const GlooOptions& options) {
  if (world < 1 || rank < 0 || rank >= world) {
    return absl::InvalidArgumentError(
        absl::StrCat("gloo: rank ", rank, " is not in a world of ", world));
  }
  KP_RETURN_IF_ERROR(CheckGlooBinding());
  std::shared_ptr<gloo::transport::Device> device;
  try {
    gloo::transport::tcp::attr attr;
    attr.hostname = options.hostname;
    device = gloo::transport::tcp::CreateDevice(attr);
  } catch (const std::exception& e) {
    return absl::UnavailableError(
        absl::StrCat("gloo: cannot listen on '", options.hostname, "': ", e.what()));
  }
  KP_ASSIGN_OR_RETURN(auto ctx, Connect(std::move(device), store, "gloo", rank, world,
                                        options.timeout));
  return std::unique_ptr<Communicator>(std::make_unique<GlooCommunicator>(std::move(ctx)));
}

}  // namespace kp::comm
