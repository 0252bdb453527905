#include "runtime/comm/store.h"

#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <thread>

#include <gtest/gtest.h>

namespace kp::comm {
namespace {

using std::chrono::milliseconds;

std::string TempDir(const std::string& name) {
  const char* t = std::getenv("TEST_TMPDIR");
  return std::string(t ? t : "/tmp") + "/" + name + "_" + std::to_string(::getpid());
}

void CheckBasics(Store& store) {
  ASSERT_TRUE(store.Set("a/b c", std::string("x\0y", 3)).ok());
  auto got = store.Get("a/b c", milliseconds(100));
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, std::string("x\0y", 3));
  auto missing = store.Get("nope", milliseconds(30));
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_NE(missing.status().message().find("nope"), std::string::npos);
  EXPECT_EQ(*store.Add("ctr", 3), 3);
  EXPECT_EQ(*store.Add("ctr", -1), 2);
  EXPECT_EQ(store.Add("a/b c", 1).status().code(), absl::StatusCode::kInvalidArgument);
  // Wait sees a key set later by another thread.
  std::thread setter([&] {
    std::this_thread::sleep_for(milliseconds(30));
    ASSERT_TRUE(store.Set("late", "1").ok());
  });
  EXPECT_TRUE(store.Wait({"a/b c", "late"}, milliseconds(2000)).ok());
  setter.join();
}

TEST(InMemoryStoreTest, Basics) {
  InMemoryStore store;
  CheckBasics(store);
}

TEST(FileStoreTest, Basics) {
  FileStore store(TempDir("filestore_basics"));
  CheckBasics(store);
}

TEST(PrefixStoreTest, NamespacesKeys) {
  InMemoryStore base;
  PrefixStore a("gen1", &base), b("gen2", &base);
  ASSERT_TRUE(a.Set("k", "1").ok());
  EXPECT_EQ(b.Get("k", milliseconds(20)).status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(*base.Get("gen1/k", milliseconds(20)), "1");
  CheckBasics(b);
}

// Counters stay exact when several processes add at once.
TEST(FileStoreTest, AddIsAtomicAcrossProcesses) {
  const std::string dir = TempDir("filestore_add");
  constexpr int kProcs = 4, kAdds = 50;
  std::vector<pid_t> kids;
  for (int p = 0; p < kProcs; ++p) {
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      FileStore store(dir);
      for (int i = 0; i < kAdds; ++i) {
        if (!store.Add("n", 1).ok()) _exit(1);
      }
      if (!store.Set("done" + std::to_string(p), "").ok()) _exit(2);
      _exit(0);
    }
    kids.push_back(pid);
  }
  for (pid_t pid : kids) {
    int st = 0;
    ASSERT_EQ(waitpid(pid, &st, 0), pid);
    EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << "child status " << st;
  }
  FileStore store(dir);
  EXPECT_EQ(*store.Add("n", 0), kProcs * kAdds);
}

}  // namespace
}  // namespace kp::comm
