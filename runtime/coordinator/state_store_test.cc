#include "runtime/coordinator/state_store.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>

namespace kp::coordinator {
namespace {

std::string TempDb(const std::string& name) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  std::string dir = tmp != nullptr ? tmp : "/tmp";
  std::string path = dir + "/" + name + "-" + std::to_string(::getpid()) + ".db";
  std::filesystem::remove(path);
  return path;
}

v1::JobStatus Job(const std::string& id, int seq, v1::JobState state) {
  v1::JobStatus j;
  j.set_job_id(id);
  j.set_sequence(seq);
  j.set_state(state);
  j.mutable_spec()->set_name("n" + id);
  j.mutable_spec()->set_priority(seq * 3 % 7);
  j.mutable_spec()->set_dp(seq + 1);
  return j;
}

v1::Assignment Assign(const std::string& job, int rank, const std::string& agent) {
  v1::Assignment a;
  a.set_job_id(job);
  a.set_rank(rank);
  a.set_agent_id(agent);
  a.set_device_index(rank + 10);
  return a;
}

v1::JobEvent Event(const std::string& job, int seq, const std::string& msg) {
  v1::JobEvent e;
  e.set_job_id(job);
  e.set_sequence(seq);
  e.set_message(msg);
  return e;
}

// Writes a representative state; both implementations must read it back.
void Populate(StateStore& s) {
  ASSERT_TRUE(s.CommitJob(Job("a", 1, v1::JOB_STATE_QUEUED), nullptr, {Event("a", 1, "submitted")}).ok());
  std::vector<v1::Assignment> as = {Assign("b", 0, "n1"), Assign("b", 1, "n2")};
  ASSERT_TRUE(s.CommitJob(Job("b", 2, v1::JOB_STATE_PLACED), &as, {Event("b", 1, "x"), Event("b", 2, "y")}).ok());
  // Replacing assignments drops the old ones.
  std::vector<v1::Assignment> as2 = {Assign("b", 0, "n3")};
  ASSERT_TRUE(s.CommitJob(Job("b", 2, v1::JOB_STATE_RUNNING), &as2, {Event("b", 3, "z")}).ok());
  v1::AgentStatus agent;
  agent.mutable_info()->set_agent_id("n3");
  agent.mutable_info()->add_devices()->set_index(4);
  agent.set_state(v1::AGENT_STATE_ALIVE);
  ASSERT_TRUE(s.SaveAgent(agent).ok());
}

void ExpectPopulated(StateStore& s) {
  auto jobs = s.LoadJobs();
  ASSERT_TRUE(jobs.ok());
  ASSERT_EQ(jobs->size(), 2u);
  EXPECT_EQ((*jobs)[0].job_id(), "a");
  EXPECT_EQ((*jobs)[0].spec().dp(), 2);
  EXPECT_EQ((*jobs)[1].state(), v1::JOB_STATE_RUNNING);
  auto as = s.LoadAssignments();
  ASSERT_TRUE(as.ok());
  ASSERT_EQ(as->size(), 1u);
  EXPECT_EQ((*as)[0].agent_id(), "n3");
  EXPECT_EQ((*as)[0].device_index(), 10);
  auto agents = s.LoadAgents();
  ASSERT_TRUE(agents.ok());
  ASSERT_EQ(agents->size(), 1u);
  EXPECT_EQ((*agents)[0].info().devices(0).index(), 4);
  auto events = s.LoadEvents();
  ASSERT_TRUE(events.ok());
  ASSERT_EQ(events->size(), 4u);
  EXPECT_EQ((*events)[3].message(), "z");
}

TEST(MemoryStateStore, RoundTrip) {
  auto s = NewMemoryStateStore();
  Populate(*s);
  ExpectPopulated(*s);
}

TEST(SqliteStateStore, RoundTripAndReopen) {
  const std::string path = TempDb("roundtrip");
  {
    auto s = OpenSqliteStateStore(path);
    ASSERT_TRUE(s.ok()) << s.status();
    Populate(**s);
    ExpectPopulated(**s);
  }
  // A restart: a new connection to the same file sees everything.
  auto s = OpenSqliteStateStore(path);
  ASSERT_TRUE(s.ok()) << s.status();
  ExpectPopulated(**s);
  std::filesystem::remove(path);
}

TEST(SqliteStateStore, UsesWalMode) {
  const std::string path = TempDb("wal");
  auto s = OpenSqliteStateStore(path);
  ASSERT_TRUE(s.ok());
  ASSERT_TRUE((*s)->CommitJob(Job("a", 1, v1::JOB_STATE_QUEUED), nullptr, {}).ok());
  EXPECT_TRUE(std::filesystem::exists(path + "-wal"));
  std::filesystem::remove(path);
}

TEST(SqliteStateStore, UnwritablePathFailsWithPath) {
  auto s = OpenSqliteStateStore("/nonexistent-dir/x/state.db");
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("/nonexistent-dir/x/state.db"), std::string::npos);
}

}  // namespace
}  // namespace kp::coordinator
