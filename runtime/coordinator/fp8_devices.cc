#include "runtime/coordinator/fp8_devices.h"

#include <map>
#include <string>

#include <yaml-cpp/yaml.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "runtime/common/files.h"

namespace kp::coordinator {
namespace {

// "8.9" -> 89; -1 when it does not parse.
int CapabilityTimesTen(const std::string& cc) {
  const size_t dot = cc.find('.');
  if (dot == std::string::npos || dot == 0 || dot + 1 >= cc.size()) return -1;
  try {
    return std::stoi(cc.substr(0, dot)) * 10 + std::stoi(cc.substr(dot + 1, 1));
  } catch (const std::exception&) {
    return -1;
  }
}

// "node-a: 2 CPU slots, 1 x NVIDIA A100-SXM4-80GB (8.0)"
std::string Describe(const v1::AgentStatus& agent) {
  std::map<std::string, int> kinds;
  for (const v1::Device& d : agent.info().devices()) {
    if (d.kind() == v1::DEVICE_KIND_CPU) {
      ++kinds["CPU slot"];
    } else {
      ++kinds[absl::StrCat(d.model(), " (", d.compute_capability(), ")")];
    }
  }
  std::vector<std::string> parts;
  for (const auto& [what, n] : kinds) {
    parts.push_back(what == "CPU slot" ? absl::StrCat(n, n == 1 ? " CPU slot" : " CPU slots")
                                       : absl::StrCat(n, " x ", what));
  }
  return absl::StrCat(agent.info().agent_id(), ": ", parts.empty() ? "no devices" : absl::StrJoin(parts, ", "));
}

}  // namespace

bool MayRunFp8(const v1::Device& device) {
  if (device.kind() != v1::DEVICE_KIND_CUDA) return false;
  const int cc = CapabilityTimesTen(device.compute_capability());
  return cc < 0 || cc >= 89;
}

bool Fp8FallbackAllowed(const v1::JobSpec& spec, const SpecRoots& roots) {
  std::string text = spec.config_yaml();
  if (spec.model_config_case() == v1::JobSpec::kConfigPath) {
    auto path = ResolveUnderRoot(roots.config_root, spec.config_path());
    if (!path.ok()) return false;
    auto read = ReadFile(*path);
    if (!read.ok()) return false;
    text = *std::move(read);
  }
  try {
    const YAML::Node fp8 = YAML::Load(text)["fp8"];
    return fp8 && fp8["allow_fallback"] && fp8["allow_fallback"].as<bool>();
  } catch (const std::exception&) {
    return false;
  }
}

absl::Status CheckFp8Devices(const v1::JobSpec& spec, bool fallback_allowed,
                             const std::vector<v1::AgentStatus>& agents) {
  if (spec.precision() != v1::PRECISION_FP8 || fallback_allowed) return absl::OkStatus();
  std::vector<std::string> offered;
  for (const v1::AgentStatus& a : agents) {
    if (a.state() != v1::AGENT_STATE_ALIVE) continue;
    for (const v1::Device& d : a.info().devices()) {
      if (MayRunFp8(d)) return absl::OkStatus();
    }
    offered.push_back(Describe(a));
  }
  if (offered.empty()) return absl::OkStatus();  // nobody registered yet: the worker checks
  return absl::InvalidArgumentError(absl::StrCat(
      "spec.precision: fp8 needs GPUs of compute capability >= 8.9 (Ada, Hopper or newer) and "
      "no registered agent has one (", absl::StrJoin(offered, "; "),
      "). Use precision bf16, or set fp8.allow_fallback: true in the config to train in BF16 "
      "on these devices"));
}

}  // namespace kp::coordinator
