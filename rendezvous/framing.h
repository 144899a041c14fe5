// Length-prefixed frames over blocking sockets, for the TCP store: a frame is
// a u32 little-endian length and that many bytes; integers inside are
// little-endian, strings a u32 length and their bytes.
#ifndef MODAMBA_RENDEZVOUS_FRAMING_H_
#define MODAMBA_RENDEZVOUS_FRAMING_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace modamba::framing {

absl::Status WriteAll(int fd, absl::string_view bytes);
// Reads exactly `n` bytes, waiting until `deadline` (InfiniteFuture: forever).
absl::Status ReadFull(int fd, char* out, size_t n, absl::Time deadline);

void PutU32(std::string* out, uint32_t v);
void PutI64(std::string* out, int64_t v);
void PutStr(std::string* out, absl::string_view s);

// A cursor over a received frame; every read checks the bounds.
class FrameReader {
 public:
  explicit FrameReader(absl::string_view data) : data_(data) {}
  bool U8(uint8_t* v);
  bool U32(uint32_t* v);
  bool I64(int64_t* v);
  bool Str(std::string* s);
  bool done() const { return data_.empty(); }

 private:
  absl::string_view data_;
};

absl::Status WriteFrame(int fd, absl::string_view body);
// INVALID_ARGUMENT for a frame longer than `max_bytes`.
absl::StatusOr<std::string> ReadFrame(int fd, absl::Time deadline, uint32_t max_bytes);

void SetNoDelay(int fd);
absl::StatusOr<int> ConnectOnce(const std::string& host, int port);
// Retries refused connections until `deadline`: the server may not be up yet.
absl::StatusOr<int> ConnectUntil(const std::string& host, int port, absl::Time deadline);

}  // namespace modamba::framing

#endif  // MODAMBA_RENDEZVOUS_FRAMING_H_
