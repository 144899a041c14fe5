// The row map of a SeqLayout (core/backend.h) for the CPU references.
#ifndef MODAMBA_CORE_OPS_ROWS_H_
#define MODAMBA_CORE_OPS_ROWS_H_

#include <cstdint>

namespace modamba::ops {

// The row holding sequence position n: rows[n], or n without a map.
inline int64_t RowOf(const int32_t* rows, int64_t n) { return rows != nullptr ? rows[n] : n; }

}  // namespace modamba::ops

#endif  // MODAMBA_CORE_OPS_ROWS_H_
