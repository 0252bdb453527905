#include "launcher/progress.h"

#include <algorithm>
#include <cmath>

namespace kp::launcher {

std::string StateName(v1::JobState s) { return v1::JobState_Name(s).substr(std::string("JOB_STATE_").size()); }

std::string FormatProgress(const v1::Progress& p, int bar_width) {
  char buf[256];
  std::string bar;
  if (p.total_steps() > 0) {
    const double frac = std::clamp(static_cast<double>(p.step()) / p.total_steps(), 0.0, 1.0);
    const int filled = static_cast<int>(std::floor(frac * bar_width));
    bar = "[" + std::string(filled, '#') + std::string(bar_width - filled, '.') + "] ";
    std::snprintf(buf, sizeof(buf), "step %lld/%lld %s%3d%% loss %.4f tokens/s %.0f",
                  static_cast<long long>(p.step()), static_cast<long long>(p.total_steps()), bar.c_str(),
                  static_cast<int>(std::floor(frac * 100)), p.loss(), p.tokens_per_s());
  } else {
    std::snprintf(buf, sizeof(buf), "step %lld loss %.4f tokens/s %.0f", static_cast<long long>(p.step()), p.loss(),
                  p.tokens_per_s());
  }
  return buf;
}

std::string FormatState(const v1::JobEvent& e) {
  if (e.type() == v1::EVENT_TYPE_WORKER) return e.job_id() + " " + e.message();
  if (e.type() == v1::EVENT_TYPE_FAULT) return e.job_id() + " fault: " + e.message();
  if (e.type() == v1::EVENT_TYPE_STRAGGLER) return e.job_id() + " " + e.message();
  std::string s = e.job_id() + " " + StateName(e.state());
  if (e.generation() > 0) s += " (generation " + std::to_string(e.generation()) + ")";
  if (!e.message().empty()) s += ": " + e.message();
  return s;
}

void ProgressPrinter::OnEvent(const v1::JobEvent& e) {
  if (e.type() == v1::EVENT_TYPE_PROGRESS) {
    if (e.progress().step() == last_step_) return;
    last_step_ = e.progress().step();
    const std::string line = FormatProgress(e.progress());
    if (redraw_) {
      std::fprintf(out_, "\r\033[K%s", line.c_str());
      bar_open_ = true;
    } else {
      std::fprintf(out_, "%s\n", line.c_str());
    }
  } else {
    if (bar_open_) std::fprintf(out_, "\n");
    bar_open_ = false;
    std::fprintf(out_, "%s\n", FormatState(e).c_str());
  }
  std::fflush(out_);
}

void ProgressPrinter::Finish() {
  if (bar_open_) std::fprintf(out_, "\n");
  bar_open_ = false;
  std::fflush(out_);
}

int ExitCodeFor(const v1::JobStatus& job) {
  switch (job.state()) {
    case v1::JOB_STATE_COMPLETED:
      return 0;
    case v1::JOB_STATE_CANCELLED:
      return 3;
    default:
      return 1;
  }
}

}  // namespace kp::launcher
