// The staging logic on CPU: tensors the inner backend cannot take as they
// are (here: non-contiguous views, standing in for device tensors) are copied
// to staging buffers, the inner call runs on those, and results are copied
// back into the caller's tensors; everything else passes through.
#include "runtime/comm/host_staged.h"

#include <thread>
#include <vector>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "runtime/comm/fake_communicator.h"

namespace kp::comm {
namespace {

void OnRanks(int n, const std::function<void(Communicator&)>& body) {
  FakeWorld world(n, std::chrono::seconds(30));
  std::vector<std::thread> ranks;
  for (int r = 0; r < n; ++r) {
    ranks.emplace_back([&, r] {
      auto staged = MakeHostStaged(world.Join(r));
      body(*staged);
    });
  }
  for (auto& t : ranks) t.join();
}

// A [rows, cols] view that is not contiguous (a transposed buffer).
at::Tensor Strided(int64_t rows, int64_t cols, float fill) {
  return at::full({cols, rows}, fill).t();
}

TEST(HostStaged, CollectivesCopyResultsBackIntoTheCallersTensors) {
  OnRanks(2, [](Communicator& c) {
    EXPECT_EQ(c.backend(), "fake+host-staged");
    const float me = static_cast<float>(c.rank() + 1);  // 1, 2
    at::Tensor t = Strided(3, 4, me);
    ASSERT_FALSE(t.is_contiguous());
    ASSERT_TRUE(c.AllReduce(t, ReduceOp::kSum).ok());
    EXPECT_TRUE(at::allclose(t, at::full({3, 4}, 3.0f)));
    ASSERT_FALSE(t.is_contiguous());  // still the caller's tensor

    auto w = c.AllReduceAsync(t, ReduceOp::kMax);
    ASSERT_TRUE(w->Wait().ok());
    EXPECT_TRUE(at::allclose(t, at::full({3, 4}, 3.0f)));

    at::Tensor gathered = Strided(2, 3, 0.0f);  // [2, 3]: rank r's 3 values in row r
    ASSERT_TRUE(c.AllGather(at::full({3}, me), gathered).ok());
    EXPECT_TRUE(at::allclose(gathered[0], at::full({3}, 1.0f)));
    EXPECT_TRUE(at::allclose(gathered[1], at::full({3}, 2.0f)));

    at::Tensor piece = at::zeros({4}).view({2, 2}).t();  // non-contiguous output
    ASSERT_TRUE(c.ReduceScatter(at::arange(8, at::kFloat), piece, ReduceOp::kSum).ok());
    // Rank r gets 2 * (elements 4r .. 4r+3), laid out [2, 2] in the view.
    EXPECT_TRUE(at::allclose(piece.contiguous().view({4}),
                             2 * at::arange(4 * c.rank(), 4 * c.rank() + 4, at::kFloat)));

    at::Tensor b = Strided(2, 2, me);
    ASSERT_TRUE(c.Broadcast(b, 1).ok());
    EXPECT_TRUE(at::allclose(b, at::full({2, 2}, 2.0f)));
  });
}

TEST(HostStaged, RingStepCopiesTheReceiveBufferOnWait) {
  OnRanks(3, [](Communicator& c) {
    const int n = c.size(), r = c.rank();
    at::Tensor send = at::full({2, 3}, static_cast<float>(r));
    at::Tensor recv = Strided(2, 3, -1.0f);
    auto w = c.SendRecvAsync(send, (r + 1) % n, recv, (r - 1 + n) % n);
    ASSERT_TRUE(w->Wait().ok());
    EXPECT_TRUE(at::allclose(recv, at::full({2, 3}, static_cast<float>((r - 1 + n) % n))));
    EXPECT_TRUE(w->Done());
  });
}

TEST(HostStaged, SplitChildrenAreStagedToo) {
  OnRanks(4, [](Communicator& c) {
    auto child = c.Split(c.rank() % 2, c.rank());
    ASSERT_TRUE(child.ok()) << child.status();
    ASSERT_NE(*child, nullptr);
    EXPECT_EQ((*child)->backend(), "fake+host-staged");
    at::Tensor t = Strided(2, 2, static_cast<float>(c.rank()));
    ASSERT_TRUE((*child)->AllReduce(t, ReduceOp::kSum).ok());
    // Ranks {0, 2} and {1, 3}.
    EXPECT_TRUE(at::allclose(t, at::full({2, 2}, c.rank() % 2 == 0 ? 2.0f : 4.0f)));
  });
}

}  // namespace
}  // namespace kp::comm
