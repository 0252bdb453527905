#include "runtime/worker/fault/parent_death.h"

#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <cerrno>
#include <string>

namespace kp::worker::fault {

absl::Status SignalWhenParentDies(int signal, pid_t expected_parent) {
  if (::prctl(PR_SET_PDEATHSIG, signal) != 0) {
    return absl::InternalError(std::string("prctl(PR_SET_PDEATHSIG): ") + strerror(errno));
  }
  // The parent may have died before the prctl: then no signal would come.
  if (expected_parent > 0 && ::getppid() != expected_parent) ::raise(signal);
  return absl::OkStatus();
}

}  // namespace kp::worker::fault
