// Limits on what workers may report in one call, shared by the coordinator
// (which refuses more) and the workers (which send no more).
#ifndef MODAMBA_COORDINATOR_LIMITS_H_
#define MODAMBA_COORDINATOR_LIMITS_H_

#include <cstddef>

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

}  // namespace modamba

#endif  // MODAMBA_COORDINATOR_LIMITS_H_
