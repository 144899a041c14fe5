// Limits on what workers may report in one call and on the checkpoints they
// upload, shared by the coordinator (which refuses more) and the workers
// (which send no more).
#ifndef MODAMBA_WORKER_LIMITS_H_
#define MODAMBA_WORKER_LIMITS_H_

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace modamba {

inline constexpr int kMaxPointsPerReport = 1000;
inline constexpr int kMaxMetricEntries = 64;
inline constexpr int kMaxMetricNameBytes = 64;
// An eval point's grid of generated digits (a PNG of 10 rows of small images).
inline constexpr size_t kMaxImageGridBytes = 256 << 10;
// An eval point's generated speech: all its WAVs together.
inline constexpr size_t kMaxSpeechWavBytes = 1 << 20;
// Notes of one point, and of one job, and the length of each.
inline constexpr int kMaxNotes = 8;
inline constexpr size_t kMaxNoteBytes = 1024;

// Bounds on what one checkpoint may hold.
inline constexpr int64_t kMaxCheckpointFileBytes = int64_t{64} << 30;
inline constexpr int kMaxCheckpointFiles = 4096;

// A relative path: 1..8 components of [A-Za-z0-9._-] (no "." or ".."), at
// most 256 characters. INVALID_ARGUMENT otherwise.
absl::Status CheckCheckpointPath(absl::string_view path);

}  // namespace modamba

#endif  // MODAMBA_WORKER_LIMITS_H_
