// Checkpoints of a run, written asynchronously and atomically:
//
//   run_dir/checkpoints/step_00001200/   a complete checkpoint
//       state.json                       step, data position, RNG states,
//                                        config hash, the list of parts
//       model.safetensors                one file per part ("model",
//       optimizer.safetensors            "optimizer", "optimizer.rank00001"...)
//   run_dir/checkpoints/LATEST           "step_00001200\n", written atomically
//   run_dir/checkpoints/.staging.step_00001300/   a save in progress
//
// Parts are written into the staging directory (each atomically); the
// committing process then writes state.json, fsyncs and renames the staging
// directory to step_XXXXXXXX. A crash leaves a staging directory, never a
// step directory that looks complete. Several ranks may write parts of one
// checkpoint to a shared run_dir: each calls SaveAsync with its own parts; the
// committer (options.commit) waits, up to commit_timeout, for the parts that
// state.part_names lists and then commits.
#ifndef KP_RUNTIME_ENGINE_CHECKPOINT_CHECKPOINT_MANAGER_H_
#define KP_RUNTIME_ENGINE_CHECKPOINT_CHECKPOINT_MANAGER_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "runtime/common/status.h"
#include "runtime/engine/checkpoint/safetensors.h"

namespace kp::ckpt {

struct CheckpointState {
  int64_t step = 0;           // the next optimizer step to run after loading
  int64_t data_position = 0;  // global samples consumed (Sampler::DataPosition)
  std::string config_hash;
  // Opaque byte strings by name (CPU / CUDA generator states...), stored
  // base64 in state.json.
  std::map<std::string, std::string> rng;
  // Small free-form strings (loss so far, run id...).
  std::map<std::string, std::string> extra;
  // Every part of the checkpoint, including those other ranks write. Empty
  // means "the parts passed to this SaveAsync".
  std::vector<std::string> part_names;
  // Names this save on every rank (e.g. the run's generation or start time),
  // so that parts an earlier, crashed attempt at the same step left in the
  // staging directory are not mistaken for this save's. Empty: any part
  // present counts (one process).
  std::string save_id;
};

struct LoadedCheckpoint {
  std::string dir;
  CheckpointState state;
  std::map<std::string, TensorMap> parts;  // part name -> tensors
};

struct CheckpointOptions {
  std::string run_dir;
  int keep_last = 3;     // complete checkpoints kept; older ones deleted
  bool commit = true;    // this process commits (rank 0); others only write parts
  std::chrono::milliseconds commit_timeout{std::chrono::minutes(10)};
  // A failed write (disk full, NFS hiccup) is logged and tried again, up to
  // write_attempts in all, waiting retry_backoff, then twice that, ...
  // Parts that never arrived from other ranks (DEADLINE_EXCEEDED) are not
  // retried: commit_timeout already waited.
  int write_attempts = 3;
  std::chrono::milliseconds retry_backoff{500};
  // Test seam: called before each write attempt; a non-OK status fails that
  // attempt as an I/O error would.
  std::function<absl::Status(int64_t step, int attempt)> fault_for_test;
  // When set, SaveAsync hands its host copy of the state and parts to this
  // function on the caller's thread instead of writing anything: in-memory
  // snapshots (runtime/snapshot/) take exactly what a checkpoint would hold.
  std::function<absl::Status(const CheckpointState& state, std::map<std::string, TensorMap> parts)> capture;
};

class CheckpointManager {
 public:
  explicit CheckpointManager(CheckpointOptions options);
  // Waits for a save in flight (its error is logged).
  ~CheckpointManager();
  CheckpointManager(const CheckpointManager&) = delete;
  CheckpointManager& operator=(const CheckpointManager&) = delete;

  // Snapshots `parts` to host memory on the caller's thread (a copy: the
  // caller may change its tensors right after), returns, and writes in the
  // background. Waits first for the previous save; if that one failed, its
  // error is returned and this save is not started.
  absl::Status SaveAsync(const CheckpointState& state,
                         const std::map<std::string, TensorMap>& parts);
  // SaveAsync + Wait.
  absl::Status Save(const CheckpointState& state, const std::map<std::string, TensorMap>& parts);
  // Blocks until the save in flight is on disk; returns its status.
  absl::Status Wait();

  static std::string StepDirName(int64_t step);  // "step_00001200"
  static std::string CheckpointsDir(const std::string& run_dir);

  // The newest complete checkpoint directory under run_dir/checkpoints:
  // state.json parses and every listed part is present with a valid header.
  // Incomplete or corrupt ones are skipped with a warning. NOT_FOUND if none.
  static absl::StatusOr<std::string> LatestComplete(const std::string& run_dir);

  // Loads state.json and the given parts (all listed parts if empty).
  // NOT_FOUND / DATA_LOSS naming the directory and part.
  static absl::StatusOr<LoadedCheckpoint> Load(const std::string& checkpoint_dir,
                                               const std::vector<std::string>& parts = {});
  static absl::StatusOr<CheckpointState> LoadState(const std::string& checkpoint_dir);

  // What a restart resumes from: the newest complete checkpoint that loads
  // (every part readable and matching the CRC-32 state.json recorded). A
  // corrupt one is logged and skipped for the previous one, within this
  // call, so a restart never tries it again and again. NOT_FOUND when there
  // is no complete checkpoint; DATA_LOSS naming each one tried when
  // complete ones exist but none loads.
  static absl::StatusOr<LoadedCheckpoint> LoadNewestGood(const std::string& run_dir);

 private:
  absl::Status WriteAndCommit(const CheckpointState& state,
                              const std::map<std::string, TensorMap>& parts);
  CheckpointOptions options_;
  // Test-only (KP_TEST_CHECKPOINT_WRITE_DELAY_MS / _STEP, read once here):
  // a save sleeps this long with its staging directory in place, before the
  // commit, so a test can kill the process mid-write. <= 0: off.
  int64_t test_delay_ms_ = 0;
  int64_t test_delay_step_ = -1;  // only the save of this step; -1: every save
  std::mutex mu_;
  std::thread worker_;
  absl::Status pending_status_;
};

}  // namespace kp::ckpt

#endif  // KP_RUNTIME_ENGINE_CHECKPOINT_CHECKPOINT_MANAGER_H_
