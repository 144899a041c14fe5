#include "rendezvous/tcp_store.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <list>
#include <map>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "core/status_macros.h"
#include "rendezvous/framing.h"

namespace modamba {
namespace {

using framing::FrameReader;
using framing::PutI64;
using framing::PutStr;
using framing::PutU32;

// The bound keeps a stray or hostile peer from making the server allocate
// without limit.
constexpr uint32_t kMaxFrameBytes = kMaxKvKeyBytes + kMaxKvValueBytes + 64;

enum Op : uint8_t { kSet = 1, kGet = 2, kAdd = 3, kCheck = 4 };


absl::StatusOr<std::string> ReadFrame(int fd, absl::Time deadline) {
  return framing::ReadFrame(fd, deadline, kMaxFrameBytes);
}

}  // namespace

class TcpStoreServer::Impl {
 public:
  explicit Impl(int listen_fd) : listen_fd_(listen_fd) {
    if (pipe2(wake_, O_CLOEXEC) != 0) wake_[0] = wake_[1] = -1;
    accept_thread_ = std::thread([this] { AcceptLoop(); });
  }

  ~Impl() {
    {
      absl::MutexLock lock(&mu_);
      stopping_ = true;
      for (Connection& c : connections_) shutdown(c.fd, SHUT_RDWR);
    }
    if (wake_[1] >= 0) (void)!write(wake_[1], "x", 1);
    accept_thread_.join();
    // Connection threads see their sockets shut down or stopping_ and return.
    for (Connection& c : connections_) c.thread.join();
    for (Connection& c : connections_) close(c.fd);
    close(listen_fd_);
    if (wake_[0] >= 0) close(wake_[0]);
    if (wake_[1] >= 0) close(wake_[1]);
  }

 private:
  struct Connection {
    int fd;
    std::thread thread;
    std::atomic<bool> done{false};
  };

  void AcceptLoop() {
    while (true) {
      pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {wake_[0], POLLIN, 0}};
      if (poll(fds, wake_[0] >= 0 ? 2 : 1, 1000) < 0 && errno != EINTR) return;
      absl::MutexLock lock(&mu_);
      if (stopping_) return;
      ReapFinished();
      if (!(fds[0].revents & POLLIN)) continue;
      const int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) continue;
      framing::SetNoDelay(fd);
      Connection& c = connections_.emplace_back();
      c.fd = fd;
      c.thread = std::thread([this, &c] {
        Serve(c.fd);
        shutdown(c.fd, SHUT_RDWR);  // the client sees the end now; the reaper closes
        c.done = true;
      });
    }
  }

  void ReapFinished() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    for (auto it = connections_.begin(); it != connections_.end();) {
      if (it->done) {
        it->thread.join();
        close(it->fd);
        it = connections_.erase(it);
      } else {
        ++it;
      }
    }
  }

  void Serve(int fd) {
    while (true) {
      absl::StatusOr<std::string> request = ReadFrame(fd, absl::InfiniteFuture());
      if (!request.ok()) {
        // An oversized frame gets an answer before the connection closes.
        if (absl::IsInvalidArgument(request.status())) Reply(fd, request.status(), "");
        return;
      }
      std::string payload;
      const absl::Status status = Handle(*request, &payload);
      if (!Reply(fd, status, payload)) return;
    }
  }

  static bool Reply(int fd, const absl::Status& status, const std::string& payload) {
    std::string body;
    body.push_back(static_cast<char>(status.code()));
    PutStr(&body, status.ok() ? payload : std::string(status.message()));
    return framing::WriteFrame(fd, body).ok();
  }

  absl::Status Handle(const std::string& request, std::string* payload) {
    FrameReader in(request);
    uint8_t op = 0;
    std::string key;
    if (!in.U8(&op)) return absl::InvalidArgumentError("empty request");
    switch (op) {
      case kSet: {
        std::string value;
        if (!in.Str(&key) || !in.Str(&value) || !in.done()) break;
        RETURN_IF_ERROR(CheckKvSizes(key, value.size()));
        absl::MutexLock lock(&mu_);
        map_[key] = std::move(value);
        return absl::OkStatus();
      }
      case kGet: {
        int64_t timeout_ms = 0;
        if (!in.Str(&key) || !in.I64(&timeout_ms) || !in.done()) break;
        const absl::Time deadline = absl::Now() + absl::Milliseconds(timeout_ms);
        absl::MutexLock lock(&mu_);
        auto ready = [&]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
          return stopping_ || map_.count(key) > 0;
        };
        mu_.AwaitWithDeadline(absl::Condition(&ready), deadline);
        if (stopping_) return absl::UnavailableError("store server stopped");
        auto it = map_.find(key);
        if (it == map_.end()) {
          return absl::DeadlineExceededError(
              absl::StrCat("key '", key, "' not set within ",
                           absl::FormatDuration(absl::Milliseconds(timeout_ms))));
        }
        *payload = it->second;
        return absl::OkStatus();
      }
      case kAdd: {
        int64_t delta = 0;
        if (!in.Str(&key) || !in.I64(&delta) || !in.done()) break;
        absl::MutexLock lock(&mu_);
        int64_t value = 0;
        auto it = map_.find(key);
        if (it != map_.end()) {
          ASSIGN_OR_RETURN(value, ParseKvCounter(key, it->second));
        }
        value += delta;
        map_[key] = std::to_string(value);
        *payload = map_[key];
        return absl::OkStatus();
      }
      case kCheck: {
        uint32_t n = 0;
        if (!in.U32(&n)) break;
        std::vector<std::string> keys(std::min<uint32_t>(n, kMaxFrameBytes / 4));
        if (keys.size() != n) break;
        bool parsed = true;
        for (std::string& k : keys) parsed = parsed && in.Str(&k);
        if (!parsed || !in.done()) break;
        absl::MutexLock lock(&mu_);
        bool all = true;
        for (const std::string& k : keys) all = all && map_.count(k) > 0;
        *payload = all ? "1" : "0";
        return absl::OkStatus();
      }
      default:
        return absl::InvalidArgumentError(absl::StrCat("unknown store op ", op));
    }
    return absl::InvalidArgumentError(absl::StrCat("malformed store request (op ", op, ")"));
  }

  const int listen_fd_;
  int wake_[2];
  std::thread accept_thread_;
  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::map<std::string, std::string> map_ ABSL_GUARDED_BY(mu_);
  std::list<Connection> connections_;  // changed by the accept thread only
};

absl::StatusOr<std::unique_ptr<TcpStoreServer>> TcpStoreServer::Start(const std::string& host,
                                                                      int port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* res = nullptr;
  const int rc = getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res);
  if (rc != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("store server: resolve ", host, ": ", gai_strerror(rc)));
  }
  const int fd = socket(res->ai_family, res->ai_socktype | SOCK_CLOEXEC, res->ai_protocol);
  if (fd < 0) {
    freeaddrinfo(res);
    return ErrnoUnavailable("store server: socket");
  }
  const int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (bind(fd, res->ai_addr, res->ai_addrlen) != 0 || listen(fd, 1024) != 0) {
    const absl::Status status =
        ErrnoUnavailable(absl::StrCat("store server: listen on ", host, ":", port));
    freeaddrinfo(res);
    close(fd);
    return status;
  }
  freeaddrinfo(res);
  sockaddr_storage addr{};
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  const int bound_port = addr.ss_family == AF_INET6
                             ? ntohs(reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port)
                             : ntohs(reinterpret_cast<sockaddr_in*>(&addr)->sin_port);
  return std::unique_ptr<TcpStoreServer>(
      new TcpStoreServer(std::make_unique<Impl>(fd), bound_port));
}

TcpStoreServer::TcpStoreServer(std::unique_ptr<Impl> impl, int port)
    : impl_(std::move(impl)), port_(port) {}

TcpStoreServer::~TcpStoreServer() = default;

// ----------------------------------------------------------------- TcpStore

class TcpStore::Impl {
 public:
  Impl(std::string host, int port) : host_(std::move(host)), port_(port) {}
  ~Impl() {
    for (int fd : idle_) close(fd);
  }

  std::string name() const { return absl::StrCat("store tcp://", host_, ":", port_); }

  // Adopts the connection Connect opened.
  void AddIdle(int fd) {
    absl::MutexLock lock(&mu_);
    idle_.push_back(fd);
  }

  // Sends one request and returns the reply's payload. `wait` is how long the
  // server may legitimately take (a blocking Get); a reply later than that
  // plus a margin means the server is gone or stuck.
  absl::StatusOr<std::string> Call(const std::string& request, absl::Duration wait) {
    int fd = -1;
    {
      absl::MutexLock lock(&mu_);
      if (!idle_.empty()) {
        fd = idle_.back();
        idle_.pop_back();
      }
    }
    if (fd < 0) {
      absl::StatusOr<int> connected = framing::ConnectUntil(host_, port_, absl::Now() + absl::Seconds(5));
      if (!connected.ok()) return Annotate(connected.status());
      fd = *connected;
    }
    absl::Status status = framing::WriteFrame(fd, request);
    absl::StatusOr<std::string> reply;
    if (status.ok()) {
      reply = ReadFrame(fd, absl::Now() + std::max(wait, absl::ZeroDuration()) + kReplyMargin);
      status = reply.status();
    }
    if (!status.ok()) {
      close(fd);
      // Whatever broke, the server did not answer: the store is unavailable.
      return absl::UnavailableError(absl::StrCat(name(), ": ", status.message()));
    }
    {
      absl::MutexLock lock(&mu_);
      idle_.push_back(fd);
    }
    FrameReader in(*reply);
    uint8_t code = 0;
    std::string payload;
    if (!in.U8(&code) || !in.Str(&payload)) {
      return absl::UnavailableError(absl::StrCat(name(), ": malformed reply"));
    }
    if (code != 0) return Annotate(absl::Status(static_cast<absl::StatusCode>(code), payload));
    return payload;
  }

  absl::Status Annotate(const absl::Status& status) const {
    return absl::Status(status.code(), absl::StrCat(name(), ": ", status.message()));
  }

 private:
  static constexpr absl::Duration kReplyMargin = absl::Seconds(30);
  const std::string host_;
  const int port_;
  absl::Mutex mu_;
  std::vector<int> idle_ ABSL_GUARDED_BY(mu_);
};

absl::StatusOr<std::unique_ptr<TcpStore>> TcpStore::Connect(const std::string& host, int port,
                                                            absl::Duration connect_timeout) {
  auto impl = std::make_unique<Impl>(host, port);
  absl::StatusOr<int> fd = framing::ConnectUntil(host, port, absl::Now() + connect_timeout);
  if (!fd.ok()) return impl->Annotate(fd.status());
  impl->AddIdle(*fd);
  return std::unique_ptr<TcpStore>(new TcpStore(std::move(impl)));
}

TcpStore::TcpStore(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
TcpStore::~TcpStore() = default;

absl::Status TcpStore::Set(absl::string_view key, absl::string_view value) {
  RETURN_IF_ERROR(CheckKvSizes(key, value.size()));
  std::string request(1, kSet);
  PutStr(&request, key);
  PutStr(&request, value);
  return impl_->Call(request, absl::ZeroDuration()).status();
}

absl::StatusOr<std::string> TcpStore::Get(absl::string_view key, absl::Duration timeout) {
  RETURN_IF_ERROR(CheckKvSizes(key, 0));
  std::string request(1, kGet);
  PutStr(&request, key);
  PutI64(&request, std::max<int64_t>(0, absl::ToInt64Milliseconds(timeout)));
  return impl_->Call(request, timeout);
}

absl::StatusOr<int64_t> TcpStore::Add(absl::string_view key, int64_t delta) {
  RETURN_IF_ERROR(CheckKvSizes(key, 0));
  std::string request(1, kAdd);
  PutStr(&request, key);
  PutI64(&request, delta);
  ASSIGN_OR_RETURN(const std::string value, impl_->Call(request, absl::ZeroDuration()));
  return ParseKvCounter(key, value);
}

absl::StatusOr<bool> TcpStore::Check(absl::Span<const std::string> keys) {
  std::string request(1, kCheck);
  PutU32(&request, keys.size());
  for (const std::string& key : keys) {
    RETURN_IF_ERROR(CheckKvSizes(key, 0));
    PutStr(&request, key);
  }
  ASSIGN_OR_RETURN(const std::string reply, impl_->Call(request, absl::ZeroDuration()));
  return reply == "1";
}

absl::Status ParseTcpAddress(absl::string_view address, std::string* host, int* port) {
  absl::string_view rest = address;
  if (!absl::ConsumePrefix(&rest, "tcp://")) {
    return absl::InvalidArgumentError(
        absl::StrCat("store address '", address, "' does not start with tcp://"));
  }
  size_t colon = rest.rfind(':');
  if (colon == absl::string_view::npos || colon == 0 ||
      !absl::SimpleAtoi(rest.substr(colon + 1), port) || *port <= 0 || *port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("store address '", address, "' is not tcp://HOST:PORT"));
  }
  absl::string_view h = rest.substr(0, colon);
  if (absl::ConsumePrefix(&h, "[") && !absl::ConsumeSuffix(&h, "]")) {
    return absl::InvalidArgumentError(
        absl::StrCat("store address '", address, "' has an unclosed '['"));
  }
  *host = std::string(h);
  return absl::OkStatus();
}

}  // namespace modamba
