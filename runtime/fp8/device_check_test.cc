#include "runtime/fp8/device_check.h"

#include <gtest/gtest.h>

#include "runtime/fp8/options.h"

namespace kp::fp8 {
namespace {

Fp8DeviceInfo Gpu(int major, int minor, const char* name) {
  Fp8DeviceInfo i;
  i.is_cuda = true;
  i.device_index = 0;
  i.major = major;
  i.minor = minor;
  i.name = name;
  return i;
}

TEST(Fp8DeviceCheck, HopperAndAdaAreSupported) {
  EXPECT_TRUE(CheckFp8Supported(Gpu(9, 0, "NVIDIA H100")).ok());
  EXPECT_TRUE(CheckFp8Supported(Gpu(8, 9, "NVIDIA L4")).ok());
  EXPECT_TRUE(CheckFp8Supported(Gpu(10, 0, "NVIDIA B200")).ok());
}

TEST(Fp8DeviceCheck, AmpereIsRefusedWithTheReason) {
  absl::Status s = CheckFp8Supported(Gpu(8, 0, "NVIDIA A100-SXM4-80GB"));
  ASSERT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("8.9"), std::string::npos) << s;
  EXPECT_NE(s.message().find("A100"), std::string::npos) << s;
  EXPECT_NE(s.message().find("8.0"), std::string::npos) << s;
  EXPECT_NE(s.message().find("allow_fallback"), std::string::npos) << s;
}

TEST(Fp8DeviceCheck, CpuIsRefusedWithTheReason) {
  absl::Status s = CheckFp8Supported(CpuDevice());
  ASSERT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("CPU"), std::string::npos) << s;
  EXPECT_NE(s.message().find("CUDA GPU"), std::string::npos) << s;
}

TEST(Fp8DeviceCheck, ResolveFailsOrFallsBackAsTheJobAllows) {
  absl::StatusOr<bool> strict = ResolveFp8(CpuDevice(), /*allow_fallback=*/false);
  EXPECT_FALSE(strict.ok());
  absl::StatusOr<bool> lenient = ResolveFp8(Gpu(7, 5, "Tesla T4"), /*allow_fallback=*/true);
  ASSERT_TRUE(lenient.ok());
  EXPECT_FALSE(*lenient);
  absl::StatusOr<bool> hopper = ResolveFp8(Gpu(9, 0, "NVIDIA H200"), false);
  ASSERT_TRUE(hopper.ok());
  EXPECT_TRUE(*hopper);
}

TEST(Fp8DeviceCheck, QueryOnThisMachineAgreesWithCheck) {
  // Whatever this machine has, the query must not crash and the check must
  // agree with the reported capability.
  const Fp8DeviceInfo info = QueryCudaDevice(0);
  EXPECT_FALSE(info.name.empty());
  const bool ok = CheckFp8Supported(info).ok();
  EXPECT_EQ(ok, info.is_cuda && (info.major > 8 || (info.major == 8 && info.minor >= 9)));
}

TEST(Fp8Options, RecipeNamesAndValidation) {
  EXPECT_EQ(*ParseRecipe("delayed"), Fp8Recipe::kDelayed);
  EXPECT_EQ(*ParseRecipe("current"), Fp8Recipe::kCurrent);
  absl::StatusOr<Fp8Recipe> bad = ParseRecipe("tensorwise");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("tensorwise"), std::string::npos);
  Fp8Options o;
  EXPECT_TRUE(ValidateOptions(o).ok());
  o.amax_history_len = 0;
  absl::Status s = ValidateOptions(o);
  EXPECT_NE(s.message().find("amax_history_len"), std::string::npos) << s;
  o = Fp8Options{};
  o.min_speedup = 0;
  EXPECT_FALSE(ValidateOptions(o).ok());
}

}  // namespace
}  // namespace kp::fp8
