// A snapshot image: the checkpoint's state and parts (the same tensors the
// disk checkpoint holds: model, optimizer, fp8...) as one safetensors byte
// image. Tensors are named "<part>/<tensor>"; "__metadata__" holds
// format = "kp-snapshot", the key (job_id, rank, step, generation,
// world_size) and "state", the JSON of CheckpointState (RNG base64). Any
// safetensors loader reads it; written to a file it is a valid .safetensors.
#ifndef KP_RUNTIME_SNAPSHOT_SNAPSHOT_CODEC_H_
#define KP_RUNTIME_SNAPSHOT_SNAPSHOT_CODEC_H_

#include <map>
#include <string>
#include <string_view>

#include "runtime/common/status.h"
#include "runtime/engine/checkpoint/checkpoint_manager.h"
#include "runtime/snapshot/snapshot_key.h"

namespace kp::snapshot {

using Parts = std::map<std::string, ckpt::TensorMap>;

absl::StatusOr<std::string> EncodeSnapshot(const Key& key, const ckpt::CheckpointState& state,
                                           const Parts& parts);

struct DecodedSnapshot {
  Key key;
  ckpt::LoadedCheckpoint checkpoint;  // dir = `name`
};

// DATA_LOSS naming `name` and the cause: not safetensors, not a kp snapshot,
// a bad state record, a listed part with no tensor.
absl::StatusOr<DecodedSnapshot> DecodeSnapshot(std::string_view bytes, const std::string& name);

}  // namespace kp::snapshot

#endif  // KP_RUNTIME_SNAPSHOT_SNAPSHOT_CODEC_H_
