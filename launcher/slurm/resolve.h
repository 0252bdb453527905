// Host name -> IP address, as a seam: emulated Slurm nodes (NodeAddr=
// 127.0.0.1, names like n1 that no DNS knows) and tests need to replace it.
#ifndef KP_LAUNCHER_SLURM_RESOLVE_H_
#define KP_LAUNCHER_SLURM_RESOLVE_H_

#include <functional>
#include <string>

#include "runtime/common/status.h"

namespace kp::launcher {

using Resolver = std::function<absl::StatusOr<std::string>(const std::string& host)>;

// getaddrinfo, IPv4 preferred (gRPC's "ipv4:" targets and most cluster
// fabrics); an IPv6 literal when the host has only that. Errors name the host
// and gai_strerror's reason.
absl::StatusOr<std::string> ResolveHost(const std::string& host);

}  // namespace kp::launcher

#endif  // KP_LAUNCHER_SLURM_RESOLVE_H_
