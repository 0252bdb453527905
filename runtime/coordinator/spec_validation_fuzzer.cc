// libFuzzer target over spec validation: arbitrary bytes -> kp.v1.JobSpec
// (protobuf parse) -> ValidateJobSpec. Checks the properties the rest of the
// control plane relies on, not just "no crash": an accepted spec has a sane
// layout and a name that is a safe single path component; a rejected one
// names its field. Build and run with libFuzzer: fuzz_spec_validation.sh.
// spec_validation_fuzz_test runs the same function on mutated seeds under gcc.
#include <cstddef>
#include <cstdint>
#include <string>

#include "runtime/common/files.h"
#include "runtime/coordinator/spec_validation.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  kp::v1::JobSpec spec;
  if (!spec.ParseFromArray(data, static_cast<int>(size))) return 0;
  // Roots that need not exist: ResolveUnderRoot works lexically past them.
  static const kp::coordinator::SpecRoots roots = {"/nonexistent/kp-fuzz/configs", "/nonexistent/kp-fuzz/data",
                                                   "/nonexistent/kp-fuzz/ckpt"};
  const absl::Status st = kp::coordinator::ValidateJobSpec(spec, roots);
  if (st.ok()) {
    KP_CHECK(spec.dp() >= 1 && spec.cp() >= 1);
    KP_CHECK(static_cast<int64_t>(spec.dp()) * spec.cp() <= kp::coordinator::kMaxWorldSize);
    KP_CHECK(spec.steps() >= 1);
    KP_CHECK(!spec.name().empty() && spec.name().find('/') == std::string::npos && spec.name() != "..");
    KP_CHECK(spec.name().find('\0') == std::string::npos);
    if (!spec.data_path().empty()) {
      auto resolved = kp::ResolveUnderRoot(roots.data_root, spec.data_path());
      KP_CHECK(resolved.ok() && resolved->rfind(roots.data_root, 0) == 0);
    }
  } else {
    KP_CHECK(std::string(st.message()).rfind("spec.", 0) == 0);
    KP_CHECK(st.code() == absl::StatusCode::kInvalidArgument || st.code() == absl::StatusCode::kPermissionDenied);
  }
  return 0;
}
