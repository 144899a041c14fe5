// Rendezvous key-value stores: how the ranks of one training group find each
// other (the NCCL unique id, Gloo's addresses, heartbeats, failure reports).
//
// KvStore is the whole interface; FileStore (a directory every rank can see)
// and TcpStore (a client of a TcpStoreServer run by the launcher, by rank 0 or
// by any standalone process) implement it, and the coordinator adds its own.
// All implementations are thread-safe, and values are arbitrary bytes.
#ifndef MODAMBA_TRAINER_KV_STORE_H_
#define MODAMBA_TRAINER_KV_STORE_H_

#include <cstdint>
#include <memory>
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

// A store in a directory shared by all ranks (a local or network file
// system): one file per key, written to a temporary name and renamed into
// place, so readers see a whole value or none; Add serialises writers with
// flock on a lock file. Get polls.
class FileStore : public KvStore {
 public:
  // Creates `dir` if needed.
  static absl::StatusOr<std::unique_ptr<FileStore>> Open(const std::string& dir);

  absl::Status Set(absl::string_view key, absl::string_view value) override;
  absl::StatusOr<std::string> Get(absl::string_view key, absl::Duration timeout) override;
  absl::StatusOr<int64_t> Add(absl::string_view key, int64_t delta) override;
  absl::StatusOr<bool> Check(absl::Span<const std::string> keys) override;

  const std::string& dir() const { return dir_; }

 private:
  explicit FileStore(std::string dir) : dir_(std::move(dir)) {}
  absl::StatusOr<std::string> PathOf(absl::string_view key) const;
  absl::Status WriteValue(const std::string& path, absl::string_view value);

  const std::string dir_;
};

// The server of TcpStore: keeps the map in memory and answers requests of
// length-prefixed frames, one thread per connection (a training group opens a
// few connections per rank). Blocking Gets wait on the server. There is no
// authentication: serve on loopback or a trusted network only.
class TcpStoreServer {
 public:
  // Listens on `host`:`port`; port 0 picks a free port (see port()). Use
  // "127.0.0.1" for one machine and "0.0.0.0" to serve other hosts.
  static absl::StatusOr<std::unique_ptr<TcpStoreServer>> Start(const std::string& host, int port);
  // Stops serving: pending Gets fail, connections close.
  ~TcpStoreServer();

  int port() const { return port_; }

  class Impl;

 private:
  TcpStoreServer(std::unique_ptr<Impl> impl, int port);
  std::unique_ptr<Impl> impl_;
  const int port_;
};

// A client of TcpStoreServer. Each call uses a pooled connection of its own,
// so a blocking Get in one thread does not hold up another thread's Set.
// Requests fail with UNAVAILABLE when the server goes away.
class TcpStore : public KvStore {
 public:
  // Connects to `host`:`port`, retrying until `connect_timeout` since the
  // server may start after its clients.
  static absl::StatusOr<std::unique_ptr<TcpStore>> Connect(
      const std::string& host, int port, absl::Duration connect_timeout = absl::Seconds(30));
  ~TcpStore() override;

  absl::Status Set(absl::string_view key, absl::string_view value) override;
  absl::StatusOr<std::string> Get(absl::string_view key, absl::Duration timeout) override;
  absl::StatusOr<int64_t> Add(absl::string_view key, int64_t delta) override;
  absl::StatusOr<bool> Check(absl::Span<const std::string> keys) override;

  class Impl;

 private:
  explicit TcpStore(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Opens a store from its address, as passed in MODAMBA_STORE:
// "tcp://HOST:PORT" connects a TcpStore; "file://DIR" or a plain path opens
// a FileStore.
absl::StatusOr<std::unique_ptr<KvStore>> OpenKvStore(
    absl::string_view address, absl::Duration connect_timeout = absl::Seconds(30));

// Splits "tcp://HOST:PORT" (also "tcp://[v6addr]:PORT").
absl::Status ParseTcpAddress(absl::string_view address, std::string* host, int* port);

}  // namespace modamba

#endif  // MODAMBA_TRAINER_KV_STORE_H_
