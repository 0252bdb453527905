#include "launcher/slurm/ports.h"

namespace kp::launcher {

JobPorts PortsAt(int base) {
  JobPorts ports;
  ports.coordinator = base;
  ports.metrics = base + 1;
  ports.agent_base = base + 2;
  return ports;
}

JobPorts PortsForJob(int64_t job_id) {
  int64_t slot = ((job_id % kPortSlots) + kPortSlots) % kPortSlots;
  return PortsAt(kDefaultPortBase + kPortsPerJob * static_cast<int>(slot));
}

}  // namespace kp::launcher
