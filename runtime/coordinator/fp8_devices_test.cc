#include "runtime/coordinator/fp8_devices.h"

#include <fstream>

#include <gtest/gtest.h>

namespace kp::coordinator {
namespace {

v1::Device Gpu(const std::string& cc) {
  v1::Device d;
  d.set_kind(v1::DEVICE_KIND_CUDA);
  d.set_model("GPU");
  d.set_compute_capability(cc);
  return d;
}

TEST(Fp8Devices, CapabilityDecides) {
  EXPECT_TRUE(MayRunFp8(Gpu("9.0")));
  EXPECT_TRUE(MayRunFp8(Gpu("8.9")));
  EXPECT_TRUE(MayRunFp8(Gpu("10.0")));
  EXPECT_FALSE(MayRunFp8(Gpu("8.6")));
  EXPECT_FALSE(MayRunFp8(Gpu("8.0")));
  EXPECT_TRUE(MayRunFp8(Gpu("")));  // unknown: the worker decides
  v1::Device cpu;
  cpu.set_kind(v1::DEVICE_KIND_CPU);
  EXPECT_FALSE(MayRunFp8(cpu));
}

TEST(Fp8Devices, OnlyAliveAgentsAndOnlyFp8JobsCount) {
  v1::JobSpec spec;
  spec.set_precision(v1::PRECISION_FP8);
  v1::AgentStatus old_gpu;
  old_gpu.set_state(v1::AGENT_STATE_ALIVE);
  old_gpu.mutable_info()->set_agent_id("v100");
  *old_gpu.mutable_info()->add_devices() = Gpu("7.0");
  v1::AgentStatus lost_h100;
  lost_h100.set_state(v1::AGENT_STATE_LOST);
  *lost_h100.mutable_info()->add_devices() = Gpu("9.0");
  EXPECT_TRUE(CheckFp8Devices(spec, false, {}).ok());  // nobody registered yet
  EXPECT_FALSE(CheckFp8Devices(spec, false, {old_gpu, lost_h100}).ok());
  EXPECT_TRUE(CheckFp8Devices(spec, true, {old_gpu}).ok());
  lost_h100.set_state(v1::AGENT_STATE_ALIVE);
  EXPECT_TRUE(CheckFp8Devices(spec, false, {old_gpu, lost_h100}).ok());
  spec.set_precision(v1::PRECISION_BF16);
  EXPECT_TRUE(CheckFp8Devices(spec, false, {old_gpu}).ok());
}

TEST(Fp8Devices, FallbackIsReadFromTheConfig) {
  v1::JobSpec spec;
  spec.set_config_yaml("fp8:\n  allow_fallback: true\n");
  EXPECT_TRUE(Fp8FallbackAllowed(spec, {}));
  spec.set_config_yaml("fp8:\n  allow_fallback: false\n");
  EXPECT_FALSE(Fp8FallbackAllowed(spec, {}));
  spec.set_config_yaml("model: {}\n");
  EXPECT_FALSE(Fp8FallbackAllowed(spec, {}));
  spec.set_config_yaml("fp8: [not, a, map\n");  // does not parse: left to the worker
  EXPECT_FALSE(Fp8FallbackAllowed(spec, {}));

  const char* tmp = std::getenv("TEST_TMPDIR");
  SpecRoots roots;
  roots.config_root = tmp != nullptr ? tmp : "/tmp";
  std::ofstream(roots.config_root + "/fallback.yaml") << "fp8:\n  allow_fallback: true\n";
  spec.set_config_path("fallback.yaml");
  EXPECT_TRUE(Fp8FallbackAllowed(spec, roots));
}

}  // namespace
}  // namespace kp::coordinator
