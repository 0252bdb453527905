#include "runtime/snapshot/snapshot_store.h"

#include <gtest/gtest.h>

#include <random>

#include "runtime/snapshot/checksum.h"

namespace kp::snapshot {
namespace {

std::string RandomBytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng() & 0xff);
  return s;
}

v1::SnapshotHeader Header(const std::string& job, int rank, int64_t step, const std::string& bytes,
                          int64_t generation = 1, int world = 2) {
  v1::SnapshotHeader h;
  h.mutable_key()->set_job_id(job);
  h.mutable_key()->set_rank(rank);
  h.mutable_key()->set_step(step);
  h.mutable_key()->set_generation(generation);
  h.mutable_key()->set_world_size(world);
  h.set_total_bytes(static_cast<int64_t>(bytes.size()));
  h.set_checksum(Checksum(bytes));
  return h;
}

absl::Status Put(SnapshotStore& s, const std::string& job, int rank, int64_t step, size_t n, int64_t gen = 1) {
  std::string b = RandomBytes(n, static_cast<uint32_t>(step * 7 + rank + gen * 1000));
  return s.Put(Header(job, rank, step, b, gen), b);
}

std::vector<int64_t> Steps(const SnapshotStore& s, const std::string& job, int rank) {
  std::vector<int64_t> out;
  for (const auto& h : s.Holdings()) {
    if (h.key().job_id() == job && h.key().rank() == rank) out.push_back(h.key().step());
  }
  return out;
}

TEST(SnapshotStore, KeepsTheNewestPerRankAndServesThemByteForByte) {
  SnapshotStore store({.max_bytes = 1 << 20, .keep_per_rank = 2});
  const std::string b = RandomBytes(1000, 3);
  ASSERT_TRUE(store.Put(Header("j1", 0, 2, b), b).ok());
  for (int64_t step : {4, 6}) ASSERT_TRUE(Put(store, "j1", 0, step, 1000).ok());
  ASSERT_TRUE(Put(store, "j1", 1, 6, 1000).ok());
  EXPECT_EQ(Steps(store, "j1", 0), (std::vector<int64_t>{4, 6}));
  EXPECT_EQ(Steps(store, "j1", 1), (std::vector<int64_t>{6}));
  EXPECT_EQ(store.bytes(), 3000);
  EXPECT_TRUE(absl::IsNotFound(store.Get("j1", 0, 2).status()));  // evicted: older than the two kept
  auto got = store.Get("j1", 0, 6);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->header.key().step(), 6);
  EXPECT_EQ(Checksum(*got->bytes), got->header.checksum());
  // Older than both kept snapshots of its rank: refused, nothing changes.
  EXPECT_TRUE(absl::IsFailedPrecondition(Put(store, "j1", 0, 2, 1000)));
  EXPECT_EQ(Steps(store, "j1", 0), (std::vector<int64_t>{4, 6}));
}

TEST(SnapshotStore, ANewerGenerationSupersedesAHigherStep) {
  SnapshotStore store({.max_bytes = 1 << 20, .keep_per_rank = 1});
  ASSERT_TRUE(Put(store, "j", 0, 14, 100, /*gen=*/1).ok());
  ASSERT_TRUE(Put(store, "j", 0, 12, 100, /*gen=*/2).ok());
  ASSERT_EQ(store.Holdings().size(), 1u);
  EXPECT_EQ(store.Holdings()[0].key().generation(), 2);
  EXPECT_EQ(store.Holdings()[0].key().step(), 12);
}

TEST(SnapshotStore, RejectsIncompleteOrCorruptImages) {
  SnapshotStore store;
  std::string b = RandomBytes(500, 9);
  v1::SnapshotHeader h = Header("j", 0, 2, b);
  EXPECT_TRUE(absl::IsDataLoss(store.Put(h, b.substr(0, 499))));  // a sender that died mid-stream
  std::string flipped = b;
  flipped[123] ^= 1;
  EXPECT_TRUE(absl::IsDataLoss(store.Put(h, flipped)));
  v1::SnapshotHeader bad = h;
  bad.mutable_key()->set_rank(2);  // world_size 2
  EXPECT_TRUE(absl::IsInvalidArgument(store.Put(bad, b)));
  EXPECT_TRUE(store.Holdings().empty());
  EXPECT_EQ(store.bytes(), 0);
}

TEST(SnapshotStore, MemoryBoundEvictsOlderSnapshotsBeforeAnyRanksNewest) {
  SnapshotStore store({.max_bytes = 3500, .keep_per_rank = 2});
  ASSERT_TRUE(Put(store, "j", 0, 2, 1000).ok());
  ASSERT_TRUE(Put(store, "j", 1, 2, 1000).ok());
  ASSERT_TRUE(Put(store, "j", 0, 4, 1000).ok());
  // A fourth KB exceeds the bound: rank 0's older step 2 goes, not rank 1's
  // newest (step 2, which is older but the only one of its rank).
  ASSERT_TRUE(Put(store, "j", 1, 4, 1000).ok());
  EXPECT_LE(store.bytes(), 3500);
  EXPECT_EQ(Steps(store, "j", 0), (std::vector<int64_t>{4}));
  EXPECT_EQ(Steps(store, "j", 1), (std::vector<int64_t>{2, 4}));
  // One image over the whole bound: refused.
  EXPECT_TRUE(absl::IsResourceExhausted(Put(store, "j", 0, 6, 4000)));
  EXPECT_EQ(Steps(store, "j", 0), (std::vector<int64_t>{4}));
  // Room only by dropping every rank's newest, which are newer: refused, kept.
  SnapshotStore full({.max_bytes = 2000, .keep_per_rank = 1});
  ASSERT_TRUE(Put(full, "j", 0, 8, 1000).ok());
  ASSERT_TRUE(Put(full, "j", 1, 8, 1000).ok());
  EXPECT_TRUE(absl::IsResourceExhausted(Put(full, "k", 0, 2, 1000)));
  EXPECT_EQ(full.bytes(), 2000);
  EXPECT_EQ(full.Holdings().size(), 2u);
}

TEST(SnapshotStore, RetainJobsEvictsEndedJobs) {
  SnapshotStore store;
  ASSERT_TRUE(Put(store, "a", 0, 2, 100).ok());
  ASSERT_TRUE(Put(store, "b", 0, 2, 200).ok());
  ASSERT_TRUE(Put(store, "b", 1, 2, 200).ok());
  store.RetainJobs({"a"});
  ASSERT_EQ(store.Holdings().size(), 1u);
  EXPECT_EQ(store.Holdings()[0].key().job_id(), "a");
  EXPECT_EQ(store.bytes(), 100);
  store.RetainJobs({});
  EXPECT_EQ(store.bytes(), 0);
}

}  // namespace
}  // namespace kp::snapshot
