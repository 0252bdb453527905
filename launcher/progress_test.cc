#include "launcher/progress.h"

#include <gtest/gtest.h>

namespace kp::launcher {
namespace {

TEST(Progress, FormatsStepLossAndThroughput) {
  v1::Progress p;
  p.set_step(25);
  p.set_total_steps(100);
  p.set_loss(3.14159);
  p.set_tokens_per_s(12345.6);
  EXPECT_EQ(FormatProgress(p, 8), "step 25/100 [##......]  25% loss 3.1416 tokens/s 12346");
  p.set_total_steps(0);
  EXPECT_EQ(FormatProgress(p, 8), "step 25 loss 3.1416 tokens/s 12346");
}

TEST(Progress, ExitCodes) {
  v1::JobStatus j;
  j.set_state(v1::JOB_STATE_COMPLETED);
  EXPECT_EQ(ExitCodeFor(j), 0);
  j.set_state(v1::JOB_STATE_FAILED);
  EXPECT_EQ(ExitCodeFor(j), 1);
  j.set_state(v1::JOB_STATE_CANCELLED);
  EXPECT_EQ(ExitCodeFor(j), 3);
}

TEST(Progress, PrinterWritesStatesAndProgressLines) {
  char* buf = nullptr;
  size_t size = 0;
  FILE* out = open_memstream(&buf, &size);
  ProgressPrinter printer(out, /*redraw=*/false);
  v1::JobEvent e;
  e.set_job_id("j000001");
  e.set_type(v1::EVENT_TYPE_STATE);
  e.set_state(v1::JOB_STATE_RUNNING);
  e.set_generation(1);
  printer.OnEvent(e);
  e.set_type(v1::EVENT_TYPE_PROGRESS);
  e.mutable_progress()->set_step(3);
  e.mutable_progress()->set_loss(2.5);
  printer.OnEvent(e);
  printer.OnEvent(e);  // same step: not repeated
  printer.Finish();
  std::fclose(out);
  EXPECT_EQ(std::string(buf, size), "j000001 RUNNING (generation 1)\nstep 3 loss 2.5000 tokens/s 0\n");
  std::free(buf);
}

TEST(Progress, FaultAndStragglerEventsAreShown) {
  v1::JobEvent e;
  e.set_job_id("j000002");
  e.set_type(v1::EVENT_TYPE_FAULT);
  e.set_state(v1::JOB_STATE_RUNNING);
  e.set_message("generation 1: rank 1 on node-1 exited with code 137 (SIGKILL)");
  EXPECT_EQ(FormatState(e), "j000002 fault: generation 1: rank 1 on node-1 exited with code 137 (SIGKILL)");
  e.set_type(v1::EVENT_TYPE_STRAGGLER);
  e.set_message("rank 1 on node-1#0: step time 0.300 s = 1.9x the median 0.155 s over 8 steps (straggler)");
  EXPECT_EQ(FormatState(e), "j000002 " + e.message());
}

}  // namespace
}  // namespace kp::launcher
