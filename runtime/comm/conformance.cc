#include "runtime/comm/conformance.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <vector>

#include "absl/strings/str_cat.h"
#include "runtime/comm/reduce_math.h"

namespace kp::comm::testing {
namespace {

// Rank r's input for call `call` (identical on every rank that asks).
at::Tensor Input(uint64_t seed, int call, int r, int64_t n, at::ScalarType dtype) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed * 1000003 + call * 1009 + r);
  if (dtype == at::kLong) return at::randint(-1000, 1000, {n}, gen, at::kLong);
  // Away from zero so relative tolerances mean something.
  return (at::rand({n}, gen, at::kDouble) + 0.5).mul_(r % 2 ? 1 : -1).to(dtype);
}

absl::Status Compare(const at::Tensor& got, const at::Tensor& want, const std::string& what,
                     int rank) {
  const bool exact = got.scalar_type() == at::kLong;
  const double rtol = got.scalar_type() == at::kBFloat16 ? 2e-2
                      : got.scalar_type() == at::kFloat ? 1e-5
                                                        : 1e-12;
  at::Tensor g = got.cpu().to(at::kDouble).reshape({-1}), w = want.to(at::kDouble).reshape({-1});
  if (g.numel() != w.numel()) {
    return absl::InternalError(absl::StrCat(what, " rank ", rank, ": numel ", g.numel(), " vs ",
                                            w.numel()));
  }
  const double err = (g - w).abs().max().item<double>();
  const double scale = w.abs().max().item<double>() + 1e-30;
  if (exact ? err != 0 : err > rtol * scale) {
    return absl::InternalError(absl::StrCat(what, " rank ", rank, ": max abs error ", err,
                                            " (scale ", scale, ", rtol ", rtol, ")"));
  }
  return absl::OkStatus();
}

at::Tensor Reference(const std::vector<at::Tensor>& ins, ReduceOp op) {
  const bool is_int = ins[0].scalar_type() == at::kLong;
  at::Tensor acc = is_int ? ins[0].clone() : ins[0].to(at::kDouble);
  for (size_t i = 1; i < ins.size(); ++i) {
    Accumulate(acc, is_int ? ins[i] : ins[i].to(at::kDouble), op);
  }
  FinishAverage(acc, op, static_cast<int>(ins.size()));
  return acc;
}

}  // namespace

absl::Status RunConformance(Communicator& comm, uint64_t seed, c10::Device device) {
  const int n = comm.size(), me = comm.rank();
  int call = 0;
  const int64_t kLen = 257;  // odd: no accidental alignment
  auto all_inputs = [&](int c, int64_t len, at::ScalarType dt) {
    std::vector<at::Tensor> v;
    for (int r = 0; r < n; ++r) v.push_back(Input(seed, c, r, len, dt));
    return v;
  };

  // AllReduce, every op and dtype.
  for (auto dt : {at::kFloat, at::kDouble, at::kBFloat16, at::kLong}) {
    for (auto op : {ReduceOp::kSum, ReduceOp::kAvg, ReduceOp::kMax, ReduceOp::kMin}) {
      const int c = call++;
      auto ins = all_inputs(c, kLen, dt);
      at::Tensor t = ins[me].to(device, /*non_blocking=*/false, /*copy=*/true);
      KP_RETURN_IF_ERROR(comm.AllReduce(t, op));
      // bf16 sums round after each addition, in an order the backend picks.
      KP_RETURN_IF_ERROR(Compare(t, Reference(ins, op),
                                 absl::StrCat("AllReduce ", OpName(op), " ", at::toString(dt)), me));
    }
  }

  // Several async AllReduces in flight at once, waited in reverse.
  {
    std::vector<std::vector<at::Tensor>> ins;
    std::vector<at::Tensor> ts;
    std::vector<std::unique_ptr<Work>> works;
    for (int k = 0; k < 4; ++k) {
      ins.push_back(all_inputs(call++, kLen + k, at::kFloat));
      ts.push_back(ins.back()[me].to(device, false, true));
      works.push_back(comm.AllReduceAsync(ts.back(), ReduceOp::kSum));
    }
    for (int k = 3; k >= 0; --k) {
      KP_RETURN_IF_ERROR(works[k]->Wait());
      if (!works[k]->Done()) return absl::InternalError("Work::Done false after Wait");
      KP_RETURN_IF_ERROR(
          Compare(ts[k], Reference(ins[k], ReduceOp::kSum), absl::StrCat("AllReduceAsync ", k), me));
    }
  }

  // AllGather, sync and async.
  for (int async = 0; async < 2; ++async) {
    auto ins = all_inputs(call++, kLen, at::kFloat);
    at::Tensor out = at::empty({n, kLen}, at::TensorOptions(at::kFloat).device(device));
    const at::Tensor in = ins[me].to(device);
    if (async) {
      KP_RETURN_IF_ERROR(comm.AllGatherAsync(in, out)->Wait());
    } else {
      KP_RETURN_IF_ERROR(comm.AllGather(in, out));
    }
    KP_RETURN_IF_ERROR(Compare(out, at::stack(ins), async ? "AllGatherAsync" : "AllGather", me));
  }

  // ReduceScatter: slice r of the sum.
  for (auto op : {ReduceOp::kSum, ReduceOp::kAvg}) {
    auto ins = all_inputs(call++, kLen * n, at::kFloat);
    at::Tensor out = at::empty({kLen}, at::TensorOptions(at::kFloat).device(device));
    KP_RETURN_IF_ERROR(comm.ReduceScatter(ins[me].to(device), out, op));
    KP_RETURN_IF_ERROR(Compare(out, Reference(ins, op).narrow(0, me * kLen, kLen),
                               absl::StrCat("ReduceScatter ", OpName(op)), me));
  }

  // Broadcast from the last rank.
  {
    auto ins = all_inputs(call++, kLen, at::kDouble);
    at::Tensor t = ins[me].to(device, /*non_blocking=*/false, /*copy=*/true);
    KP_RETURN_IF_ERROR(comm.Broadcast(t, n - 1));
    KP_RETURN_IF_ERROR(Compare(t, ins[n - 1], "Broadcast", me));
  }

  // A ring: send to the right, receive from the left, twice in a row.
  for (int step = 0; step < 2; ++step) {
    auto ins = all_inputs(call++, kLen, at::kFloat);
    at::Tensor got = at::empty({kLen}, at::TensorOptions(at::kFloat).device(device));
    KP_RETURN_IF_ERROR(
        comm.SendRecvAsync(ins[me].to(device), (me + 1) % n, got, (me + n - 1) % n)->Wait());
    KP_RETURN_IF_ERROR(Compare(got, ins[(me + n - 1) % n], absl::StrCat("SendRecv ring ", step), me));
  }

  KP_RETURN_IF_ERROR(comm.Barrier());

  // Split into even and odd ranks, ordered by descending world rank.
  {
    KP_ASSIGN_OR_RETURN(auto sub, comm.Split(me % 2, -me));
    if (!sub) return absl::InternalError("Split returned no communicator");
    std::vector<int> members;
    for (int r = n - 1; r >= 0; --r) {
      if (r % 2 == me % 2) members.push_back(r);
    }
    int expect_rank = 0;
    while (members[expect_rank] != me) ++expect_rank;
    if (sub->size() != static_cast<int>(members.size()) || sub->rank() != expect_rank) {
      return absl::InternalError(absl::StrCat("Split on rank ", me, ": got rank ", sub->rank(),
                                              " of ", sub->size(), ", want ", expect_rank, " of ",
                                              members.size()));
    }
    auto ins = all_inputs(call++, kLen, at::kFloat);
    std::vector<at::Tensor> part;
    for (int r : members) part.push_back(ins[r]);
    at::Tensor t = ins[me].to(device, /*non_blocking=*/false, /*copy=*/true);
    KP_RETURN_IF_ERROR(sub->AllReduce(t, ReduceOp::kSum));
    KP_RETURN_IF_ERROR(Compare(t, Reference(part, ReduceOp::kSum), "AllReduce after Split", me));
    // The parent still works after the child was used.
    KP_RETURN_IF_ERROR(comm.Barrier());
  }

  // Rank 0 opts out with a negative color: it gets no communicator, the others
  // one of n - 1 ranks (none when n is 1), ordered by world rank.
  {
    KP_ASSIGN_OR_RETURN(auto sub, comm.Split(me == 0 ? -1 : 7, me));
    const int c = call++;
    if (me == 0) {
      if (sub) {
        return absl::InternalError(absl::StrCat("Split with a negative color on rank 0: got a "
                                                "communicator of ", sub->size(), " ranks"));
      }
    } else {
      if (!sub) return absl::InternalError(absl::StrCat("Split on rank ", me, ": no communicator"));
      if (sub->size() != n - 1 || sub->rank() != me - 1) {
        return absl::InternalError(absl::StrCat("Split without rank 0, on rank ", me, ": got rank ",
                                                sub->rank(), " of ", sub->size(), ", want ",
                                                me - 1, " of ", n - 1));
      }
      auto ins = all_inputs(c, kLen, at::kFloat);
      std::vector<at::Tensor> part(ins.begin() + 1, ins.end());
      at::Tensor t = ins[me].to(device, /*non_blocking=*/false, /*copy=*/true);
      KP_RETURN_IF_ERROR(sub->AllReduce(t, ReduceOp::kSum));
      KP_RETURN_IF_ERROR(Compare(t, Reference(part, ReduceOp::kSum), "AllReduce after a Split "
                                 "without rank 0", me));
    }
    KP_RETURN_IF_ERROR(comm.Barrier());
  }
  return absl::OkStatus();
}

}  // namespace kp::comm::testing
