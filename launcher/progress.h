// Turns job events into what a person watches: one progress line with
// step, loss and tokens/s (a bar redrawn in place on a terminal, plain lines
// otherwise, so logs stay readable), plus a line per state change.
#ifndef KP_LAUNCHER_PROGRESS_H_
#define KP_LAUNCHER_PROGRESS_H_

#include <cstdio>
#include <string>

#include "kp/v1/job.pb.h"

namespace kp::launcher {

// "step 12/100 [###.........] 12% loss 3.2100 tokens/s 12345"
std::string FormatProgress(const v1::Progress& p, int bar_width = 24);
// "j000001 RUNNING (generation 1): message"
std::string FormatState(const v1::JobEvent& e);
std::string StateName(v1::JobState s);

class ProgressPrinter {
 public:
  ProgressPrinter(std::FILE* out, bool redraw) : out_(out), redraw_(redraw) {}
  void OnEvent(const v1::JobEvent& e);
  void Finish();

 private:
  std::FILE* out_;
  bool redraw_;
  bool bar_open_ = false;
  int64_t last_step_ = -1;
};

// The exit status of kprun for a finished job: 0 COMPLETED, 1 FAILED,
// 3 CANCELLED (2 is kprun's own usage or spec errors).
int ExitCodeFor(const v1::JobStatus& job);

}  // namespace kp::launcher

#endif  // KP_LAUNCHER_PROGRESS_H_
