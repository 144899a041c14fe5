#include "rendezvous/framing.h"

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "absl/strings/str_cat.h"
#include "core/status_macros.h"
#include "rendezvous/kv_store.h"

namespace modamba::framing {

absl::Status WriteAll(int fd, absl::string_view bytes) {
  while (!bytes.empty()) {
    const ssize_t n = send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoUnavailable("send");
    }
    bytes.remove_prefix(n);
  }
  return absl::OkStatus();
}

absl::Status ReadFull(int fd, char* out, size_t n, absl::Time deadline) {
  while (n > 0) {
    if (deadline != absl::InfiniteFuture()) {
      const int64_t ms = absl::ToInt64Milliseconds(deadline - absl::Now());
      if (ms <= 0) return absl::DeadlineExceededError("no reply in time");
      pollfd p{fd, POLLIN, 0};
      const int r = poll(&p, 1, static_cast<int>(std::min<int64_t>(ms, 1 << 30)));
      if (r < 0 && errno != EINTR) return ErrnoUnavailable("poll");
      if (r <= 0) continue;
    }
    const ssize_t got = recv(fd, out, n, 0);
    if (got == 0) return absl::UnavailableError("connection closed");
    if (got < 0) {
      if (errno == EINTR) continue;
      return ErrnoUnavailable("recv");
    }
    out += got;
    n -= got;
  }
  return absl::OkStatus();
}

void PutU32(std::string* out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

void PutI64(std::string* out, int64_t v) {
  const uint64_t u = static_cast<uint64_t>(v);
  for (int i = 0; i < 8; ++i) out->push_back(static_cast<char>((u >> (8 * i)) & 0xff));
}

void PutStr(std::string* out, absl::string_view s) {
  PutU32(out, s.size());
  out->append(s.data(), s.size());
}

bool FrameReader::U8(uint8_t* v) {
  if (data_.empty()) return false;
  *v = static_cast<uint8_t>(data_[0]);
  data_.remove_prefix(1);
  return true;
}

bool FrameReader::U32(uint32_t* v) {
  if (data_.size() < 4) return false;
  *v = 0;
  for (int i = 0; i < 4; ++i) *v |= uint32_t{static_cast<uint8_t>(data_[i])} << (8 * i);
  data_.remove_prefix(4);
  return true;
}

bool FrameReader::I64(int64_t* v) {
  if (data_.size() < 8) return false;
  uint64_t u = 0;
  for (int i = 0; i < 8; ++i) u |= uint64_t{static_cast<uint8_t>(data_[i])} << (8 * i);
  *v = static_cast<int64_t>(u);
  data_.remove_prefix(8);
  return true;
}

bool FrameReader::Str(std::string* s) {
  uint32_t n = 0;
  if (!U32(&n) || data_.size() < n) return false;
  s->assign(data_.data(), n);
  data_.remove_prefix(n);
  return true;
}

absl::Status WriteFrame(int fd, absl::string_view body) {
  std::string frame;
  frame.reserve(body.size() + 4);
  PutU32(&frame, body.size());
  frame.append(body.data(), body.size());
  return WriteAll(fd, frame);
}

absl::StatusOr<std::string> ReadFrame(int fd, absl::Time deadline, uint32_t max_bytes) {
  char header[4];
  RETURN_IF_ERROR(ReadFull(fd, header, 4, deadline));
  uint32_t n = 0;
  FrameReader(absl::string_view(header, 4)).U32(&n);
  if (n > max_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("frame of ", n, " bytes exceeds the limit of ", max_bytes));
  }
  std::string body(n, '\0');
  RETURN_IF_ERROR(ReadFull(fd, body.data(), n, deadline));
  return body;
}

void SetNoDelay(int fd) {
  const int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

absl::StatusOr<int> ConnectOnce(const std::string& host, int port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  const int rc = getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res);
  if (rc != 0) {
    return absl::InvalidArgumentError(absl::StrCat("resolve ", host, ": ", gai_strerror(rc)));
  }
  absl::Status last = absl::UnavailableError(absl::StrCat("no address for ", host));
  for (addrinfo* ai = res; ai != nullptr; ai = ai->ai_next) {
    const int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) {
      last = ErrnoUnavailable("socket");
      continue;
    }
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
      freeaddrinfo(res);
      SetNoDelay(fd);
      return fd;
    }
    last = ErrnoUnavailable(absl::StrCat("connect ", host, ":", port));
    close(fd);
  }
  freeaddrinfo(res);
  return last;
}

absl::StatusOr<int> ConnectUntil(const std::string& host, int port, absl::Time deadline) {
  while (true) {
    absl::StatusOr<int> fd = ConnectOnce(host, port);
    if (fd.ok() || absl::IsInvalidArgument(fd.status()) || absl::Now() >= deadline) return fd;
    absl::SleepFor(absl::Milliseconds(50));
  }
}

}  // namespace modamba::framing
