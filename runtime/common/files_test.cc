#include "runtime/common/files.h"

#include <filesystem>

#include <gtest/gtest.h>

namespace kp {
namespace {

namespace fs = std::filesystem;

std::string TempDir() {
  const char* t = std::getenv("TEST_TMPDIR");
  std::string dir = std::string(t ? t : "/tmp") + "/files_test";
  fs::create_directories(dir);
  return dir;
}

TEST(Files, AtomicWriteReplacesWholeFile) {
  const std::string path = TempDir() + "/a.txt";
  ASSERT_TRUE(WriteFileAtomically(path, "first version, long").ok());
  ASSERT_TRUE(WriteFileAtomically(path, "second").ok());
  auto got = ReadFile(path);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(*got, "second");
  for (auto& e : fs::directory_iterator(TempDir())) {
    EXPECT_EQ(e.path().string().find(".tmp."), std::string::npos) << "leftover " << e.path();
  }
}

TEST(Files, AtomicWriteIntoMissingDirFailsAndNamesPath) {
  absl::Status s = WriteFileAtomically(TempDir() + "/no/such/dir/x", "x");
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("no/such/dir"), std::string::npos) << s;
}

TEST(Files, ReadMissingFileIsNotFound) {
  auto got = ReadFile(TempDir() + "/missing");
  EXPECT_EQ(got.status().code(), absl::StatusCode::kNotFound);
}

TEST(Files, ResolveUnderRootRejectsEscapes) {
  const std::string root = TempDir() + "/root";
  fs::create_directories(root + "/data");
  EXPECT_TRUE(ResolveUnderRoot(root, "data/x.bin").ok());
  EXPECT_TRUE(ResolveUnderRoot(root, "data/../data/x.bin").ok());
  EXPECT_EQ(ResolveUnderRoot(root, "../x").status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(ResolveUnderRoot(root, "/etc/passwd").status().code(),
            absl::StatusCode::kPermissionDenied);
  // A sibling whose name starts with the root's name is still outside.
  fs::create_directories(root + "2");
  EXPECT_FALSE(ResolveUnderRoot(root, root + "2/x").ok());
  // A symlink inside the root pointing out of it does not smuggle a path out.
  std::error_code ec;
  fs::create_directory_symlink("/etc", root + "/link", ec);
  EXPECT_FALSE(ResolveUnderRoot(root, "link/passwd").ok());
}

}  // namespace
}  // namespace kp
