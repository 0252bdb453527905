#include "runtime/coordinator/kv_store.h"

#include <gtest/gtest.h>

#include <thread>

namespace kp::coordinator {
namespace {

TEST(KvStore, SetGetAndWaitAcrossThreads) {
  KvStore kv;
  EXPECT_TRUE(absl::IsNotFound(kv.Get("jobs/j1/g1/nccl_id").status()));
  std::thread setter([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    ASSERT_TRUE(kv.Set("jobs/j1/g1/nccl_id", std::string("\x01\x00\x02", 3)).ok());
  });
  auto v = kv.Wait({"jobs/j1/g1/nccl_id"}, std::chrono::seconds(5));
  setter.join();
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ((*v)[0], std::string("\x01\x00\x02", 3));
}

TEST(KvStore, WaitTimesOutNamingTheMissingKey) {
  KvStore kv;
  ASSERT_TRUE(kv.Set("a", "1").ok());
  auto v = kv.Wait({"a", "b"}, std::chrono::milliseconds(20));
  EXPECT_TRUE(absl::IsDeadlineExceeded(v.status()));
  EXPECT_NE(v.status().message().find("b"), std::string::npos);
}

TEST(KvStore, BoundsAndPrefixErase) {
  KvStore kv;
  EXPECT_FALSE(kv.Set("", "x").ok());
  EXPECT_FALSE(kv.Set("k", std::string(KvStore::kMaxValueBytes + 1, 'x')).ok());
  ASSERT_TRUE(kv.Set("jobs/j1/g1/a", "1").ok());
  ASSERT_TRUE(kv.Set("jobs/j1/g1/b", "2").ok());
  ASSERT_TRUE(kv.Set("jobs/j1/g2/a", "3").ok());
  kv.ErasePrefix("jobs/j1/g1/");
  EXPECT_FALSE(kv.Get("jobs/j1/g1/a").ok());
  EXPECT_FALSE(kv.Get("jobs/j1/g1/b").ok());
  EXPECT_EQ(*kv.Get("jobs/j1/g2/a"), "3");
}

}  // namespace
}  // namespace kp::coordinator
