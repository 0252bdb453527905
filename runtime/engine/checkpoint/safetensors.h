// The safetensors format (huggingface/safetensors): an 8-byte little-endian
// header length N, N bytes of JSON {"name": {"dtype", "shape",
// "data_offsets": [begin, end]}, "__metadata__": {string: string}}, then the
// raw little-endian tensor bytes, offsets relative to the end of the header.
// Dtypes: F64 F32 F16 BF16 I64 I32 U8 F8_E4M3 F8_E5M2 (BOOL, I8, I16 read too).
#ifndef KP_RUNTIME_ENGINE_CHECKPOINT_SAFETENSORS_H_
#define KP_RUNTIME_ENGINE_CHECKPOINT_SAFETENSORS_H_

#include <map>
#include <string>
#include <string_view>

#include <ATen/core/Tensor.h>

#include "runtime/common/status.h"

namespace kp::ckpt {

// Ordered by name so files are byte-for-byte reproducible.
using TensorMap = std::map<std::string, at::Tensor>;
using Metadata = std::map<std::string, std::string>;

struct SafetensorsContents {
  TensorMap tensors;  // CPU, contiguous
  Metadata metadata;
};

// Writes atomically (temporary file, fsync, rename). Tensors may live on any
// device and be non-contiguous (copied to CPU as needed). INVALID_ARGUMENT
// naming the tensor for an unsupported dtype or an empty / "__metadata__" name.
absl::Status WriteSafetensors(const std::string& path, const TensorMap& tensors,
                              const Metadata& metadata = {});

// Reads and validates the whole file. NOT_FOUND if missing; DATA_LOSS naming
// the file and the cause for a truncated file, an insane header length,
// malformed JSON, an unknown dtype, a size that is not dtype x shape, offsets
// out of range, overlapping or leaving gaps.
absl::StatusOr<SafetensorsContents> ReadSafetensors(const std::string& path);

// Validates the header against the file size without reading tensor data
// (cheap check that a checkpoint part is complete).
absl::Status CheckSafetensorsHeader(const std::string& path);

// The "__metadata__" map of a valid file, without reading tensor data.
absl::StatusOr<Metadata> ReadSafetensorsMetadata(const std::string& path);

// The same format in memory: the bytes WriteSafetensors would write (so a
// file holding them is read by ReadSafetensors and any safetensors loader),
// and their validated parse (`name` names the image in errors). In-memory
// snapshots (runtime/snapshot/) travel as such images.
absl::StatusOr<std::string> EncodeSafetensors(const TensorMap& tensors, const Metadata& metadata = {});
absl::StatusOr<SafetensorsContents> DecodeSafetensors(std::string_view bytes, const std::string& name);

}  // namespace kp::ckpt

#endif  // KP_RUNTIME_ENGINE_CHECKPOINT_SAFETENSORS_H_
