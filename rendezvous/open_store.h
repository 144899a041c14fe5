// A store named by its address, whichever kind it is.
#ifndef MODAMBA_RENDEZVOUS_OPEN_STORE_H_
#define MODAMBA_RENDEZVOUS_OPEN_STORE_H_

#include <memory>

#include "rendezvous/kv_store.h"

namespace modamba {

// Opens a store from its address, as passed in MODAMBA_STORE:
// "tcp://HOST:PORT" connects a TcpStore; "file://DIR" or a plain path opens
// a FileStore.
absl::StatusOr<std::unique_ptr<KvStore>> OpenKvStore(
    absl::string_view address, absl::Duration connect_timeout = absl::Seconds(30));

}  // namespace modamba

#endif  // MODAMBA_RENDEZVOUS_OPEN_STORE_H_
