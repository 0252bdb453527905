#include "runtime/snapshot/resume_plan.h"

#include <map>
#include <set>
#include <tuple>

#include "absl/strings/str_cat.h"

namespace kp::snapshot {
namespace {

const AgentView* Find(const std::vector<AgentView>& agents, const std::string& id) {
  for (const auto& a : agents) {
    if (a.agent_id == id) return &a;
  }
  return nullptr;
}

}  // namespace

std::vector<std::string> TargetsFor(int rank, const std::vector<v1::Assignment>& placed,
                                    const std::vector<AgentView>& agents) {
  std::vector<std::string> out;
  const int world = static_cast<int>(placed.size());
  if (rank < 0 || rank >= world) return out;
  const std::string& own = placed[rank].agent_id();
  const AgentView* mine = Find(agents, own);
  if (mine != nullptr && !mine->snapshot_address.empty()) out.push_back(mine->snapshot_address);
  for (int k = 1; k < world; ++k) {
    const std::string& other = placed[(rank + k) % world].agent_id();
    if (other == own) continue;
    const AgentView* peer = Find(agents, other);
    if (peer != nullptr && !peer->snapshot_address.empty()) {
      out.push_back(peer->snapshot_address);
      return out;
    }
  }
  // Every rank on one node: any other usable agent, the next by id after ours.
  const AgentView* first = nullptr;
  const AgentView* next = nullptr;
  for (const auto& a : agents) {
    if (!a.usable || a.snapshot_address.empty() || a.agent_id == own) continue;
    if (first == nullptr || a.agent_id < first->agent_id) first = &a;
    if (a.agent_id > own && (next == nullptr || a.agent_id < next->agent_id)) next = &a;
  }
  if (next == nullptr) next = first;
  if (next != nullptr) out.push_back(next->snapshot_address);
  return out;
}

std::optional<ResumeChoice> ChooseResume(const std::string& job_id, int world_size,
                                         const std::vector<AgentView>& agents,
                                         const std::vector<std::string>& placed_agent_by_rank) {
  if (world_size <= 0) return std::nullopt;
  // (step, generation) -> rank -> agents holding it.
  using Set = std::tuple<int64_t, int64_t>;
  std::map<Set, std::map<int, std::vector<const AgentView*>>> sets;
  for (const auto& a : agents) {
    if (!a.usable || a.snapshot_address.empty()) continue;
    for (const auto& h : a.holdings) {
      const v1::SnapshotKey& k = h.key();
      if (k.job_id() != job_id || k.world_size() != world_size || k.rank() < 0 || k.rank() >= world_size) continue;
      sets[{k.step(), k.generation()}][k.rank()].push_back(&a);
    }
  }
  for (auto it = sets.rbegin(); it != sets.rend(); ++it) {
    if (static_cast<int>(it->second.size()) != world_size) continue;
    ResumeChoice c;
    c.step = std::get<0>(it->first);
    c.generation = std::get<1>(it->first);
    for (int r = 0; r < world_size; ++r) {
      const auto& holders = it->second.at(r);
      const AgentView* pick = holders.front();
      for (const AgentView* h : holders) {
        if (r < static_cast<int>(placed_agent_by_rank.size()) && h->agent_id == placed_agent_by_rank[r]) pick = h;
      }
      c.address_by_rank.push_back(pick->snapshot_address);
    }
    return c;
  }
  return std::nullopt;
}

std::string ApplySnapshotPlan(const v1::JobSpec& spec, const std::vector<AgentView>& agents,
                              std::vector<v1::Assignment>* placed) {
  const int64_t every = spec.checkpoint().snapshot_every_steps();
  if (every <= 0 || placed->empty()) return "";
  for (int r = 0; r < static_cast<int>(placed->size()); ++r) {
    v1::Assignment& a = (*placed)[r];
    a.set_snapshot_every_steps(every);
    a.clear_snapshot_targets();
    for (const auto& t : TargetsFor(r, *placed, agents)) a.add_snapshot_targets(t);
  }
  const v1::Assignment& first = placed->front();
  if (!first.resume() || first.generation() <= 1) return "";
  std::vector<std::string> where;
  for (const auto& a : *placed) where.push_back(a.agent_id());
  std::optional<ResumeChoice> c =
      ChooseResume(first.job_id(), static_cast<int>(placed->size()), agents, where);
  if (!c) {
    return absl::StrCat("no complete set of in-memory snapshots of ", placed->size(),
                        " ranks survives; generation ", first.generation(), " resumes from the disk checkpoint");
  }
  for (int r = 0; r < static_cast<int>(placed->size()); ++r) {
    (*placed)[r].set_resume_snapshot_address(c->address_by_rank[r]);
    (*placed)[r].set_resume_snapshot_step(c->step);
  }
  return absl::StrCat("generation ", first.generation(), " resumes from the in-memory snapshots of step ", c->step,
                      " (generation ", c->generation, ") unless the disk checkpoint is as new");
}

}  // namespace kp::snapshot
