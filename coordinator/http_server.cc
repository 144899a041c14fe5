#include "coordinator/http_server.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <atomic>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <list>
#include <nlohmann/json.hpp>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "coordinator/dashboard.h"
#include "glog/logging.h"
#include "google/protobuf/util/json_util.h"

namespace modamba {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

using Request = http::request<http::string_body>;
using Response = http::response<http::string_body>;

http::status HttpStatus(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kOk:
      return http::status::ok;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
      return http::status::bad_request;
    case absl::StatusCode::kUnauthenticated:
      return http::status::unauthorized;
    case absl::StatusCode::kPermissionDenied:
      return http::status::forbidden;
    case absl::StatusCode::kNotFound:
      return http::status::not_found;
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kAborted:
    case absl::StatusCode::kFailedPrecondition:
      return http::status::conflict;
    case absl::StatusCode::kResourceExhausted:
      return http::status::too_many_requests;
    case absl::StatusCode::kUnavailable:
      return http::status::service_unavailable;
    default:
      return http::status::internal_server_error;
  }
}

Response MakeResponse(const Request& request, http::status status, std::string content_type,
                      std::string body) {
  Response response(status, request.version());
  response.set(http::field::content_type, content_type);
  response.set(http::field::cache_control, "no-store");
  response.keep_alive(request.keep_alive());
  response.body() = std::move(body);
  response.prepare_payload();
  return response;
}

Response ErrorResponse(const Request& request, const absl::Status& status) {
  nlohmann::json error = {{"error",
                           {{"code", absl::StatusCodeToString(status.code())},
                            {"message", std::string(status.message())}}}};
  Response response =
      MakeResponse(request, HttpStatus(status.code()), "application/json",
                   error.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
  if (status.code() == absl::StatusCode::kUnauthenticated) {
    response.set(http::field::www_authenticate, "Bearer");
  }
  return response;
}

Response JsonResponse(const Request& request, const google::protobuf::Message& message) {
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = true;
  std::string json;
  auto status = google::protobuf::util::MessageToJsonString(message, &json, options);
  if (!status.ok()) return ErrorResponse(request, absl::InternalError(status.ToString()));
  return MakeResponse(request, http::status::ok, "application/json", json + "\n");
}

// The value of query parameter `name` ("" when absent), %-decoded.
std::string QueryParam(absl::string_view query, absl::string_view name) {
  for (absl::string_view pair : absl::StrSplit(query, '&')) {
    std::pair<absl::string_view, absl::string_view> kv =
        absl::StrSplit(pair, absl::MaxSplits('=', 1));
    if (kv.first != name) continue;
    std::string value;
    for (size_t i = 0; i < kv.second.size(); ++i) {
      const char c = kv.second[i];
      int byte = 0;
      if (c == '%' && i + 2 < kv.second.size() &&
          absl::SimpleHexAtoi(kv.second.substr(i + 1, 2), &byte)) {
        value.push_back(static_cast<char>(byte));
        i += 2;
      } else {
        value.push_back(c == '+' ? ' ' : c);
      }
    }
    return value;
  }
  return "";
}

int64_t IntParam(absl::string_view query, absl::string_view name, int64_t fallback) {
  int64_t value = 0;
  return absl::SimpleAtoi(QueryParam(query, name), &value) ? value : fallback;
}

}  // namespace

class HttpServer::Impl {
 public:
  Impl(const HttpOptions& options, JobManager* manager, const TokenAuth* auth)
      : options_(options), manager_(manager), auth_(auth), acceptor_(io_) {}

  absl::Status Listen() {
    boost::system::error_code ec;
    const auto address = asio::ip::make_address(options_.host, ec);
    if (ec) return absl::InvalidArgumentError(absl::StrCat("bad --http_host ", options_.host));
    const tcp::endpoint endpoint(address, static_cast<uint16_t>(options_.port));
    acceptor_.open(endpoint.protocol(), ec);
    if (!ec) acceptor_.set_option(asio::socket_base::reuse_address(true), ec);
    if (!ec) acceptor_.bind(endpoint, ec);
    if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
    if (ec) {
      return absl::UnavailableError(
          absl::StrCat("cannot listen on ", options_.host, ":", options_.port, ": ", ec.message()));
    }
    port_ = acceptor_.local_endpoint().port();
    accept_thread_ = std::thread([this] { AcceptLoop(); });
    return absl::OkStatus();
  }

  ~Impl() {
    stopping_ = true;
    if (accept_thread_.joinable()) accept_thread_.join();
    {
      // Wakes connections blocked in a read; their sockets are still open
      // (a connection closes its socket under mu_ before it is marked done).
      absl::MutexLock lock(&mu_);
      for (const auto& c : connections_) {
        if (!c->done) ::shutdown(c->fd, SHUT_RDWR);
      }
    }
    for (const auto& c : connections_) c->thread.join();
  }

  int port() const { return port_; }

 private:
  struct Connection {
    std::thread thread;
    int fd = -1;
    bool done = false;  // guarded by mu_
  };

  void AcceptLoop() {
    while (!stopping_) {
      // Polling keeps the loop responsive to shutdown without closing the
      // acceptor under a blocked accept().
      pollfd pfd = {acceptor_.native_handle(), POLLIN, 0};
      const bool ready = ::poll(&pfd, 1, 200) > 0;
      ReapFinished();
      if (!ready) continue;
      boost::system::error_code ec;
      auto socket = std::make_unique<tcp::socket>(io_);
      acceptor_.accept(*socket, ec);
      if (ec) continue;
      if (static_cast<int>(connections_.size()) >= options_.max_connections) {
        static constexpr char kBusy[] =
            "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        socket->write_some(asio::buffer(kBusy, sizeof(kBusy) - 1), ec);
        continue;
      }
      auto connection = std::make_unique<Connection>();
      Connection* c = connection.get();
      c->fd = socket->native_handle();
      c->thread = std::thread([this, c, s = std::move(socket)]() mutable {
        Serve(*s);
        absl::MutexLock lock(&mu_);
        s.reset();
        c->done = true;
      });
      connections_.push_back(std::move(connection));
    }
  }

  // Joins the threads of closed connections.
  void ReapFinished() {
    std::vector<std::unique_ptr<Connection>> finished;
    {
      absl::MutexLock lock(&mu_);
      for (auto it = connections_.begin(); it != connections_.end();) {
        if ((*it)->done) {
          finished.push_back(std::move(*it));
          it = connections_.erase(it);
        } else {
          ++it;
        }
      }
    }
    for (auto& c : finished) c->thread.join();
  }

  void Serve(tcp::socket& socket) {
    // Blocking reads and writes end after the timeout, so a slow or silent
    // client cannot hold a thread forever.
    timeval timeout = absl::ToTimeval(options_.io_timeout);
    setsockopt(socket.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
    setsockopt(socket.native_handle(), SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
    beast::flat_buffer buffer;
    boost::system::error_code ec;
    while (!stopping_) {
      http::request_parser<http::string_body> parser;
      parser.header_limit(static_cast<uint32_t>(options_.max_header_bytes));
      parser.body_limit(options_.max_body_bytes);
      http::read(socket, buffer, parser, ec);
      if (ec == http::error::body_limit || ec == http::error::header_limit) {
        Request request;
        request.version(11);
        request.keep_alive(false);
        Response response = ErrorResponse(
            request, absl::ResourceExhaustedError("request larger than the coordinator accepts"));
        response.result(http::status::payload_too_large);
        http::write(socket, response, ec);
        LingeringClose(socket);
        return;
      }
      if (ec) break;  // closed, timed out or malformed: drop the connection
      Response response = Handle(parser.get());
      http::write(socket, response, ec);
      if (ec || !response.keep_alive()) break;
    }
    socket.shutdown(tcp::socket::shutdown_both, ec);
  }

  // After refusing a request whose body is still arriving: closing at once
  // would reset the connection before the client reads the refusal, so the
  // rest is read and dropped first (bounded in bytes and time).
  void LingeringClose(tcp::socket& socket) {
    boost::system::error_code ec;
    socket.shutdown(tcp::socket::shutdown_send, ec);
    timeval timeout = absl::ToTimeval(absl::Seconds(1));
    setsockopt(socket.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
    char sink[64 << 10];
    const absl::Time give_up = absl::Now() + absl::Seconds(2);
    for (size_t drained = 0; drained < (16u << 20) && absl::Now() < give_up;) {
      const size_t n = socket.read_some(asio::buffer(sink), ec);
      if (ec) break;
      drained += n;
    }
  }

  Response Handle(const Request& request) {
    const absl::string_view target(request.target().data(), request.target().size());
    const size_t question = target.find('?');
    const absl::string_view path = target.substr(0, question);
    const absl::string_view query =
        question == absl::string_view::npos ? absl::string_view() : target.substr(question + 1);
    const bool get = request.method() == http::verb::get;
    const bool post = request.method() == http::verb::post;

    if (path == "/healthz") {
      const std::string degraded = manager_->Degraded();
      if (degraded.empty()) return MakeResponse(request, http::status::ok, "text/plain", "ok\n");
      return MakeResponse(request, http::status::service_unavailable, "text/plain",
                          "degraded: " + degraded + "\n");
    }
    auto header = request.find(http::field::authorization);
    absl::StatusOr<Caller> caller =
        header != request.end()
            ? auth_->IdentifyHeader(absl::string_view(header->value().data(), header->value().size()))
            : auth_->Identify(QueryParam(query, "token"));
    // Users only: a worker's token opens nothing here.
    if (!caller.ok() || caller->is_worker()) {
      return ErrorResponse(
          request, absl::UnauthenticatedError("missing or wrong bearer token (header "
                                              "\"Authorization: Bearer ...\" or ?token=...)"));
    }
    const std::string& user = caller->user;
    if (!get && !post) {
      return ErrorResponse(request, absl::InvalidArgumentError("only GET and POST are served"));
    }
    if (get && (path == "/" || path == "/index.html")) {
      return MakeResponse(request, http::status::ok, "text/html; charset=utf-8", kDashboardHtml);
    }
    if (path == "/api/jobs") {
      if (post) {
        auto job = manager_->Submit(request.body(), "http request", user);
        return job.ok() ? JsonResponse(request, *job) : ErrorResponse(request, job.status());
      }
      v1::ListJobsResponse response;
      for (v1::Job& job : manager_->ListJobs()) *response.add_jobs() = std::move(job);
      return JsonResponse(request, response);
    }
    if (path == "/api/workers" && get) {
      v1::ListWorkersResponse response;
      for (v1::WorkerInfo& w : manager_->Workers(QueryParam(query, "job"))) {
        *response.add_workers() = std::move(w);
      }
      return JsonResponse(request, response);
    }
    constexpr absl::string_view kJobs = "/api/jobs/";
    if (absl::StartsWith(path, kJobs)) {
      std::vector<std::string> parts = absl::StrSplit(path.substr(kJobs.size()), '/');
      const std::string& id = parts[0];
      if (parts.size() == 1 && get) {
        auto job = manager_->GetJob(id);
        return job.ok() ? JsonResponse(request, *job) : ErrorResponse(request, job.status());
      }
      if (parts.size() == 2 && parts[1] == "cancel" && post) {
        auto job = manager_->Cancel(id, user);
        return job.ok() ? JsonResponse(request, *job) : ErrorResponse(request, job.status());
      }
      if (parts.size() == 2 && parts[1] == "metrics" && get) {
        auto metrics = manager_->Metrics(id, IntParam(query, "after", 0),
                                         static_cast<int>(IntParam(query, "limit", 0)));
        if (!metrics.ok()) return ErrorResponse(request, metrics.status());
        // The WAVs are served one by one (below); the points name them.
        for (v1::MetricPoint& p : *metrics->mutable_points()) {
          for (auto& [name, wav] : *p.mutable_speech_wav()) wav.clear();
        }
        return JsonResponse(request, *metrics);
      }
      int64_t seq = 0;
      if (parts.size() == 4 && parts[1] == "speech" && get && absl::SimpleAtoi(parts[2], &seq) &&
          absl::EndsWith(parts[3], ".wav")) {
        auto metrics = manager_->Metrics(id, seq - 1, 1);
        if (!metrics.ok()) return ErrorResponse(request, metrics.status());
        const std::string name = parts[3].substr(0, parts[3].size() - 4);
        if (metrics->points_size() == 1 && metrics->points(0).seq() == seq) {
          auto wav = metrics->points(0).speech_wav().find(name);
          if (wav != metrics->points(0).speech_wav().end()) {
            return MakeResponse(request, http::status::ok, "audio/wav", wav->second);
          }
        }
        return ErrorResponse(request, absl::NotFoundError(absl::StrCat(
                                          "job ", id, " has no speech '", name, "' at seq ", seq)));
      }
      if (parts.size() == 2 && parts[1] == "checkpoints" && get) {
        auto checkpoints = manager_->Checkpoints(id);
        if (!checkpoints.ok()) return ErrorResponse(request, checkpoints.status());
        v1::ListCheckpointsResponse response;
        for (v1::CheckpointInfo& c : *checkpoints) *response.add_checkpoints() = std::move(c);
        return JsonResponse(request, response);
      }
    }
    return ErrorResponse(request, absl::NotFoundError(absl::StrCat(
                                      "no such resource: ", request.method_string().to_string(),
                                      " ", std::string(path.substr(0, 200)))));
  }

  const HttpOptions options_;
  JobManager* const manager_;
  const TokenAuth* const auth_;
  asio::io_context io_;
  tcp::acceptor acceptor_;
  int port_ = 0;
  std::atomic<bool> stopping_{false};
  std::thread accept_thread_;
  absl::Mutex mu_;
  // Touched by the accept thread (and the destructor once it has ended);
  // mu_ guards each connection's `done` and its socket's closing.
  std::list<std::unique_ptr<Connection>> connections_;
};

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(const HttpOptions& options,
                                                              JobManager* manager,
                                                              const TokenAuth* auth) {
  auto impl = std::make_unique<Impl>(options, manager, auth);
  absl::Status listening = impl->Listen();
  if (!listening.ok()) return listening;
  return std::unique_ptr<HttpServer>(new HttpServer(std::move(impl)));
}

HttpServer::HttpServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
HttpServer::~HttpServer() = default;
int HttpServer::port() const { return impl_->port(); }

}  // namespace modamba
