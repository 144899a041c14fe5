// A KvStore served over TCP: TcpStoreServer keeps the map, TcpStore is its
// client. The wire format is rendezvous/framing.h's frames.
#ifndef MODAMBA_RENDEZVOUS_TCP_STORE_H_
#define MODAMBA_RENDEZVOUS_TCP_STORE_H_

#include <memory>
#include <string>

#include "rendezvous/kv_store.h"

namespace modamba {

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

// Splits "tcp://HOST:PORT" (also "tcp://[v6addr]:PORT").
absl::Status ParseTcpAddress(absl::string_view address, std::string* host, int* port);


}  // namespace modamba

#endif  // MODAMBA_RENDEZVOUS_TCP_STORE_H_
