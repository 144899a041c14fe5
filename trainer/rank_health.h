// Which rank of a group was lost, when a collective fails.
//
// A failing collective sees only its own symptom: a closed connection or a
// silent peer (Gloo), or an operation that never finishes (NCCL). The peer it
// was waiting on may itself be a victim that gave up, so the symptom alone
// can name the wrong rank. RankHealth settles it through the store: every
// rank bumps a heartbeat key while it lives, and a rank that fails records
// whom it suspects. A lost rank is one whose heartbeat stopped without a
// failure report of its own (a rank that never joined has no heartbeat).
#ifndef MODAMBA_TRAINER_RANK_HEALTH_H_
#define MODAMBA_TRAINER_RANK_HEALTH_H_

#include <string>
#include <thread>

#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "rendezvous/kv_store.h"

namespace modamba {

class RankHealth {
 public:
  // Starts a thread that sets "<prefix>/alive/<rank>" every `interval`.
  // `store` must outlive this object.
  RankHealth(KvStore* store, std::string prefix, int rank, int world_size, absl::Duration interval);
  // Stops the heartbeat.
  ~RankHealth();

  // Records that this rank failed, suspecting rank `suspect` (-1: no idea).
  void ReportFailure(int suspect);

  // The rank most likely lost, or -1 when none can be named. Starts from
  // `suspect`, follows failure reports from victim to victim, and confirms
  // with the heartbeats, which takes a few heartbeat intervals. When the store
  // itself is unreachable, returns `suspect`.
  int FindLost(int suspect);

  // A heartbeat interval fitting an operation timeout: a tenth of it,
  // within [50 ms, 2 s].
  static absl::Duration IntervalFor(absl::Duration timeout);

 private:
  std::string AliveKey(int rank) const;
  std::string FailedKey(int rank) const;

  KvStore* const store_;
  const std::string prefix_;
  const int rank_;
  const int world_size_;
  const absl::Duration interval_;
  absl::Notification stop_;
  std::thread thread_;
};

}  // namespace modamba

#endif  // MODAMBA_TRAINER_RANK_HEALTH_H_
