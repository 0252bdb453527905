// In-process re-formation after a rank died: the survivors agree on who is
// still alive (through the rendezvous store, with a deadline) and shrink their
// communicator to themselves, keeping everything else they hold in memory.
//
// Agreement: each survivor writes "<prefix>/alive/<rank>" and waits up to
// `window` (from its own arrival) for the other ranks; the dead rank never
// writes. The first survivor whose window closes (or who sees everyone it
// expects) wins an Add() election and publishes the member list; the others
// read that list, so every survivor shrinks with the same one even when they
// noticed the failure at different times. Failures are noticed at most one
// communicator timeout apart (a rank blocked on a live but failed peer waits
// for its own timeout), so `window` must exceed the communicator's timeout.
// A survivor that arrives after the list is out is left out of it and gets
// FAILED_PRECONDITION (it falls back to the restart path).
#ifndef KP_RUNTIME_COMM_SHRINK_H_
#define KP_RUNTIME_COMM_SHRINK_H_

#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "runtime/comm/communicator.h"
#include "runtime/comm/store.h"

namespace kp::comm {

// old rank -> new rank (-1 for the excluded) after Shrink(exclude) of a
// communicator of `world` ranks. INVALID_ARGUMENT for a rank out of range or
// when nobody would be left.
absl::StatusOr<std::vector<int>> ShrinkRankMap(int world, const std::vector<int>& exclude);

// A name for a shrink: the sorted, deduplicated excluded ranks ("x1_3").
// Backends put it in the new communicator's rendezvous namespace, so ranks
// that disagree on the list time out instead of meeting.
std::string ShrinkTag(const std::vector<int>& exclude);

struct AgreeOptions {
  // How long a survivor waits for the others after it arrived; must exceed
  // the communicator timeout (see above).
  std::chrono::milliseconds window{std::chrono::seconds(30)};
  std::chrono::milliseconds poll{std::chrono::milliseconds(10)};
  // Fewer survivors than this: DEADLINE_EXCEEDED naming who arrived.
  int min_survivors = 1;
  // When known (> 0): decide as soon as this many have arrived instead of
  // waiting out the window for ranks that will never come.
  int expected_survivors = 0;
};

// The alive ranks (sorted, ranks of a communicator of `world`), the same list
// on every survivor. `prefix` must be fresh for every agreement (one per
// generation).
absl::StatusOr<std::vector<int>> AgreeOnSurvivors(Store& store, const std::string& prefix, int rank,
                                                  int world, const AgreeOptions& options);

struct ShrinkResult {
  std::unique_ptr<Communicator> comm;
  std::vector<int> survivors;   // old ranks, sorted
  std::vector<int> old_to_new;  // -1 for the excluded
};

// AgreeOnSurvivors over `comm`'s ranks, then comm.Shrink(the others).
absl::StatusOr<ShrinkResult> ShrinkToSurvivors(Communicator& comm, Store& store,
                                               const std::string& prefix,
                                               const AgreeOptions& options);

// A communicator that the survivors of a failure can re-form in place:
// whoever holds a pointer to it (the gradient reducer, the stop agreement,
// the watchdog) keeps it, and sees the new rank and size after Reform().
// Every call goes to the current backend communicator.
class ReformableCommunicator final : public Communicator {
 public:
  // `store` (not owned) must outlive this; agreements use keys under
  // "<prefix>/<generation>/".
  ReformableCommunicator(std::unique_ptr<Communicator> inner, Store* store, std::string prefix);

  struct Reformed {
    int generation = 0;           // after the reform (1 after the first)
    std::vector<int> survivors;   // ranks of the previous generation
    std::vector<int> old_to_new;  // -1 for the excluded
    int old_size = 0;
  };
  // Aborts the failed backend communicator, agrees with the other survivors
  // and replaces it by the shrunken one. Call from the thread that issues
  // collectives, with none in flight. On error the old (aborted) one stays.
  absl::StatusOr<Reformed> Reform(const AgreeOptions& options);
  int generation() const;

  int rank() const override;
  int size() const override;
  std::string backend() const override;
  absl::Status AllReduce(at::Tensor& tensor, ReduceOp op) override;
  std::unique_ptr<Work> AllReduceAsync(at::Tensor tensor, ReduceOp op) override;
  absl::Status AllGather(const at::Tensor& input, at::Tensor& output) override;
  std::unique_ptr<Work> AllGatherAsync(at::Tensor input, at::Tensor output) override;
  absl::Status ReduceScatter(const at::Tensor& input, at::Tensor& output, ReduceOp op) override;
  absl::Status Broadcast(at::Tensor& tensor, int root) override;
  std::unique_ptr<Work> SendRecvAsync(at::Tensor send, int dst, at::Tensor recv,
                                      int src) override;
  absl::Status Barrier() override;
  absl::StatusOr<std::unique_ptr<Communicator>> Split(int color, int key) override;
  absl::StatusOr<std::unique_ptr<Communicator>> Shrink(const std::vector<int>& exclude) override;
  void Abort(const absl::Status& reason) override;
  std::chrono::milliseconds timeout() const override;
  std::optional<PendingOp> OldestPendingOp() override;

 private:
  std::shared_ptr<Communicator> Current() const;

  mutable std::mutex mu_;
  std::shared_ptr<Communicator> inner_;
  Store* store_;
  std::string prefix_;
  int generation_ = 0;
};

}  // namespace kp::comm

#endif  // KP_RUNTIME_COMM_SHRINK_H_
