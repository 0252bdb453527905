#include "runtime/worker/fault/exit_codes.h"

#include <gtest/gtest.h>

namespace kp::worker::fault {
namespace {

TEST(ExitCodes, EachCauseHasItsCode) {
  EXPECT_EQ(ExitCodeFor(absl::OkStatus()), kExitOk);
  EXPECT_EQ(ExitCodeFor(absl::CancelledError("stop requested: checkpoint saved before step 7")), kExitOk);
  EXPECT_EQ(ExitCodeFor(absl::DeadlineExceededError("AllReduce on rank 1 timed out after 30000 ms")),
            kExitCollectiveHung);
  EXPECT_EQ(ExitCodeFor(absl::AbortedError("communicator aborted")), kExitCollectiveHung);
  EXPECT_EQ(ExitCodeFor(absl::InvalidArgumentError("training.micro_batch must be >= 1")), kExitBadConfig);
  EXPECT_EQ(ExitCodeFor(absl::DataLossError("checkpoint-00010: bad header")), kExitFailed);
  EXPECT_EQ(ExitCodeFor(absl::InternalError("non-finite loss")), kExitFailed);
  // The codes the coordinator's recovery policy treats specially.
  EXPECT_EQ(kExitCollectiveHung, 75);
  EXPECT_EQ(kExitBadConfig, 2);
}

}  // namespace
}  // namespace kp::worker::fault
