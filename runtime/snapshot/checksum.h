// The snapshot image's checksum: FNV-1a 64 over every byte. It catches a
// truncated or corrupted transfer or store (not tampering: the channel is
// authenticated by the bearer token, and TLS where configured).
#ifndef KP_RUNTIME_SNAPSHOT_CHECKSUM_H_
#define KP_RUNTIME_SNAPSHOT_CHECKSUM_H_

#include <cstdint>
#include <string_view>

namespace kp::snapshot {

uint64_t Checksum(std::string_view bytes);

}  // namespace kp::snapshot

#endif  // KP_RUNTIME_SNAPSHOT_CHECKSUM_H_
