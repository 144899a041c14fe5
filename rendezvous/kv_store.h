// Rendezvous key-value stores: how the ranks of one training group find each
// other (the NCCL unique id, Gloo's addresses, heartbeats, failure reports).
//
// KvStore is the whole interface; FileStore (rendezvous/file_store.h, a
// directory every rank can see) and TcpStore (rendezvous/tcp_store.h, a client
// of a TcpStoreServer run by the launcher, by rank 0 or by any standalone
// process) implement it, and the coordinator adds its own. All implementations
// are thread-safe, and values are arbitrary bytes.
#ifndef MODAMBA_RENDEZVOUS_KV_STORE_H_
#define MODAMBA_RENDEZVOUS_KV_STORE_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "absl/types/span.h"

namespace modamba {

class KvStore {
 public:
  virtual ~KvStore() = default;

  // Stores `value` under `key`, replacing any earlier value.
  virtual absl::Status Set(absl::string_view key, absl::string_view value) = 0;

  // The value of `key`, waiting up to `timeout` for some process to set it.
  // Fails with DEADLINE_EXCEEDED, naming the key, when it stays unset.
  virtual absl::StatusOr<std::string> Get(absl::string_view key, absl::Duration timeout) = 0;

  // Atomically adds `delta` to the decimal integer stored at `key` (an unset
  // key counts as 0) and returns the new value, which Get then reads as text.
  virtual absl::StatusOr<int64_t> Add(absl::string_view key, int64_t delta) = 0;

  // Whether every key in `keys` is set now; never waits.
  virtual absl::StatusOr<bool> Check(absl::Span<const std::string> keys) = 0;
};

// Keys and values larger than these are refused (the TCP server also refuses
// any request frame larger than a key plus a value plus framing).
inline constexpr size_t kMaxKvKeyBytes = 4096;
inline constexpr size_t kMaxKvValueBytes = 16 << 20;

// For implementations: INVALID_ARGUMENT for an empty or oversized key or an
// oversized value, naming the key.
absl::Status CheckKvSizes(absl::string_view key, size_t value_bytes);
// The counter Add keeps at `key`: INVALID_ARGUMENT when `text` is no integer.
absl::StatusOr<int64_t> ParseKvCounter(absl::string_view key, absl::string_view text);
// UNAVAILABLE "WHAT: <strerror(errno)>": a store the caller cannot reach now.
absl::Status ErrnoUnavailable(absl::string_view what);

}  // namespace modamba

#endif  // MODAMBA_RENDEZVOUS_KV_STORE_H_
