#include "runtime/comm/nccl_communicator.h"

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "runtime/comm/reduce_math.h"
#include "runtime/comm/shrink.h"
#include "runtime/comm/work_queue.h"

// ncclCommShrink arrived in 2.27.3, ncclCommRevoke in 2.28.7.
#if defined(NCCL_VERSION_CODE) && NCCL_VERSION_CODE >= NCCL_VERSION(2, 27, 3)
#define KP_NCCL_HAS_SHRINK 1
#else
#define KP_NCCL_HAS_SHRINK 0
#endif
#if defined(NCCL_VERSION_CODE) && NCCL_VERSION_CODE >= NCCL_VERSION(2, 28, 7)
#define KP_NCCL_HAS_REVOKE 1
#else
#define KP_NCCL_HAS_REVOKE 0
#endif

namespace kp::comm {
namespace {

using Clock = std::chrono::steady_clock;

absl::StatusOr<ncclDataType_t> NcclType(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return ncclFloat32;
    case at::kDouble: return ncclFloat64;
    case at::kBFloat16: return ncclBfloat16;
    case at::kHalf: return ncclFloat16;
    case at::kInt: return ncclInt32;
    case at::kLong: return ncclInt64;
    case at::kByte: return ncclUint8;
    case at::kChar: return ncclInt8;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("nccl: unsupported dtype ", at::toString(t)));
  }
}

ncclRedOp_t NcclOp(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum: return ncclSum;
    case ReduceOp::kAvg: return ncclAvg;
    case ReduceOp::kMax: return ncclMax;
    case ReduceOp::kMin: return ncclMin;
  }
  return ncclSum;
}

// A CUDA event that frees itself.
struct Event {
  cudaEvent_t e = nullptr;
  Event() { cudaEventCreateWithFlags(&e, cudaEventDisableTiming); }
  ~Event() {
    if (e) cudaEventDestroy(e);
  }
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
};

struct Pending {
  std::string op;
  Clock::time_point started;
  std::shared_ptr<Event> done;
};

// State shared by the communicator and its Works.
struct Ctx {
  ncclComm_t comm = nullptr;
  int rank = 0, size = 1, device = 0;
  std::chrono::milliseconds timeout{0};
  std::unique_ptr<c10::cuda::CUDAStream> stream;
  std::mutex mu;  // NCCL calls on one communicator are issued one at a time
  std::deque<Pending> pending;
  std::atomic<bool> aborted{false};
  // revoke_on_abort: Abort() revoked `comm` instead of freeing it, so it is
  // still ours to shrink and, in the end, to free.
  bool revoke_on_abort = false;
  std::atomic<bool> revoked{false};
  std::mutex abort_mu;
  absl::Status abort_reason;
  // Where ncclCommSplit stores the new communicator. NCCL writes it from its
  // own thread when the split completes, which may be after a timed-out
  // Split() has returned, so it lives here rather than on Split()'s stack;
  // non-null only while a split is being collected or was cut short (Abort()
  // then aborts it as well, as NCCL's docs ask). Guarded by `mu`.
  ncclComm_t split_child = nullptr;

  ~Ctx() {
    if (!comm) return;
    if (revoked.load()) {
      // Finalize is invalid after a revoke; abort frees it.
      ncclCommAbort(comm);
      return;
    }
    if (aborted.load()) return;  // ncclCommAbort already freed it
    // Flush, bounded: a communicator that cannot finalize is aborted.
    ncclResult_t st = ncclCommFinalize(comm);
    const auto deadline = Clock::now() + timeout;
    while (st == ncclInProgress && Clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
      if (ncclCommGetAsyncError(comm, &st) != ncclSuccess) break;
    }
    if (st == ncclSuccess) {
      ncclCommDestroy(comm);
    } else {
      ncclCommAbort(comm);
    }
  }

  absl::Status AbortStatus(const std::string& op) {
    std::lock_guard<std::mutex> lock(abort_mu);
    return absl::AbortedError(absl::StrCat("nccl ", op, " on rank ", rank,
                                           ": communicator was aborted: ",
                                           abort_reason.ToString()));
  }

  // Callers must not hold `mu`.
  void Abort(const absl::Status& reason) {
    {
      std::lock_guard<std::mutex> lock(abort_mu);
      if (aborted.load()) return;
      abort_reason = reason.ok() ? absl::AbortedError("communicator aborted") : reason;
      aborted = true;
    }
    // Every other NCCL call on this communicator is made under `mu` and
    // checks `aborted` first; a call polling ncclInProgress sees the flag and
    // lets go of `mu` within one poll, so nothing touches the communicator
    // after ncclCommAbort frees it. Kernels stuck on a dead peer hold no lock:
    // ncclCommAbort is what ends them.
    std::lock_guard<std::mutex> lock(mu);
#if KP_NCCL_HAS_REVOKE
    if (comm && revoke_on_abort) {
      // Stops in-flight kernels like ncclCommAbort but keeps the handle, so
      // the survivors can shrink it. A revoke that fails leaves the plain
      // abort as the way out.
      const ncclResult_t r = ncclCommRevoke(comm, NCCL_REVOKE_DEFAULT);
      if (r == ncclSuccess || r == ncclInProgress) {
        revoked = true;
        return;
      }
    }
#endif
    if (comm) ncclCommAbort(comm);
    // ncclCommAbort joined NCCL's split thread, so split_child is final.
    AbortSplitChildLocked();
  }

  // Polls `c` until it leaves ncclInProgress, ignoring `aborted` (a revoked
  // communicator is aborted for the callers but still settles). Returns the
  // final state, or DEADLINE_EXCEEDED.
  absl::StatusOr<ncclResult_t> Quiesce(const std::string& op, ncclComm_t c, ncclResult_t r) {
    const auto deadline = Clock::now() + timeout;
    while (r == ncclInProgress) {
      if (Clock::now() > deadline) {
        return absl::DeadlineExceededError(absl::StrCat("nccl ", op, " on rank ", rank, " of ",
                                                        size, ": not done within ",
                                                        timeout.count(), " ms"));
      }
      std::this_thread::sleep_for(std::chrono::microseconds(200));
      if (ncclCommGetAsyncError(c, &r) != ncclSuccess) break;
    }
    return r;
  }

  // Frees a child that a failed or aborted split left behind. Callers hold
  // `mu`, and NCCL's split thread has finished.
  void AbortSplitChildLocked() {
    if (split_child) ncclCommAbort(split_child);
    split_child = nullptr;
  }

  absl::Status Error(const std::string& op, ncclResult_t r) {
    return absl::InternalError(absl::StrCat("nccl ", op, " on rank ", rank, ": ",
                                            ncclGetErrorString(r), " (",
                                            comm ? ncclGetLastError(comm) : "", ")"));
  }

  // After a call returned ncclInProgress: poll until it settles, up to the
  // timeout; a call that does not settle aborts the communicator.
  absl::Status Settle(const std::string& op, ncclComm_t c, ncclResult_t r) {
    const auto deadline = Clock::now() + timeout;
    while (r == ncclInProgress) {
      if (aborted.load()) return AbortStatus(op);
      if (Clock::now() > deadline) {
        // The caller aborts once it has let go of `mu`.
        return absl::DeadlineExceededError(absl::StrCat("nccl ", op, " on rank ", rank, " of ",
                                                        size, ": not done within ",
                                                        timeout.count(), " ms"));
      }
      std::this_thread::yield();
      if (ncclCommGetAsyncError(c, &r) != ncclSuccess) break;
    }
    if (r != ncclSuccess) return Error(op, r);
    return absl::OkStatus();
  }

  absl::Status CheckAsync(const std::string& op) {
    std::lock_guard<std::mutex> lock(mu);
    if (aborted.load()) return AbortStatus(op);
    ncclResult_t r = ncclSuccess;
    if (ncclCommGetAsyncError(comm, &r) == ncclSuccess && r != ncclSuccess && r != ncclInProgress) {
      return Error(op, r);
    }
    return absl::OkStatus();
  }
};

class NcclWork final : public Work {
 public:
  NcclWork(std::shared_ptr<Ctx> ctx, std::string op, std::shared_ptr<Event> done,
           std::vector<at::Tensor> keep)
      : ctx_(std::move(ctx)), op_(std::move(op)), done_(std::move(done)), keep_(std::move(keep)) {}

  absl::Status Wait() override {
    KP_RETURN_IF_ERROR(ctx_->CheckAsync(op_));
    c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(ctx_->device));
    auto current = at::cuda::getCurrentCUDAStream(static_cast<c10::DeviceIndex>(ctx_->device));
    if (cudaStreamWaitEvent(current.stream(), done_->e, 0) != cudaSuccess) {
      return absl::InternalError(absl::StrCat("nccl ", op_, ": cudaStreamWaitEvent failed"));
    }
    return absl::OkStatus();
  }

  bool Done() override {
    return ctx_->aborted.load() || cudaEventQuery(done_->e) == cudaSuccess;
  }

 private:
  std::shared_ptr<Ctx> ctx_;
  std::string op_;
  std::shared_ptr<Event> done_;
  std::vector<at::Tensor> keep_;  // alive until the caller drops the Work
};

absl::Status CheckCuda(const at::Tensor& t, const char* op, int rank, int device) {
  KP_RETURN_IF_ERROR(CheckContiguous(t, op, rank));
  if (!t.is_cuda() || t.get_device() != device) {
    return absl::InvalidArgumentError(absl::StrCat("nccl ", op, " on rank ", rank, ": tensor on ",
                                                   t.device().str(), ", expected cuda:", device));
  }
  return absl::OkStatus();
}

class NcclCommunicator final : public Communicator {
 public:
  explicit NcclCommunicator(std::shared_ptr<Ctx> ctx) : ctx_(std::move(ctx)) {}

  int rank() const override { return ctx_->rank; }
  int size() const override { return ctx_->size; }
  std::string backend() const override { return "nccl"; }
  std::chrono::milliseconds timeout() const override { return ctx_->timeout; }

  absl::Status AllReduce(at::Tensor& tensor, ReduceOp op) override {
    return AllReduceAsync(tensor, op)->Wait();
  }

  std::unique_ptr<Work> AllReduceAsync(at::Tensor tensor, ReduceOp op) override {
    if (auto s = CheckCuda(tensor, "AllReduce", rank(), ctx_->device); !s.ok()) {
      return CompletedWork(s);
    }
    auto type = NcclType(tensor.scalar_type());
    if (!type.ok()) return CompletedWork(type.status());
    // NCCL averages floating types only; integers sum, then divide here.
    const bool int_avg = op == ReduceOp::kAvg && !at::isFloatingType(tensor.scalar_type());
    const int n = size();
    return Launch(
        "AllReduce", {tensor},
        [&](ncclComm_t c, cudaStream_t st) {
          return ncclAllReduce(tensor.data_ptr(), tensor.data_ptr(), tensor.numel(), *type,
                               int_avg ? ncclSum : NcclOp(op), c, st);
        },
        nullptr, [&] { if (int_avg) FinishAverage(tensor, op, n); });
  }

  absl::Status AllGather(const at::Tensor& input, at::Tensor& output) override {
    return AllGatherAsync(input, output)->Wait();
  }

  std::unique_ptr<Work> AllGatherAsync(at::Tensor input, at::Tensor output) override {
    for (const at::Tensor* t : {&input, &output}) {
      if (auto s = CheckCuda(*t, "AllGather", rank(), ctx_->device); !s.ok()) return CompletedWork(s);
    }
    if (auto s = CheckNumel(output, input.numel() * size(), "output", "AllGather", rank()); !s.ok()) {
      return CompletedWork(s);
    }
    auto type = NcclType(input.scalar_type());
    if (!type.ok()) return CompletedWork(type.status());
    return Launch("AllGather", {input, output}, [&](ncclComm_t c, cudaStream_t st) {
      return ncclAllGather(input.data_ptr(), output.data_ptr(), input.numel(), *type, c, st);
    });
  }

  absl::Status ReduceScatter(const at::Tensor& input, at::Tensor& output, ReduceOp op) override {
    KP_RETURN_IF_ERROR(CheckCuda(input, "ReduceScatter", rank(), ctx_->device));
    KP_RETURN_IF_ERROR(CheckCuda(output, "ReduceScatter", rank(), ctx_->device));
    KP_RETURN_IF_ERROR(CheckNumel(input, output.numel() * size(), "input", "ReduceScatter", rank()));
    KP_ASSIGN_OR_RETURN(ncclDataType_t type, NcclType(input.scalar_type()));
    return Launch("ReduceScatter", {input, output},
                  [&](ncclComm_t c, cudaStream_t st) {
                    return ncclReduceScatter(input.data_ptr(), output.data_ptr(), output.numel(),
                                             type, NcclOp(op), c, st);
                  })
        ->Wait();
  }

  absl::Status Broadcast(at::Tensor& tensor, int root) override {
    KP_RETURN_IF_ERROR(CheckCuda(tensor, "Broadcast", rank(), ctx_->device));
    if (root < 0 || root >= size()) {
      return absl::InvalidArgumentError(absl::StrCat("nccl Broadcast: root ", root, " out of range"));
    }
    KP_ASSIGN_OR_RETURN(ncclDataType_t type, NcclType(tensor.scalar_type()));
    return Launch("Broadcast", {tensor},
                  [&](ncclComm_t c, cudaStream_t st) {
                    return ncclBroadcast(tensor.data_ptr(), tensor.data_ptr(), tensor.numel(),
                                         type, root, c, st);
                  })
        ->Wait();
  }

  std::unique_ptr<Work> SendRecvAsync(at::Tensor send, int dst, at::Tensor recv,
                                      int src) override {
    ncclDataType_t stype = ncclFloat32, rtype = ncclFloat32;
    if (send.defined()) {
      if (auto s = CheckCuda(send, "SendRecv", rank(), ctx_->device); !s.ok()) return CompletedWork(s);
      auto t = NcclType(send.scalar_type());
      if (!t.ok()) return CompletedWork(t.status());
      stype = *t;
      if (dst < 0 || dst >= size()) {
        return CompletedWork(absl::InvalidArgumentError(absl::StrCat("nccl SendRecv: dst ", dst, " out of range")));
      }
    }
    if (recv.defined()) {
      if (auto s = CheckCuda(recv, "SendRecv", rank(), ctx_->device); !s.ok()) return CompletedWork(s);
      auto t = NcclType(recv.scalar_type());
      if (!t.ok()) return CompletedWork(t.status());
      rtype = *t;
      if (src < 0 || src >= size()) {
        return CompletedWork(absl::InvalidArgumentError(absl::StrCat("nccl SendRecv: src ", src, " out of range")));
      }
    }
    std::vector<at::Tensor> keep;
    if (send.defined()) keep.push_back(send);
    if (recv.defined()) keep.push_back(recv);
    return Launch("SendRecv", keep, [&](ncclComm_t c, cudaStream_t st) {
      ncclResult_t r = ncclGroupStart();
      if (r != ncclSuccess) return r;
      if (send.defined()) {
        r = ncclSend(send.data_ptr(), send.numel(), stype, dst, c, st);
        if (r != ncclSuccess && r != ncclInProgress) {
          ncclGroupEnd();
          return r;
        }
      }
      if (recv.defined()) {
        r = ncclRecv(recv.data_ptr(), recv.numel(), rtype, src, c, st);
        if (r != ncclSuccess && r != ncclInProgress) {
          ncclGroupEnd();
          return r;
        }
      }
      return ncclGroupEnd();
    });
  }

  // A one-element AllReduce, then a host wait on its event (bounded).
  absl::Status Barrier() override {
    at::Tensor one = at::ones({1}, at::TensorOptions().dtype(at::kFloat).device(at::kCUDA, ctx_->device));
    std::shared_ptr<Event> done;
    auto work = Launch("Barrier", {one}, [&](ncclComm_t c, cudaStream_t st) {
      return ncclAllReduce(one.data_ptr(), one.data_ptr(), 1, ncclFloat32, ncclSum, c, st);
    }, &done);
    if (!done) return work->Wait();
    const auto deadline = Clock::now() + ctx_->timeout;
    while (true) {
      if (ctx_->aborted.load()) return ctx_->AbortStatus("Barrier");
      const cudaError_t q = cudaEventQuery(done->e);
      if (q == cudaSuccess) break;
      if (q != cudaErrorNotReady) {
        return absl::InternalError(absl::StrCat("nccl Barrier: ", cudaGetErrorString(q)));
      }
      if (Clock::now() > deadline) {
        auto s = absl::DeadlineExceededError(absl::StrCat(
            "nccl Barrier on rank ", rank(), " of ", size(), ": not done within ",
            ctx_->timeout.count(), " ms"));
        ctx_->Abort(s);
        return s;
      }
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    return ctx_->CheckAsync("Barrier");
  }

  // A negative color joins no sub-communicator (NCCL_SPLIT_NOCOLOR): OK with
  // a null pointer, as the interface documents.
  absl::StatusOr<std::unique_ptr<Communicator>> Split(int color, int key) override {
    std::unique_lock<std::mutex> lock(ctx_->mu);
    if (ctx_->aborted.load()) return ctx_->AbortStatus("Split");
    c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(ctx_->device));
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;
    ctx_->AbortSplitChildLocked();  // none expected; never leak one
    ncclResult_t r = ncclCommSplit(ctx_->comm, color < 0 ? NCCL_SPLIT_NOCOLOR : color, key,
                                   &ctx_->split_child, &config);
    // NCCL 2.28's non-blocking ncclCommSplit returns ncclSuccess while its
    // thread is still building the child (it drops the ncclInProgress of its
    // internal group end) and leaves the handle null until then; only the
    // parent's async error, back from ncclInProgress, says the split is done.
    // So poll the parent even after ncclSuccess.
    if (r == ncclSuccess) r = ncclInProgress;
    if (absl::Status st = ctx_->Settle("Split", ctx_->comm, r); !st.ok()) {
      const bool cut_short = st.code() == absl::StatusCode::kDeadlineExceeded ||
                             st.code() == absl::StatusCode::kAborted;
      // Failed by itself: NCCL's thread has finished; free what it built.
      // Cut short: Abort() frees it once ncclCommAbort has stopped the thread.
      if (!cut_short) ctx_->AbortSplitChildLocked();
      lock.unlock();
      if (st.code() == absl::StatusCode::kDeadlineExceeded) ctx_->Abort(st);
      return st;
    }
    ncclComm_t sub = std::exchange(ctx_->split_child, nullptr);
    if (sub == nullptr) {
      if (color < 0) return std::unique_ptr<Communicator>();
      return absl::InternalError(absl::StrCat("nccl Split on rank ", ctx_->rank, " (color ",
                                              color, "): NCCL completed without a communicator"));
    }
    auto child = std::make_shared<Ctx>();
    child->comm = sub;
    child->device = ctx_->device;
    child->timeout = ctx_->timeout;
    child->revoke_on_abort = ctx_->revoke_on_abort;
    if (absl::Status st = child->Settle("Split", sub, ncclInProgress); !st.ok()) {
      child->Abort(st);  // frees `sub`
      return st;
    }
    if (ncclCommUserRank(sub, &child->rank) != ncclSuccess ||
        ncclCommCount(sub, &child->size) != ncclSuccess) {
      return absl::InternalError("nccl Split: cannot read the new communicator's rank");
    }
    child->stream = std::make_unique<c10::cuda::CUDAStream>(
        c10::cuda::getStreamFromPool(false, static_cast<c10::DeviceIndex>(ctx_->device)));
    return std::unique_ptr<Communicator>(std::make_unique<NcclCommunicator>(std::move(child)));
  }

  // Revoke (if not yet) so nothing is in flight, then ncclCommShrink with
  // NCCL_SHRINK_ABORT (the parent failed: terminate what is left of its
  // operations first). Untested here (no GPU on the build machine): the GPU
  // run of the lead's bundle exercises it.
  absl::StatusOr<std::unique_ptr<Communicator>> Shrink(const std::vector<int>& exclude) override {
    KP_ASSIGN_OR_RETURN(std::vector<int> map, ShrinkRankMap(size(), exclude));
    if (map[rank()] < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("nccl Shrink: rank ", rank(), " is in its own exclude list"));
    }
#if !KP_NCCL_HAS_SHRINK
    return absl::UnimplementedError(absl::StrCat(
        "nccl Shrink: these NCCL headers (", NCCL_MAJOR, ".", NCCL_MINOR, ".", NCCL_PATCH,
        ") have no ncclCommShrink (needs >= 2.27.3)"));
#else
    std::vector<int> excluded;
    for (int r = 0; r < size(); ++r) {
      if (map[r] < 0) excluded.push_back(r);
    }
    std::unique_lock<std::mutex> lock(ctx_->mu);
    if (ctx_->aborted.load() && !ctx_->revoked.load()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "nccl Shrink on rank ", rank(), ": the communicator was freed by ncclCommAbort (",
          "create it with CommOptions::shrinkable so that Abort() revokes instead)"));
    }
    c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(ctx_->device));
#if KP_NCCL_HAS_REVOKE
    if (!ctx_->revoked.load()) {
      const ncclResult_t r = ncclCommRevoke(ctx_->comm, NCCL_REVOKE_DEFAULT);
      if (r != ncclSuccess && r != ncclInProgress) return ctx_->Error("Revoke", r);
      ctx_->revoked = true;
      std::lock_guard<std::mutex> alock(ctx_->abort_mu);
      ctx_->abort_reason = absl::AbortedError("revoked for a shrink");
      ctx_->aborted = true;
    }
    // Quiescent once the revoke's ncclInProgress settles. The state may then
    // be the error that made us shrink; NCCL_SHRINK_ABORT copes with that.
    KP_ASSIGN_OR_RETURN(ncclResult_t state, ctx_->Quiesce("Revoke", ctx_->comm, ncclInProgress));
    (void)state;
#endif
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;
    ctx_->AbortSplitChildLocked();
    if (excluded.empty()) {
      // NCCL 2.28 rejects a shrink that removes no rank (ncclInvalidArgument,
      // seen on an H100): say so instead of its bare "invalid argument".
      return absl::InvalidArgumentError(absl::StrCat(
          "nccl Shrink on rank ", rank(), ": nothing to exclude (NCCL cannot shrink a communicator "
          "to all of its ranks; form a new one instead)"));
    }
    ncclResult_t r = ncclCommShrink(ctx_->comm, excluded.data(), static_cast<int>(excluded.size()),
                                    &ctx_->split_child, &config, NCCL_SHRINK_ABORT);
    if (r != ncclSuccess && r != ncclInProgress) {
      ctx_->AbortSplitChildLocked();
      return ctx_->Error("Shrink", r);
    }
    // As with Split, the child may appear only once the parent settles.
    auto parent = ctx_->Quiesce("Shrink", ctx_->comm, ncclInProgress);
    if (!parent.ok()) return parent.status();  // Abort()/~Ctx free the child
    ncclComm_t sub = std::exchange(ctx_->split_child, nullptr);
    if (sub == nullptr) {
      return absl::InternalError(absl::StrCat("nccl Shrink on rank ", rank(), ": ",
                                              ncclGetErrorString(*parent),
                                              ", and no communicator came out"));
    }
    lock.unlock();
    auto child = std::make_shared<Ctx>();
    child->comm = sub;
    child->device = ctx_->device;
    child->timeout = ctx_->timeout;
    child->revoke_on_abort = ctx_->revoke_on_abort;
    child->rank = map[rank()];
    child->size = static_cast<int>(map.size() - excluded.size());
    if (absl::Status st = child->Settle("Shrink", sub, ncclInProgress); !st.ok()) {
      child->Abort(st);
      return st;
    }
    int got_rank = -1, got_size = -1;
    if (ncclCommUserRank(sub, &got_rank) != ncclSuccess ||
        ncclCommCount(sub, &got_size) != ncclSuccess || got_rank != child->rank ||
        got_size != child->size) {
      return absl::InternalError(absl::StrCat("nccl Shrink: new communicator is rank ", got_rank,
                                              " of ", got_size, ", expected ", child->rank,
                                              " of ", child->size));
    }
    child->stream = std::make_unique<c10::cuda::CUDAStream>(
        c10::cuda::getStreamFromPool(false, static_cast<c10::DeviceIndex>(ctx_->device)));
    return std::unique_ptr<Communicator>(std::make_unique<NcclCommunicator>(std::move(child)));
#endif
  }

  void Abort(const absl::Status& reason) override { ctx_->Abort(reason); }

  std::optional<PendingOp> OldestPendingOp() override {
    std::lock_guard<std::mutex> lock(ctx_->mu);
    auto& q = ctx_->pending;
    while (!q.empty() && cudaEventQuery(q.front().done->e) == cudaSuccess) q.pop_front();
    if (q.empty()) return std::nullopt;
    return PendingOp{q.front().op, q.front().started};
  }

 private:
  // Orders the dedicated stream after the caller's, issues `fn` there, settles
  // a non-blocking ncclInProgress, and records the end event.
  template <typename Fn>
  std::unique_ptr<Work> Launch(const std::string& op, std::vector<at::Tensor> tensors, Fn&& fn,
                               std::shared_ptr<Event>* done_out = nullptr,
                               const std::function<void()>& post = nullptr) {
    std::unique_lock<std::mutex> lock(ctx_->mu);
    if (ctx_->aborted.load()) return CompletedWork(ctx_->AbortStatus(op));
    const auto dev = static_cast<c10::DeviceIndex>(ctx_->device);
    c10::cuda::CUDAGuard guard(dev);
    auto caller = at::cuda::getCurrentCUDAStream(dev);
    cudaStream_t st = ctx_->stream->stream();
    auto ready = std::make_shared<Event>();
    auto done = std::make_shared<Event>();
    if (cudaEventRecord(ready->e, caller.stream()) != cudaSuccess ||
        cudaStreamWaitEvent(st, ready->e, 0) != cudaSuccess) {
      return CompletedWork(absl::InternalError(absl::StrCat("nccl ", op, ": stream ordering failed")));
    }
    absl::Status s = ctx_->Settle(op, ctx_->comm, fn(ctx_->comm, st));
    if (!s.ok()) {
      lock.unlock();
      if (s.code() == absl::StatusCode::kDeadlineExceeded) ctx_->Abort(s);
      return CompletedWork(s);
    }
    if (post) {
      c10::cuda::CUDAStreamGuard on_comm_stream(*ctx_->stream);
      post();
    }
    if (cudaEventRecord(done->e, st) != cudaSuccess) {
      return CompletedWork(absl::InternalError(absl::StrCat("nccl ", op, ": cudaEventRecord failed")));
    }
    // The caching allocator must not hand these blocks out again before the
    // collective is done with them.
    for (auto& t : tensors) {
      c10::cuda::CUDACachingAllocator::recordStream(t.storage().data_ptr(), *ctx_->stream);
    }
    // Forget finished calls here too, so the list stays short without a
    // watchdog polling it.
    while (!ctx_->pending.empty() && cudaEventQuery(ctx_->pending.front().done->e) == cudaSuccess) {
      ctx_->pending.pop_front();
    }
    ctx_->pending.push_back(Pending{op, Clock::now(), done});
    if (done_out) *done_out = done;
    return std::make_unique<NcclWork>(ctx_, op, std::move(done), std::move(tensors));
  }

  std::shared_ptr<Ctx> ctx_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Communicator>> CreateNcclCommunicator(int rank, int world,
                                                                     Store* store,
                                                                     const NcclOptions& options) {
  if (world < 1 || rank < 0 || rank >= world) {
    return absl::InvalidArgumentError(absl::StrCat("nccl: rank ", rank, " is not in a world of ", world));
  }
#if !KP_NCCL_HAS_REVOKE
  if (options.revoke_on_abort) {
    return absl::FailedPreconditionError(absl::StrCat(
        "nccl: revoke_on_abort (in-process shrink) needs ncclCommRevoke (NCCL >= 2.28.7); these "
        "headers are ", NCCL_MAJOR, ".", NCCL_MINOR, ".", NCCL_PATCH));
  }
#endif
  // Never NVLink multicast unless the operator asked for it explicitly.
  ::setenv("NCCL_NVLS_ENABLE", "0", /*overwrite=*/0);
  int device = options.device;
  if (device < 0 && cudaGetDevice(&device) != cudaSuccess) {
    return absl::FailedPreconditionError("nccl: no current CUDA device");
  }
  ncclUniqueId id;
  const std::string key = "nccl_id";
  if (rank == 0) {
    ncclResult_t r = ncclGetUniqueId(&id);
    if (r != ncclSuccess) {
      return absl::InternalError(absl::StrCat("ncclGetUniqueId: ", ncclGetErrorString(r)));
    }
    KP_RETURN_IF_ERROR(store->Set(key, std::string(reinterpret_cast<const char*>(&id), sizeof id)));
  } else {
    auto got = store->Get(key, options.timeout);
    if (!got.ok()) {
      return absl::DeadlineExceededError(absl::StrCat("nccl rendezvous on rank ", rank, ": ",
                                                      got.status().message()));
    }
    if (got->size() != sizeof id) {
      return absl::InvalidArgumentError(absl::StrCat("nccl rendezvous: id has ", got->size(), " bytes"));
    }
    std::memcpy(&id, got->data(), sizeof id);
  }
  auto ctx = std::make_shared<Ctx>();
  ctx->rank = rank;
  ctx->size = world;
  ctx->device = device;
  ctx->timeout = options.timeout;
  ctx->revoke_on_abort = options.revoke_on_abort;
  c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(device));
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  ncclComm_t comm = nullptr;
  ncclResult_t r = ncclCommInitRankConfig(&comm, world, id, rank, &config);
  ctx->comm = comm;
  if (comm == nullptr) {
    return absl::InternalError(absl::StrCat("ncclCommInitRankConfig on rank ", rank, ": ",
                                            ncclGetErrorString(r)));
  }
  absl::Status s = ctx->Settle("init", comm, r);
  if (!s.ok()) {
    ctx->Abort(s);
    if (s.code() == absl::StatusCode::kDeadlineExceeded) {
      return absl::DeadlineExceededError(absl::StrCat(s.message(), " (a rank did not join)"));
    }
    return s;
  }
  ctx->stream = std::make_unique<c10::cuda::CUDAStream>(
      c10::cuda::getStreamFromPool(false, static_cast<c10::DeviceIndex>(device)));
  return std::unique_ptr<Communicator>(std::make_unique<NcclCommunicator>(std::move(ctx)));
}

}  // namespace kp::comm
