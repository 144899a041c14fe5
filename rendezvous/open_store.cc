#include "rendezvous/open_store.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "core/status_macros.h"
#include "rendezvous/file_store.h"
#include "rendezvous/tcp_store.h"

namespace modamba {

absl::StatusOr<std::unique_ptr<KvStore>> OpenKvStore(absl::string_view address,
                                                     absl::Duration connect_timeout) {
  if (absl::StartsWith(address, "tcp://")) {
    std::string host;
    int port = 0;
    RETURN_IF_ERROR(ParseTcpAddress(address, &host, &port));
    ASSIGN_OR_RETURN(std::unique_ptr<TcpStore> store,
                     TcpStore::Connect(host, port, connect_timeout));
    return std::unique_ptr<KvStore>(std::move(store));
  }
  absl::string_view dir = address;
  absl::ConsumePrefix(&dir, "file://");
  if (dir.empty() || absl::StrContains(dir, "://")) {
    return absl::InvalidArgumentError(
        absl::StrCat("store address '", address, "' is neither tcp://HOST:PORT nor a directory"));
  }
  ASSIGN_OR_RETURN(std::unique_ptr<FileStore> store, FileStore::Open(std::string(dir)));
  return std::unique_ptr<KvStore>(std::move(store));
}

}  // namespace modamba
