// Shrink on the NCCL backend (ncclCommRevoke + ncclCommShrink). Needs GPUs;
// here it skips with the reason. One GPU: a revoked 1-rank communicator
// still shrinks (to itself) and the result reduces. Two or more: the last
// rank stops calling, the survivors' all-reduce is revoked by the watchdog,
// they agree through the store, shrink, and reduce correctly.
#include "runtime/comm/nccl_communicator.h"

#include <cuda_runtime_api.h>

#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>

#include <thread>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "kernels/gpu_test_util.h"
#include "runtime/comm/shrink.h"
#include "runtime/comm/watchdog.h"

namespace kp::comm {
namespace {

using std::chrono::milliseconds;

// NCCL cannot shrink a communicator to all of its ranks (on an H100 with
// NCCL 2.28 the call fails with ncclInvalidArgument); one GPU has no rank to
// exclude, so this checks the revoked communicator refuses further work and
// the empty shrink is refused with a message naming why. The shrink itself
// runs in SurvivorsOfAStoppedRankShrinkAndReduce (two or more GPUs).
TEST(NcclShrinkTest, RevokedOneRankCommunicatorRefusesAnEmptyShrink) {
  KP_SKIP_WITHOUT_GPU();
  InMemoryStore store;
  NcclOptions o;
  o.timeout = milliseconds(20000);
  o.device = 0;
  o.revoke_on_abort = true;
  auto comm = CreateNcclCommunicator(0, 1, &store, o);
  ASSERT_TRUE(comm.ok()) << comm.status();
  (*comm)->Abort(absl::UnavailableError("test abort"));
  at::Tensor t = at::randn({64}, at::TensorOptions().device(at::kCUDA, 0));
  EXPECT_EQ((*comm)->AllReduce(t, ReduceOp::kSum).code(), absl::StatusCode::kAborted);
  auto shrunk = (*comm)->Shrink({});
  ASSERT_FALSE(shrunk.ok());
  EXPECT_EQ(shrunk.status().code(), absl::StatusCode::kInvalidArgument) << shrunk.status();
  EXPECT_NE(shrunk.status().message().find("nothing to exclude"), std::string::npos) << shrunk.status();
}

TEST(NcclShrinkTest, FreedCommunicatorCannotShrink) {
  KP_SKIP_WITHOUT_GPU();
  InMemoryStore store;
  NcclOptions o;
  o.device = 0;
  auto comm = CreateNcclCommunicator(0, 1, &store, o);
  ASSERT_TRUE(comm.ok()) << comm.status();
  (*comm)->Abort(absl::UnavailableError("test abort"));  // ncclCommAbort
  EXPECT_EQ((*comm)->Shrink({}).status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(NcclShrinkTest, SurvivorsOfAStoppedRankShrinkAndReduce) {
  KP_SKIP_WITHOUT_GPU();
  int n = 0;
  ASSERT_EQ(cudaGetDeviceCount(&n), cudaSuccess);
  if (n < 2) GTEST_SKIP() << "needs 2 or more GPUs; this machine has " << n;
  InMemoryStore store;
  std::vector<absl::Status> st(n);
  std::vector<std::unique_ptr<Communicator>> comms(n);
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r) {
    threads.emplace_back([&, r] {
      st[r] = [&]() -> absl::Status {
        c10::cuda::CUDAGuard g(static_cast<c10::DeviceIndex>(r));
        NcclOptions o;
        o.timeout = milliseconds(3000);
        o.device = r;
        o.revoke_on_abort = true;
        KP_ASSIGN_OR_RETURN(comms[r], CreateNcclCommunicator(r, n, &store, o));
        auto opts = at::TensorOptions().device(at::kCUDA, r);
        at::Tensor one = at::ones({8}, opts);
        KP_RETURN_IF_ERROR(comms[r]->AllReduce(one, ReduceOp::kSum));
        KP_RETURN_IF_ERROR(comms[r]->Barrier());
        if (r == n - 1) return absl::OkStatus();  // stops calling: "dead"
        Watchdog dog(Watchdog::Options{milliseconds(50), milliseconds(100)});
        {
          Watchdog::Scoped watch(&dog, comms[r].get());
          at::Tensor t = at::full({8}, double(r + 1), opts);
          // Hangs on the missing rank until the watchdog revokes it.
          comms[r]->AllReduce(t, ReduceOp::kSum).IgnoreError();
          absl::Status b = comms[r]->Barrier();
          if (b.ok()) return absl::InternalError("barrier with a stopped peer succeeded");
        }
        AgreeOptions a;
        a.window = milliseconds(8000);
        a.expected_survivors = n - 1;
        KP_ASSIGN_OR_RETURN(ShrinkResult s, ShrinkToSurvivors(*comms[r], store, "agree", a));
        if (s.comm->size() != n - 1 || s.comm->rank() != r) {
          return absl::InternalError("wrong rank or size after shrink");
        }
        at::Tensor t = at::full({8}, double(r + 1), opts);
        KP_RETURN_IF_ERROR(s.comm->AllReduce(t, ReduceOp::kSum));
        KP_RETURN_IF_ERROR(s.comm->Barrier());
        const double want = (n - 1) * n / 2.0;  // 1 + ... + (n - 1)
        if (t.cpu()[0].item<double>() != want) {
          return absl::InternalError(absl::StrCat("sum ", t.cpu()[0].item<double>(), " != ", want));
        }
        return absl::OkStatus();
      }();
    });
  }
  for (auto& t : threads) t.join();
  if (comms[n - 1]) comms[n - 1]->Abort(absl::AbortedError("end of test"));
  for (int r = 0; r < n; ++r) EXPECT_TRUE(st[r].ok()) << "rank " << r << ": " << st[r];
}

}  // namespace
}  // namespace kp::comm
