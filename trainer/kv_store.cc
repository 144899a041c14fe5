#include "trainer/kv_store.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <list>
#include <map>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "core/file_util.h"
#include "core/status_macros.h"

namespace modamba {
namespace {

absl::Status ErrnoError(absl::string_view what) {
  return absl::UnavailableError(absl::StrCat(what, ": ", strerror(errno)));
}

absl::StatusOr<int64_t> ParseCounter(absl::string_view key, absl::string_view text) {
  int64_t value = 0;
  if (!absl::SimpleAtoi(text, &value)) {
    return absl::InvalidArgumentError(
        absl::StrCat("key '", key, "' holds '", text.substr(0, 32), "', not an integer counter"));
  }
  return value;
}

absl::Status CheckSizes(absl::string_view key, size_t value_bytes) {
  if (key.empty()) return absl::InvalidArgumentError("empty store key");
  if (key.size() > kMaxKvKeyBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("store key of ", key.size(), " bytes exceeds ", kMaxKvKeyBytes));
  }
  if (value_bytes > kMaxKvValueBytes) {
    return absl::InvalidArgumentError(absl::StrCat("value of key '", key, "' has ", value_bytes,
                                                   " bytes, more than ", kMaxKvValueBytes));
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------- FileStore

// Letters, digits, '-', '_' and inner '.' stay; everything else becomes %XX,
// so keys with '/' stay inside the directory and no key collides with the
// hidden temporary and lock files, which start with '.'.
std::string EscapeKey(absl::string_view key) {
  std::string out;
  for (size_t i = 0; i < key.size(); ++i) {
    const unsigned char c = key[i];
    const bool plain = isalnum(c) || c == '-' || c == '_' || (c == '.' && i > 0);
    if (plain) {
      out.push_back(c);
    } else {
      absl::StrAppendFormat(&out, "%%%02X", c);
    }
  }
  return out;
}

class FileLock {
 public:
  static absl::StatusOr<FileLock> Acquire(const std::string& path) {
    const int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return ErrnoError(absl::StrCat("open ", path));
    while (flock(fd, LOCK_EX) != 0) {
      if (errno == EINTR) continue;
      const absl::Status status = ErrnoError(absl::StrCat("flock ", path));
      close(fd);
      return status;
    }
    return FileLock(fd);
  }
  FileLock(FileLock&& other) : fd_(std::exchange(other.fd_, -1)) {}
  FileLock& operator=(FileLock&&) = delete;
  ~FileLock() {
    if (fd_ >= 0) close(fd_);  // closing releases the lock
  }

 private:
  explicit FileLock(int fd) : fd_(fd) {}
  int fd_;
};

// ----------------------------------------------------------- socket helpers

absl::Status WriteAll(int fd, absl::string_view bytes) {
  while (!bytes.empty()) {
    const ssize_t n = send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoError("send");
    }
    bytes.remove_prefix(n);
  }
  return absl::OkStatus();
}

// Reads exactly `n` bytes, waiting until `deadline` (InfiniteFuture: forever).
absl::Status ReadFull(int fd, char* out, size_t n, absl::Time deadline) {
  while (n > 0) {
    if (deadline != absl::InfiniteFuture()) {
      const int64_t ms = absl::ToInt64Milliseconds(deadline - absl::Now());
      if (ms <= 0) return absl::DeadlineExceededError("no reply in time");
      pollfd p{fd, POLLIN, 0};
      const int r = poll(&p, 1, static_cast<int>(std::min<int64_t>(ms, 1 << 30)));
      if (r < 0 && errno != EINTR) return ErrnoError("poll");
      if (r <= 0) continue;
    }
    const ssize_t got = recv(fd, out, n, 0);
    if (got == 0) return absl::UnavailableError("connection closed");
    if (got < 0) {
      if (errno == EINTR) continue;
      return ErrnoError("recv");
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

// A cursor over a received frame; every read checks the bounds.
class Reader {
 public:
  explicit Reader(absl::string_view data) : data_(data) {}
  bool U8(uint8_t* v) {
    if (data_.empty()) return false;
    *v = static_cast<uint8_t>(data_[0]);
    data_.remove_prefix(1);
    return true;
  }
  bool U32(uint32_t* v) {
    if (data_.size() < 4) return false;
    *v = 0;
    for (int i = 0; i < 4; ++i) *v |= uint32_t{static_cast<uint8_t>(data_[i])} << (8 * i);
    data_.remove_prefix(4);
    return true;
  }
  bool I64(int64_t* v) {
    if (data_.size() < 8) return false;
    uint64_t u = 0;
    for (int i = 0; i < 8; ++i) u |= uint64_t{static_cast<uint8_t>(data_[i])} << (8 * i);
    *v = static_cast<int64_t>(u);
    data_.remove_prefix(8);
    return true;
  }
  bool Str(std::string* s) {
    uint32_t n = 0;
    if (!U32(&n) || data_.size() < n) return false;
    s->assign(data_.data(), n);
    data_.remove_prefix(n);
    return true;
  }
  bool done() const { return data_.empty(); }

 private:
  absl::string_view data_;
};

// A frame is a u32 little-endian length and that many bytes. The bound keeps
// a stray or hostile peer from making the server allocate without limit.
constexpr uint32_t kMaxFrameBytes = kMaxKvKeyBytes + kMaxKvValueBytes + 64;

absl::Status WriteFrame(int fd, absl::string_view body) {
  std::string frame;
  frame.reserve(body.size() + 4);
  PutU32(&frame, body.size());
  frame.append(body.data(), body.size());
  return WriteAll(fd, frame);
}

absl::StatusOr<std::string> ReadFrame(int fd, absl::Time deadline) {
  char header[4];
  RETURN_IF_ERROR(ReadFull(fd, header, 4, deadline));
  uint32_t n = 0;
  Reader(absl::string_view(header, 4)).U32(&n);
  if (n > kMaxFrameBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("frame of ", n, " bytes exceeds the limit of ", kMaxFrameBytes));
  }
  std::string body(n, '\0');
  RETURN_IF_ERROR(ReadFull(fd, body.data(), n, deadline));
  return body;
}

enum Op : uint8_t { kSet = 1, kGet = 2, kAdd = 3, kCheck = 4 };

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
      last = ErrnoError("socket");
      continue;
    }
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
      freeaddrinfo(res);
      SetNoDelay(fd);
      return fd;
    }
    last = ErrnoError(absl::StrCat("connect ", host, ":", port));
    close(fd);
  }
  freeaddrinfo(res);
  return last;
}

// Retries refused connections until `deadline`: the server may not be up yet.
absl::StatusOr<int> ConnectUntil(const std::string& host, int port, absl::Time deadline) {
  while (true) {
    absl::StatusOr<int> fd = ConnectOnce(host, port);
    if (fd.ok() || absl::IsInvalidArgument(fd.status()) || absl::Now() >= deadline) return fd;
    absl::SleepFor(absl::Milliseconds(50));
  }
}

}  // namespace

// ---------------------------------------------------------------- FileStore

absl::StatusOr<std::unique_ptr<FileStore>> FileStore::Open(const std::string& dir) {
  if (dir.empty()) return absl::InvalidArgumentError("file store: empty directory");
  RETURN_IF_ERROR(MakeDirs(dir));
  return std::unique_ptr<FileStore>(new FileStore(dir));
}

absl::StatusOr<std::string> FileStore::PathOf(absl::string_view key) const {
  RETURN_IF_ERROR(CheckSizes(key, 0));
  std::string name = EscapeKey(key);
  if (name.size() > 240) {  // file names are limited to 255 bytes
    return absl::InvalidArgumentError(
        absl::StrCat("file store: key '", key.substr(0, 64), "...' is too long for a file name"));
  }
  return absl::StrCat(dir_, "/", name);
}

absl::Status FileStore::WriteValue(const std::string& path, absl::string_view value) {
  // A name unique to this thread and call: threads of one process may write at once.
  static std::atomic<uint64_t> counter{0};
  const std::string tmp =
      absl::StrCat(dir_, "/.tmp.", getpid(), ".", syscall(SYS_gettid), ".", counter.fetch_add(1));
  const int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoError(absl::StrCat("file store: create ", tmp));
  absl::string_view rest = value;
  while (!rest.empty()) {
    const ssize_t n = write(fd, rest.data(), rest.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const absl::Status status = ErrnoError(absl::StrCat("file store: write ", tmp));
      close(fd);
      unlink(tmp.c_str());
      return status;
    }
    rest.remove_prefix(n);
  }
  close(fd);
  if (rename(tmp.c_str(), path.c_str()) != 0) {
    const absl::Status status = ErrnoError(absl::StrCat("file store: rename to ", path));
    unlink(tmp.c_str());
    return status;
  }
  return absl::OkStatus();
}

absl::Status FileStore::Set(absl::string_view key, absl::string_view value) {
  RETURN_IF_ERROR(CheckSizes(key, value.size()));
  ASSIGN_OR_RETURN(const std::string path, PathOf(key));
  return WriteValue(path, value);
}

absl::StatusOr<std::string> FileStore::Get(absl::string_view key, absl::Duration timeout) {
  ASSIGN_OR_RETURN(const std::string path, PathOf(key));
  const absl::Time deadline = absl::Now() + timeout;
  absl::Duration backoff = absl::Milliseconds(1);
  while (true) {
    if (FileExists(path)) return ReadFile(path);
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat(
          "file store ", dir_, ": key '", key, "' not set within ", absl::FormatDuration(timeout)));
    }
    absl::SleepFor(std::min(backoff, deadline - absl::Now()));
    backoff = std::min(backoff * 2, absl::Milliseconds(20));
  }
}

absl::StatusOr<int64_t> FileStore::Add(absl::string_view key, int64_t delta) {
  ASSIGN_OR_RETURN(const std::string path, PathOf(key));
  ASSIGN_OR_RETURN(FileLock lock, FileLock::Acquire(absl::StrCat(dir_, "/.lock")));
  int64_t value = 0;
  if (FileExists(path)) {
    ASSIGN_OR_RETURN(const std::string text, ReadFile(path));
    ASSIGN_OR_RETURN(value, ParseCounter(key, text));
  }
  value += delta;
  RETURN_IF_ERROR(WriteValue(path, std::to_string(value)));
  return value;
}

absl::StatusOr<bool> FileStore::Check(absl::Span<const std::string> keys) {
  for (const std::string& key : keys) {
    ASSIGN_OR_RETURN(const std::string path, PathOf(key));
    if (!FileExists(path)) return false;
  }
  return true;
}

// ----------------------------------------------------------- TcpStoreServer

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
      SetNoDelay(fd);
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
    return WriteFrame(fd, body).ok();
  }

  absl::Status Handle(const std::string& request, std::string* payload) {
    Reader in(request);
    uint8_t op = 0;
    std::string key;
    if (!in.U8(&op)) return absl::InvalidArgumentError("empty request");
    switch (op) {
      case kSet: {
        std::string value;
        if (!in.Str(&key) || !in.Str(&value) || !in.done()) break;
        RETURN_IF_ERROR(CheckSizes(key, value.size()));
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
          ASSIGN_OR_RETURN(value, ParseCounter(key, it->second));
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
    return ErrnoError("store server: socket");
  }
  const int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (bind(fd, res->ai_addr, res->ai_addrlen) != 0 || listen(fd, 1024) != 0) {
    const absl::Status status =
        ErrnoError(absl::StrCat("store server: listen on ", host, ":", port));
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
      absl::StatusOr<int> connected = ConnectUntil(host_, port_, absl::Now() + absl::Seconds(5));
      if (!connected.ok()) return Annotate(connected.status());
      fd = *connected;
    }
    absl::Status status = WriteFrame(fd, request);
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
    Reader in(*reply);
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
  absl::StatusOr<int> fd = ConnectUntil(host, port, absl::Now() + connect_timeout);
  if (!fd.ok()) return impl->Annotate(fd.status());
  impl->AddIdle(*fd);
  return std::unique_ptr<TcpStore>(new TcpStore(std::move(impl)));
}

TcpStore::TcpStore(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
TcpStore::~TcpStore() = default;

absl::Status TcpStore::Set(absl::string_view key, absl::string_view value) {
  RETURN_IF_ERROR(CheckSizes(key, value.size()));
  std::string request(1, kSet);
  PutStr(&request, key);
  PutStr(&request, value);
  return impl_->Call(request, absl::ZeroDuration()).status();
}

absl::StatusOr<std::string> TcpStore::Get(absl::string_view key, absl::Duration timeout) {
  RETURN_IF_ERROR(CheckSizes(key, 0));
  std::string request(1, kGet);
  PutStr(&request, key);
  PutI64(&request, std::max<int64_t>(0, absl::ToInt64Milliseconds(timeout)));
  return impl_->Call(request, timeout);
}

absl::StatusOr<int64_t> TcpStore::Add(absl::string_view key, int64_t delta) {
  RETURN_IF_ERROR(CheckSizes(key, 0));
  std::string request(1, kAdd);
  PutStr(&request, key);
  PutI64(&request, delta);
  ASSIGN_OR_RETURN(const std::string value, impl_->Call(request, absl::ZeroDuration()));
  return ParseCounter(key, value);
}

absl::StatusOr<bool> TcpStore::Check(absl::Span<const std::string> keys) {
  std::string request(1, kCheck);
  PutU32(&request, keys.size());
  for (const std::string& key : keys) {
    RETURN_IF_ERROR(CheckSizes(key, 0));
    PutStr(&request, key);
  }
  ASSIGN_OR_RETURN(const std::string reply, impl_->Call(request, absl::ZeroDuration()));
  return reply == "1";
}

// ------------------------------------------------------------------ address

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
