#include "runtime/snapshot/checksum.h"

namespace kp::snapshot {

uint64_t Checksum(std::string_view bytes) {
  uint64_t h = 14695981039346656037ull;
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

}  // namespace kp::snapshot
