// Which snapshot, in plain C++ (the libtorch side cannot include the kp.v1
// protobuf headers: libtorch ships its own, older google/protobuf headers
// that shadow the system ones). Mirrors v1::SnapshotKey.
#ifndef KP_RUNTIME_SNAPSHOT_SNAPSHOT_KEY_H_
#define KP_RUNTIME_SNAPSHOT_SNAPSHOT_KEY_H_

#include <cstdint>
#include <string>

namespace kp::snapshot {

struct Key {
  std::string job_id;
  int rank = 0;
  int64_t step = 0;  // the state before this step (the checkpoint's next step)
  int64_t generation = 0;
  int world_size = 0;

  std::string ToString() const {
    return "job " + job_id + " rank " + std::to_string(rank) + " step " + std::to_string(step) + " (generation " +
           std::to_string(generation) + ", " + std::to_string(world_size) + " ranks)";
  }
  bool operator==(const Key&) const = default;
};

}  // namespace kp::snapshot

#endif  // KP_RUNTIME_SNAPSHOT_SNAPSHOT_KEY_H_
