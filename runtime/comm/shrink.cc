#include "runtime/comm/shrink.h"

#include <algorithm>
#include <set>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "runtime/comm/log.h"

namespace kp::comm {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

std::string AliveKey(const std::string& prefix, int rank) {
  return absl::StrCat(prefix, "/alive/", rank);
}

bool Exists(Store& store, const std::string& key) {
  return store.Get(key, milliseconds(0)).ok();
}

absl::StatusOr<std::vector<int>> ParseMembers(const std::string& text, const std::string& key) {
  std::vector<int> out;
  size_t begin = 0;
  while (begin < text.size()) {
    size_t end = text.find(',', begin);
    if (end == std::string::npos) end = text.size();
    const std::string part = text.substr(begin, end - begin);
    begin = end + 1;
    int r = 0;
    if (!absl::SimpleAtoi(part, &r)) {
      return absl::DataLossError(absl::StrCat("store key ", key, " holds '", text,
                                              "', not a list of ranks"));
    }
    out.push_back(r);
  }
  return out;
}

}  // namespace

absl::StatusOr<std::vector<int>> ShrinkRankMap(int world, const std::vector<int>& exclude) {
  std::vector<int> map(world, 0);
  for (int r : exclude) {
    if (r < 0 || r >= world) {
      return absl::InvalidArgumentError(
          absl::StrCat("shrink: excluded rank ", r, " is not in a world of ", world));
    }
    map[r] = -1;
  }
  int next = 0;
  for (int r = 0; r < world; ++r) {
    if (map[r] == 0) map[r] = next++;
  }
  if (next == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("shrink: excluding [", absl::StrJoin(exclude, ","), "] leaves no rank of ",
                     world));
  }
  return map;
}

std::string ShrinkTag(const std::vector<int>& exclude) {
  std::set<int> sorted(exclude.begin(), exclude.end());
  return absl::StrCat("x", absl::StrJoin(sorted, "_"));
}

absl::StatusOr<std::vector<int>> AgreeOnSurvivors(Store& store, const std::string& prefix, int rank,
                                                  int world, const AgreeOptions& options) {
  if (rank < 0 || rank >= world) {
    return absl::InvalidArgumentError(
        absl::StrCat("survivor agreement: rank ", rank, " is not in a world of ", world));
  }
  const std::string members_key = absl::StrCat(prefix, "/members");
  KP_RETURN_IF_ERROR(store.Set(AliveKey(prefix, rank), "1"));
  const int expected = options.expected_survivors > 0 ? options.expected_survivors : world;
  const auto deadline = Clock::now() + options.window;
  std::vector<bool> seen(world, false);
  seen[rank] = true;
  bool decided_elsewhere = false;
  while (true) {
    if (Exists(store, members_key)) {
      decided_elsewhere = true;
      break;
    }
    int count = 0;
    for (int r = 0; r < world; ++r) {
      if (!seen[r] && Exists(store, AliveKey(prefix, r))) seen[r] = true;
      count += seen[r] ? 1 : 0;
    }
    if (count >= expected || Clock::now() >= deadline) break;
    std::this_thread::sleep_for(options.poll);
  }
  if (!decided_elsewhere) {
    KP_ASSIGN_OR_RETURN(int64_t ticket, store.Add(absl::StrCat(prefix, "/decider"), 1));
    if (ticket == 1) {
      std::vector<int> alive;
      for (int r = 0; r < world; ++r) {
        if (seen[r]) alive.push_back(r);
      }
      KP_RETURN_IF_ERROR(store.Set(members_key, absl::StrJoin(alive, ",")));
    }
  }
  // The decider publishes right after its election; the window bounds a
  // decider that died in between.
  auto text = store.Get(members_key, options.window);
  if (!text.ok()) {
    return absl::DeadlineExceededError(absl::StrCat(
        "survivor agreement '", prefix, "' on rank ", rank, ": no member list within ",
        options.window.count(), " ms (", text.status().message(), ")"));
  }
  KP_ASSIGN_OR_RETURN(std::vector<int> members, ParseMembers(*text, members_key));
  if (std::find(members.begin(), members.end(), rank) == members.end()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "survivor agreement '", prefix, "': rank ", rank, " arrived after the survivors [",
        absl::StrJoin(members, ","), "] had closed the list (window ", options.window.count(),
        " ms); it must rejoin through a restart"));
  }
  if (static_cast<int>(members.size()) < options.min_survivors) {
    return absl::DeadlineExceededError(absl::StrCat(
        "survivor agreement '", prefix, "': timeout waiting for ", options.min_survivors,
        " survivors of ", world, " ranks: only [", absl::StrJoin(members, ","), "] arrived within ",
        options.window.count(), " ms"));
  }
  return members;
}

absl::StatusOr<ShrinkResult> ShrinkToSurvivors(Communicator& comm, Store& store,
                                               const std::string& prefix,
                                               const AgreeOptions& options) {
  ShrinkResult out;
  KP_ASSIGN_OR_RETURN(out.survivors,
                      AgreeOnSurvivors(store, prefix, comm.rank(), comm.size(), options));
  std::vector<int> exclude;
  for (int r = 0, i = 0; r < comm.size(); ++r) {
    if (i < static_cast<int>(out.survivors.size()) && out.survivors[i] == r) {
      ++i;
    } else {
      exclude.push_back(r);
    }
  }
  KP_ASSIGN_OR_RETURN(out.old_to_new, ShrinkRankMap(comm.size(), exclude));
  LogInfo(absl::StrCat("shrink '", prefix, "': rank ", comm.rank(), " of ", comm.size(),
                       " -> rank ", out.old_to_new[comm.rank()], " of ", out.survivors.size(),
                       " (excluded [", absl::StrJoin(exclude, ","), "])"));
  KP_ASSIGN_OR_RETURN(out.comm, comm.Shrink(exclude));
  if (out.comm == nullptr || out.comm->rank() != out.old_to_new[comm.rank()] ||
      out.comm->size() != static_cast<int>(out.survivors.size())) {
    return absl::InternalError(absl::StrCat("shrink '", prefix, "': the ", comm.backend(),
                                            " backend returned a communicator of the wrong shape"));
  }
  return out;
}

ReformableCommunicator::ReformableCommunicator(std::unique_ptr<Communicator> inner, Store* store,
                                               std::string prefix)
    : inner_(std::move(inner)), store_(store), prefix_(std::move(prefix)) {
  KP_CHECK(inner_ != nullptr && store_ != nullptr);
}

std::shared_ptr<Communicator> ReformableCommunicator::Current() const {
  std::lock_guard<std::mutex> lock(mu_);
  return inner_;
}

int ReformableCommunicator::generation() const {
  std::lock_guard<std::mutex> lock(mu_);
  return generation_;
}

absl::StatusOr<ReformableCommunicator::Reformed> ReformableCommunicator::Reform(
    const AgreeOptions& options) {
  std::shared_ptr<Communicator> old = Current();
  int gen = generation();
  // Nothing more may run on the failed communicator (the watchdog may also
  // have aborted it; a second Abort is a no-op).
  old->Abort(absl::AbortedError(absl::StrCat("re-forming generation ", gen, " after a failure")));
  KP_ASSIGN_OR_RETURN(ShrinkResult r, ShrinkToSurvivors(*old, *store_,
                                                        absl::StrCat(prefix_, "/", gen), options));
  Reformed out;
  out.old_size = old->size();
  out.survivors = std::move(r.survivors);
  out.old_to_new = std::move(r.old_to_new);
  {
    std::lock_guard<std::mutex> lock(mu_);
    inner_ = std::shared_ptr<Communicator>(std::move(r.comm));
    out.generation = ++generation_;
  }
  return out;
}

int ReformableCommunicator::rank() const { return Current()->rank(); }
int ReformableCommunicator::size() const { return Current()->size(); }
std::string ReformableCommunicator::backend() const { return Current()->backend(); }
std::chrono::milliseconds ReformableCommunicator::timeout() const { return Current()->timeout(); }

absl::Status ReformableCommunicator::AllReduce(at::Tensor& tensor, ReduceOp op) {
  return Current()->AllReduce(tensor, op);
}
std::unique_ptr<Work> ReformableCommunicator::AllReduceAsync(at::Tensor tensor, ReduceOp op) {
  return Current()->AllReduceAsync(std::move(tensor), op);
}
absl::Status ReformableCommunicator::AllGather(const at::Tensor& input, at::Tensor& output) {
  return Current()->AllGather(input, output);
}
std::unique_ptr<Work> ReformableCommunicator::AllGatherAsync(at::Tensor input, at::Tensor output) {
  return Current()->AllGatherAsync(std::move(input), std::move(output));
}
absl::Status ReformableCommunicator::ReduceScatter(const at::Tensor& input, at::Tensor& output,
                                                   ReduceOp op) {
  return Current()->ReduceScatter(input, output, op);
}
absl::Status ReformableCommunicator::Broadcast(at::Tensor& tensor, int root) {
  return Current()->Broadcast(tensor, root);
}
std::unique_ptr<Work> ReformableCommunicator::SendRecvAsync(at::Tensor send, int dst,
                                                            at::Tensor recv, int src) {
  return Current()->SendRecvAsync(std::move(send), dst, std::move(recv), src);
}
absl::Status ReformableCommunicator::Barrier() { return Current()->Barrier(); }
absl::StatusOr<std::unique_ptr<Communicator>> ReformableCommunicator::Split(int color, int key) {
  return Current()->Split(color, key);
}
absl::StatusOr<std::unique_ptr<Communicator>> ReformableCommunicator::Shrink(
    const std::vector<int>& exclude) {
  return Current()->Shrink(exclude);
}
void ReformableCommunicator::Abort(const absl::Status& reason) { Current()->Abort(reason); }
std::optional<PendingOp> ReformableCommunicator::OldestPendingOp() {
  return Current()->OldestPendingOp();
}

}  // namespace kp::comm
