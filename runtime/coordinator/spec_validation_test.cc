#include "runtime/coordinator/spec_validation.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

namespace kp::coordinator {
namespace {

v1::JobSpec Good() {
  v1::JobSpec s;
  s.set_name("tiny-1");
  s.set_config_yaml("model: {layers: 2}\n");
  s.set_dp(2);
  s.set_cp(2);
  s.set_steps(10);
  return s;
}

class SpecValidationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* tmp = std::getenv("TEST_TMPDIR");
    root_ = std::string(tmp != nullptr ? tmp : "/tmp") + "/roots-" + std::to_string(::getpid());
    std::filesystem::create_directories(root_ + "/data/shards");
    std::filesystem::create_directories(root_ + "/ckpt");
    std::filesystem::create_directories(root_ + "/configs");
    std::filesystem::create_directories(root_ + "/outside");
    roots_ = {root_ + "/configs", root_ + "/data", root_ + "/ckpt"};
  }
  void TearDown() override { std::filesystem::remove_all(root_); }

  // The error code and that the message starts with the field name.
  void ExpectError(const v1::JobSpec& s, absl::StatusCode code, const std::string& field) {
    absl::Status st = ValidateJobSpec(s, roots_);
    EXPECT_EQ(st.code(), code) << st;
    EXPECT_EQ(std::string(st.message()).substr(0, field.size() + 6), "spec." + field + ":") << st;
  }

  std::string root_;
  SpecRoots roots_;
};

TEST_F(SpecValidationTest, AcceptsAGoodSpec) {
  v1::JobSpec s = Good();
  s.set_data_path("shards");
  s.mutable_checkpoint()->set_dir("run1");
  s.mutable_checkpoint()->set_resume(true);
  EXPECT_TRUE(ValidateJobSpec(s, roots_).ok()) << ValidateJobSpec(s, roots_);
  s.set_config_path("tiny.yaml");
  EXPECT_TRUE(ValidateJobSpec(s, roots_).ok());
}

TEST_F(SpecValidationTest, ErrorsNameTheField) {
  auto bad = [](auto mutate) {
    v1::JobSpec s = Good();
    mutate(s);
    return s;
  };
  ExpectError(bad([](auto& s) { s.set_name(""); }), absl::StatusCode::kInvalidArgument, "name");
  ExpectError(bad([](auto& s) { s.set_name("a/b"); }), absl::StatusCode::kInvalidArgument, "name");
  ExpectError(bad([](auto& s) { s.clear_config_yaml(); }), absl::StatusCode::kInvalidArgument, "config_yaml");
  ExpectError(bad([](auto& s) { s.set_dp(0); }), absl::StatusCode::kInvalidArgument, "dp");
  ExpectError(bad([](auto& s) { s.set_cp(-3); }), absl::StatusCode::kInvalidArgument, "cp");
  ExpectError(bad([](auto& s) { s.set_dp(100000); }), absl::StatusCode::kInvalidArgument, "dp");
  ExpectError(bad([](auto& s) { s.set_steps(0); }), absl::StatusCode::kInvalidArgument, "steps");
  ExpectError(bad([](auto& s) { s.set_cp_mode(static_cast<v1::CpMode>(99)); }),
              absl::StatusCode::kInvalidArgument, "cp_mode");
  ExpectError(bad([](auto& s) { s.set_precision(static_cast<v1::Precision>(42)); }),
              absl::StatusCode::kInvalidArgument, "precision");
  ExpectError(bad([](auto& s) { s.set_priority(5000); }), absl::StatusCode::kInvalidArgument, "priority");
  ExpectError(bad([](auto& s) { s.set_max_restarts(2); }), absl::StatusCode::kInvalidArgument, "max_restarts");
  // min_dp: 1 <= min_dp <= dp (dp = 2 here), and only for elastic jobs.
  ExpectError(bad([](auto& s) { s.set_elastic(true), s.set_min_dp(3); }), absl::StatusCode::kInvalidArgument,
              "min_dp");
  ExpectError(bad([](auto& s) { s.set_elastic(true), s.set_min_dp(-1); }), absl::StatusCode::kInvalidArgument,
              "min_dp");
  ExpectError(bad([](auto& s) { s.set_min_dp(1); }), absl::StatusCode::kInvalidArgument, "min_dp");
  {
    v1::JobSpec ok = Good();
    ok.set_elastic(true);
    for (int m : {1, 2}) {
      ok.set_min_dp(m);
      EXPECT_TRUE(ValidateJobSpec(ok, roots_).ok()) << m;
    }
  }
  // in_process_shrink: elastic, dp >= 2, cp == 1 (dp = 2, cp = 2 here).
  ExpectError(bad([](auto& s) { s.set_in_process_shrink(true); }), absl::StatusCode::kInvalidArgument,
              "in_process_shrink");
  ExpectError(bad([](auto& s) { s.set_elastic(true), s.set_in_process_shrink(true), s.set_dp(1); }),
              absl::StatusCode::kInvalidArgument, "in_process_shrink");
  ExpectError(bad([](auto& s) { s.set_elastic(true), s.set_in_process_shrink(true), s.set_cp(2); }),
              absl::StatusCode::kInvalidArgument, "in_process_shrink");
  {
    v1::JobSpec ok = Good();
    ok.set_elastic(true);
    ok.set_in_process_shrink(true);
    ok.set_cp(1);
    EXPECT_TRUE(ValidateJobSpec(ok, roots_).ok());
  }
  ExpectError(bad([](auto& s) { s.mutable_checkpoint()->set_every_steps(-1); }),
              absl::StatusCode::kInvalidArgument, "checkpoint.every_steps");
  ExpectError(bad([](auto& s) { s.mutable_checkpoint()->set_resume(true); }), absl::StatusCode::kInvalidArgument,
              "checkpoint.resume");
  ExpectError(bad([](auto& s) { s.set_config_yaml(std::string(kMaxConfigYamlBytes + 1, 'x')); }),
              absl::StatusCode::kInvalidArgument, "config_yaml");
}

TEST_F(SpecValidationTest, PathsMustStayUnderTheirRoots) {
  v1::JobSpec s = Good();
  s.set_data_path("../outside");
  ExpectError(s, absl::StatusCode::kPermissionDenied, "data_path");
  s.set_data_path("shards/../../ckpt");
  ExpectError(s, absl::StatusCode::kPermissionDenied, "data_path");
  s.set_data_path("/etc/passwd");
  ExpectError(s, absl::StatusCode::kPermissionDenied, "data_path");
  s.set_data_path(roots_.data_root + "/shards");  // absolute but inside: fine
  EXPECT_TRUE(ValidateJobSpec(s, roots_).ok());

  // A symlink inside the root that points out of it is an escape too.
  std::filesystem::create_directory_symlink(root_ + "/outside", roots_.checkpoint_root + "/link");
  s.mutable_checkpoint()->set_dir("link/run");
  ExpectError(s, absl::StatusCode::kPermissionDenied, "checkpoint.dir");

  v1::JobSpec c = Good();
  c.set_config_path("../../etc/shadow");
  ExpectError(c, absl::StatusCode::kPermissionDenied, "config_path");
}

TEST_F(SpecValidationTest, PathsAreRefusedWithoutARoot) {
  v1::JobSpec s = Good();
  s.set_data_path("shards");
  absl::Status st = ValidateJobSpec(s, SpecRoots{});
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("--data_root"), std::string::npos);
}

}  // namespace
}  // namespace kp::coordinator
