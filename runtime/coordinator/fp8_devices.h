// FP8 jobs against the devices the cluster offers. A job asking for FP8
// (E4M3/E5M2 GEMMs need compute capability >= 8.9: Ada, Hopper or newer)
// when no registered agent has such a device is refused at submission,
// naming what the cluster has, unless its config allows the BF16 fallback
// (fp8.allow_fallback: true). With no agent registered yet, or a GPU whose
// capability the driver did not report, the job is accepted: the worker's own
// device check (runtime/fp8/device_check.h) then stops it with the same
// reason if it lands on a device without FP8.
#ifndef KP_RUNTIME_COORDINATOR_FP8_DEVICES_H_
#define KP_RUNTIME_COORDINATOR_FP8_DEVICES_H_

#include <vector>

#include "kp/v1/agent.pb.h"
#include "kp/v1/job.pb.h"
#include "runtime/common/status.h"
#include "runtime/coordinator/spec_validation.h"

namespace kp::coordinator {

// CUDA device with compute capability >= 8.9, or one of unknown capability.
bool MayRunFp8(const v1::Device& device);

// Whether the job's config sets fp8.allow_fallback: true (inline YAML, or the
// file under roots.config_root; the spec is already validated). A config that
// does not parse is left to the worker, which names the error: false here.
bool Fp8FallbackAllowed(const v1::JobSpec& spec, const SpecRoots& roots);

// INVALID_ARGUMENT ("spec.precision: ...") when the job asks for FP8 without
// fallback and no alive agent has a device that may run it; OK otherwise.
absl::Status CheckFp8Devices(const v1::JobSpec& spec, bool fallback_allowed,
                             const std::vector<v1::AgentStatus>& agents);

}  // namespace kp::coordinator

#endif  // KP_RUNTIME_COORDINATOR_FP8_DEVICES_H_
