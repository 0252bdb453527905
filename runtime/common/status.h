// Recoverable errors are absl::Status / absl::StatusOr (bad input, a missing
// file, a peer that died); broken invariants are KP_CHECK, which aborts.
#ifndef KP_RUNTIME_COMMON_STATUS_H_
#define KP_RUNTIME_COMMON_STATUS_H_

#include <cstdio>
#include <cstdlib>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

// Returns the status from the enclosing function if it is not OK.
#define KP_RETURN_IF_ERROR(expr)            \
  do {                                      \
    ::absl::Status kp_status_ = (expr);     \
    if (!kp_status_.ok()) return kp_status_; \
  } while (0)

#define KP_STATUS_CONCAT_INNER_(a, b) a##b
#define KP_STATUS_CONCAT_(a, b) KP_STATUS_CONCAT_INNER_(a, b)

// KP_ASSIGN_OR_RETURN(auto x, MaybeX()): binds the value or returns the error.
#define KP_ASSIGN_OR_RETURN(lhs, expr) \
  KP_ASSIGN_OR_RETURN_IMPL_(KP_STATUS_CONCAT_(kp_statusor_, __LINE__), lhs, expr)
#define KP_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                              \
  if (!tmp.ok()) return tmp.status();             \
  lhs = std::move(tmp).value()

// An invariant of our own code, not a property of the input: aborts loudly.
#define KP_CHECK(cond)                                                              \
  do {                                                                              \
    if (!(cond)) {                                                                  \
      std::fprintf(stderr, "%s:%d: KP_CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                 \
    }                                                                               \
  } while (0)

#endif  // KP_RUNTIME_COMMON_STATUS_H_
