// Early-return helpers for absl::Status / absl::StatusOr.
#ifndef MODAMBA_CORE_STATUS_MACROS_H_
#define MODAMBA_CORE_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define MODAMBA_CONCAT_INNER(a, b) a##b
#define MODAMBA_CONCAT(a, b) MODAMBA_CONCAT_INNER(a, b)

#define RETURN_IF_ERROR(expr)                    \
  do {                                           \
    ::absl::Status _st = (expr);                 \
    if (!_st.ok()) return _st;                   \
  } while (0)

#define ASSIGN_OR_RETURN(lhs, expr) \
  ASSIGN_OR_RETURN_IMPL(MODAMBA_CONCAT(_statusor_, __LINE__), lhs, expr)

#define ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                          \
  if (!tmp.ok()) return tmp.status();         \
  lhs = std::move(tmp).value()

#endif  // MODAMBA_CORE_STATUS_MACROS_H_
