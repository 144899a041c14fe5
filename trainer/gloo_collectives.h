// Collectives over host memory and TCP, through Gloo's transport.
//
// Ranks connect in a full mesh of gloo::transport::tcp pairs, meeting through
// the KvStore (adapted to gloo::rendezvous::Store). The algorithms are rings
// written on Gloo's unbound buffers, so every wait knows which peer it waits
// on: reduce-scatter and all-gather are one ring pass each, all-reduce is the
// two in turn, broadcast is sent by the root to each rank, and the barrier is
// a dissemination barrier. Operations run in call order on one worker thread.
// Sums are F32 or F64; all-gather and broadcast move any dtype.
//
// When a peer dies its connections close at once and the ranks waiting on it
// fail; a peer that hangs is declared lost after the timeout. RankHealth
// (trainer/rank_health.h) then names the lost rank, so every rank reports the
// same one. The process ignores SIGPIPE from then on, so that writing to a
// dead peer is an error rather than the end of the process.
#ifndef MODAMBA_TRAINER_GLOO_COLLECTIVES_H_
#define MODAMBA_TRAINER_GLOO_COLLECTIVES_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "rendezvous/kv_store.h"
#include "trainer/collectives.h"

namespace modamba {

struct GlooOptions {
  CollectivesOptions group;
  // The address this rank's peers reach it at: loopback for one machine, this
  // host's name or IP address on the shared network for several.
  std::string hostname = "127.0.0.1";
};

// Connects rank `options.group.rank` to its peers, waiting up to the timeout
// for all of them. `store` must outlive the communicator, which sends it
// heartbeats and failure reports.
absl::StatusOr<std::unique_ptr<Collectives>> NewGlooCollectives(KvStore* store,
                                                                const GlooOptions& options);

}  // namespace modamba

#endif  // MODAMBA_TRAINER_GLOO_COLLECTIVES_H_
