#include "launcher/slurm/resolve.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <sys/socket.h>

#include "absl/strings/str_cat.h"

namespace kp::launcher {

absl::StatusOr<std::string> ResolveHost(const std::string& host) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* result = nullptr;
  int rc = ::getaddrinfo(host.c_str(), nullptr, &hints, &result);
  if (rc != 0) {
    return absl::NotFoundError(absl::StrCat("cannot resolve host '", host, "': ",
                                            ::gai_strerror(rc)));
  }
  std::string v4, v6;
  for (addrinfo* ai = result; ai != nullptr; ai = ai->ai_next) {
    char buf[INET6_ADDRSTRLEN] = {};
    if (ai->ai_family == AF_INET && v4.empty()) {
      auto* sa = reinterpret_cast<sockaddr_in*>(ai->ai_addr);
      if (::inet_ntop(AF_INET, &sa->sin_addr, buf, sizeof(buf)) != nullptr) v4 = buf;
    } else if (ai->ai_family == AF_INET6 && v6.empty()) {
      auto* sa = reinterpret_cast<sockaddr_in6*>(ai->ai_addr);
      if (::inet_ntop(AF_INET6, &sa->sin6_addr, buf, sizeof(buf)) != nullptr) v6 = buf;
    }
  }
  ::freeaddrinfo(result);
  if (!v4.empty()) return v4;
  if (!v6.empty()) return absl::StrCat("[", v6, "]");
  return absl::NotFoundError(absl::StrCat("host '", host, "' has no IPv4 or IPv6 address"));
}

}  // namespace kp::launcher
