// The worker's side of in-memory snapshots (kp-train --snapshot_every,
// --snapshot_target, --resume_snapshot):
//  - SnapshotSender: every `every_steps` steps, the training thread copies
//    the checkpoint state to host memory and returns; a background thread
//    encodes it (snapshot_codec.h) and Puts it to each target agent. A
//    snapshot due while the previous one is still being sent is dropped
//    (never queued), so a slow or dead peer never stalls training.
//  - SnapshotEveryK: the hook, a BatchSource wrapper that offers a snapshot
//    at the start of every k-th step (all earlier optimizer steps are done).
//  - FetchSnapshot: on resume, fetch this rank's snapshot from the agent the
//    coordinator named and verify it (size, checksum, key, format, step,
//    model hash); the caller falls back to the disk checkpoint on any error.
//  - AllRanksAgree: the ranks resume from snapshots only if every rank can
//    (one MIN all-reduce), else all from the disk checkpoint.
#ifndef KP_RUNTIME_SNAPSHOT_WORKER_SNAPSHOTS_H_
#define KP_RUNTIME_SNAPSHOT_WORKER_SNAPSHOTS_H_

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "runtime/comm/communicator.h"
#include "runtime/common/status.h"
#include "runtime/engine/train_loop.h"
#include "runtime/snapshot/snapshot_client.h"
#include "runtime/snapshot/snapshot_codec.h"

namespace kp::snapshot {

struct WorkerSnapshotOptions {
  int64_t every_steps = 0;           // 0: no snapshots
  std::vector<std::string> targets;  // agents' SnapshotService addresses
  // Resume from this agent's snapshot of our rank at resume_step.
  std::string resume_address;
  int64_t resume_step = -1;
  std::string job_id;
  int64_t generation = 0;
  std::string token;
  int64_t timeout_ms = 10'000;  // per Put / Get
  // Tests that need every snapshot: wait for the transfer in flight instead
  // of dropping the snapshot due (this stalls training; never in kp-train).
  bool wait_when_busy = false;
};

struct SenderStats {
  int64_t offered = 0;
  int64_t dropped = 0;  // due while the previous one was still in flight
  int64_t sent = 0;     // Puts that succeeded (one per target)
  int64_t failed = 0;   // Puts that failed
  int64_t last_step = -1;  // newest step Put to every target
  double last_put_ms = 0;  // the last image's transfer to all targets
  int64_t bytes = 0;       // the last image's size
};

class SnapshotSender {
 public:
  // Takes the state before `next_step` on the training thread and hands it
  // to Give(): in kp-train a checkpoint sink whose CheckpointManager has
  // `capture` set (the very state and parts a disk checkpoint holds).
  using Capture = std::function<absl::Status(int64_t next_step)>;

  SnapshotSender(const WorkerSnapshotOptions& options, int rank, int world_size, Capture capture);
  // Waits for a send in flight (bounded by timeout_ms per target).
  ~SnapshotSender();
  SnapshotSender(const SnapshotSender&) = delete;
  SnapshotSender& operator=(const SnapshotSender&) = delete;

  // Takes a snapshot of the state before `next_step`, unless one is in flight.
  void Offer(int64_t next_step);
  // The captured state; `parts` are host copies the sender now owns.
  void Give(const ckpt::CheckpointState& state, Parts parts);
  // Blocks until nothing is in flight (tests).
  void Drain();
  SenderStats stats() const;

 private:
  struct Pending {
    Key key;
    ckpt::CheckpointState state;
    Parts parts;
  };
  void Loop();

  WorkerSnapshotOptions options_;
  int rank_;
  int world_size_;
  Capture capture_;
  std::vector<std::unique_ptr<SnapshotClient>> clients_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::optional<Pending> pending_;
  bool busy_ = false;
  bool stop_ = false;
  SenderStats stats_;
  std::thread thread_;
};

class SnapshotEveryK final : public engine::BatchSource {
 public:
  SnapshotEveryK(engine::BatchSource* inner, int64_t every, int64_t start_step, SnapshotSender* sender)
      : inner_(inner), every_(every), start_step_(start_step), sender_(sender) {}
  absl::StatusOr<at::Tensor> Batch(int64_t step, int micro_step) override;

 private:
  engine::BatchSource* inner_;
  int64_t every_;
  int64_t start_step_;
  SnapshotSender* sender_;
};

// This rank's snapshot at options.resume_step, verified. `model_hash` is the
// checkpoint's config_hash for this model (empty: not checked).
absl::StatusOr<ckpt::LoadedCheckpoint> FetchSnapshot(const WorkerSnapshotOptions& options, int rank,
                                                     int world_size, const std::string& model_hash);

// True when `mine` holds on every rank of `comm` (null: this rank alone).
// `device`: where the communicator's tensors live (the rank's GPU for NCCL).
absl::StatusOr<bool> AllRanksAgree(comm::Communicator* comm, bool mine, c10::Device device = c10::kCPU);

}  // namespace kp::snapshot

#endif  // KP_RUNTIME_SNAPSHOT_WORKER_SNAPSHOTS_H_
