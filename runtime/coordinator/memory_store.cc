// The in-memory StateStore: same contract as SQLite, nothing on disk. Tests
// use it to drive the coordinator without files.
#include <map>
#include <mutex>
#include <utility>

#include "runtime/coordinator/state_store.h"

namespace kp::coordinator {
namespace {

class MemoryStateStore final : public StateStore {
 public:
  absl::Status CommitJob(const v1::JobStatus& job, const std::vector<v1::Assignment>* assignments,
                         const std::vector<v1::JobEvent>& events) override {
    std::lock_guard<std::mutex> lock(mu_);
    jobs_[job.job_id()] = job;
    if (assignments != nullptr) assignments_[job.job_id()] = *assignments;
    auto& log = events_[job.job_id()];
    log.insert(log.end(), events.begin(), events.end());
    return absl::OkStatus();
  }

  absl::Status SaveAgent(const v1::AgentStatus& agent) override {
    std::lock_guard<std::mutex> lock(mu_);
    agents_[agent.info().agent_id()] = agent;
    return absl::OkStatus();
  }

  absl::StatusOr<std::vector<v1::JobStatus>> LoadJobs() override {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<v1::JobStatus> out;
    for (const auto& [id, job] : jobs_) out.push_back(job);
    return out;
  }

  absl::StatusOr<std::vector<v1::AgentStatus>> LoadAgents() override {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<v1::AgentStatus> out;
    for (const auto& [id, agent] : agents_) out.push_back(agent);
    return out;
  }

  absl::StatusOr<std::vector<v1::Assignment>> LoadAssignments() override {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<v1::Assignment> out;
    for (const auto& [id, list] : assignments_) out.insert(out.end(), list.begin(), list.end());
    return out;
  }

  absl::StatusOr<std::vector<v1::JobEvent>> LoadEvents() override {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<v1::JobEvent> out;
    for (const auto& [id, list] : events_) out.insert(out.end(), list.begin(), list.end());
    return out;
  }

 private:
  std::mutex mu_;
  std::map<std::string, v1::JobStatus> jobs_;
  std::map<std::string, v1::AgentStatus> agents_;
  std::map<std::string, std::vector<v1::Assignment>> assignments_;
  std::map<std::string, std::vector<v1::JobEvent>> events_;
};

}  // namespace

std::unique_ptr<StateStore> NewMemoryStateStore() { return std::make_unique<MemoryStateStore>(); }

}  // namespace kp::coordinator
