// Requests without the token, malformed job specs, fuzzed input to SubmitJob
// and the HTTP API, oversized requests, and gRPC over TLS.
#include <unistd.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <cstdlib>
#include <future>
#include <string>
#include <vector>

#include "absl/random/random.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "core/file_util.h"
#include "grpcpp/generic/generic_stub.h"
#include "gtest/gtest.h"
#include "tests/cluster.h"

namespace modamba {
namespace {

class SecurityTest : public ClusterTest {
 protected:
  void SetUp() override {
    ClusterTest::SetUp();
    if (!HasFatalFailure()) dataset_ = cluster_->MakeDataset("ds", "step_ms=10\n");
  }

  // The coordinator still serves and has stored no job.
  void ExpectAliveAndEmpty() {
    EXPECT_EQ(waitpid(cluster_->coordinator_pid(), nullptr, WNOHANG), 0) << "the coordinator died";
    auto health = cluster_->Http("GET", "/healthz", false);
    ASSERT_TRUE(health.ok()) << health.status();
    EXPECT_EQ(health->status, 200);
    grpc::ClientContext context;
    cluster_->Prepare(&context);
    v1::ListJobsResponse jobs;
    ASSERT_TRUE(cluster_->jobs()->ListJobs(&context, v1::ListJobsRequest(), &jobs).ok());
    EXPECT_EQ(jobs.jobs_size(), 0);
  }

  grpc::Status SubmitRaw(const std::string& bytes) {
    grpc::ClientContext context;
    cluster_->Prepare(&context);
    v1::SubmitJobRequest request;
    request.set_spec_textproto(bytes);
    v1::Job job;
    return cluster_->jobs()->SubmitJob(&context, request, &job);
  }

  std::string dataset_;
};

TEST_F(SecurityTest, CallsWithoutTheTokenAreRefused) {
  auto channel = MakeChannel(cluster_->client_options());
  ASSERT_TRUE(channel.ok());
  auto jobs = v1::JobService::NewStub(*channel);
  auto workers = v1::WorkerService::NewStub(*channel);
  auto checkpoints = v1::CheckpointService::NewStub(*channel);
  // Absent, wrong, empty, without its "Bearer " scheme, another scheme.
  for (const std::string& token :
       std::vector<std::string>{"", "Bearer wrong", "Bearer ", cluster_->token(), "Basic abc"}) {
    auto prepare = [&](grpc::ClientContext* context) {
      if (!token.empty()) context->AddMetadata("authorization", token);
      context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    };
    {
      grpc::ClientContext context;
      prepare(&context);
      v1::ListJobsResponse response;
      EXPECT_EQ(jobs->ListJobs(&context, v1::ListJobsRequest(), &response).error_code(),
                grpc::StatusCode::UNAUTHENTICATED)
          << token;
    }
    {
      grpc::ClientContext context;
      prepare(&context);
      v1::SubmitJobRequest request;
      request.set_spec_textproto(Cluster::Spec("x", dataset_, 10, 1, 0, 5));
      v1::Job response;
      EXPECT_EQ(jobs->SubmitJob(&context, request, &response).error_code(),
                grpc::StatusCode::UNAUTHENTICATED);
    }
    {
      grpc::ClientContext context;
      prepare(&context);
      v1::RegisterResponse response;
      EXPECT_EQ(workers->Register(&context, v1::RegisterRequest(), &response).error_code(),
                grpc::StatusCode::UNAUTHENTICATED);
    }
    {
      grpc::ClientContext context;
      prepare(&context);
      v1::KvGetResponse response;
      EXPECT_EQ(workers->KvGet(&context, v1::KvGetRequest(), &response).error_code(),
                grpc::StatusCode::UNAUTHENTICATED);
    }
    {
      grpc::ClientContext context;
      prepare(&context);
      v1::UploadResponse response;
      auto writer = checkpoints->Upload(&context, &response);
      writer->WritesDone();
      EXPECT_EQ(writer->Finish().error_code(), grpc::StatusCode::UNAUTHENTICATED);
    }
    {
      grpc::ClientContext context;
      prepare(&context);
      auto reader = checkpoints->Download(&context, v1::DownloadRequest());
      v1::DownloadChunk chunk;
      EXPECT_FALSE(reader->Read(&chunk));
      EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::UNAUTHENTICATED);
    }
  }

  // HTTP: 401 everywhere but /healthz, with the header or the query token.
  for (const std::string path :
       {"/", "/api/jobs", "/api/jobs/job-1", "/api/workers", "/api/jobs/job-1/metrics",
        "/api/jobs/job-1/checkpoints", "/api/jobs?token=wrong", "/nonexistent"}) {
    auto answer = cluster_->Http("GET", path, /*with_token=*/false);
    ASSERT_TRUE(answer.ok()) << answer.status();
    EXPECT_EQ(answer->status, 401) << path;
  }
  auto post = cluster_->Http("POST", "/api/jobs", false, Cluster::Spec("x", dataset_, 10, 1, 0, 5));
  ASSERT_TRUE(post.ok());
  EXPECT_EQ(post->status, 401);
  auto health = cluster_->Http("GET", "/healthz", false);
  ASSERT_TRUE(health.ok());
  EXPECT_EQ(health->status, 200);
  auto page = cluster_->Http("GET", "/?token=" + cluster_->token(), false);
  ASSERT_TRUE(page.ok());
  EXPECT_EQ(page->status, 200);
  ExpectAliveAndEmpty();
}

TEST_F(SecurityTest, AWorkersTokenSpeaksOnlyForThatWorker) {
  auto first = cluster_->Submit(Cluster::Spec("a", dataset_, 100000, 2, 0, 100000));
  auto second = cluster_->Submit(Cluster::Spec("b", dataset_, 100000, 1, 0, 100000));
  ASSERT_TRUE(first.ok() && second.ok()) << first.status() << second.status();
  ASSERT_TRUE(cluster_->WaitJob(first->id(), [](const v1::Job& j) { return j.step() > 0; }).ok());
  auto heartbeat = [&](const std::string& job, int rank) {
    grpc::ClientContext context;
    cluster_->PrepareAsWorker(&context, first->id(), "trainer-0");
    v1::HeartbeatRequest request;
    request.mutable_worker()->set_job_id(job);
    request.mutable_worker()->set_role(v1::ROLE_TRAINER);
    request.mutable_worker()->set_rank(rank);
    v1::HeartbeatResponse response;
    return cluster_->workers()->Heartbeat(&context, request, &response).error_code();
  };
  EXPECT_EQ(heartbeat(first->id(), 0), grpc::StatusCode::OK);
  EXPECT_EQ(heartbeat(first->id(), 1), grpc::StatusCode::PERMISSION_DENIED);  // another rank
  EXPECT_EQ(heartbeat(second->id(), 0), grpc::StatusCode::PERMISSION_DENIED);  // another job
  {
    // Not a user: no job service.
    grpc::ClientContext context;
    cluster_->PrepareAsWorker(&context, first->id(), "trainer-0");
    v1::CancelJobRequest request;
    request.set_job_id(second->id());
    v1::Job job;
    EXPECT_EQ(cluster_->jobs()->CancelJob(&context, request, &job).error_code(),
              grpc::StatusCode::PERMISSION_DENIED);
  }
  {
    // Nor another job's checkpoints.
    grpc::ClientContext context;
    cluster_->PrepareAsWorker(&context, first->id(), "trainer-0");
    v1::ListCheckpointsRequest request;
    request.set_job_id(second->id());
    v1::ListCheckpointsResponse response;
    EXPECT_EQ(cluster_->checkpoints()->List(&context, request, &response).error_code(),
              grpc::StatusCode::PERMISSION_DENIED);
  }
  // And a user's token does not make a worker.
  grpc::ClientContext context;
  cluster_->Prepare(&context);
  v1::HeartbeatRequest request;
  *request.mutable_worker() = first->workers(0).ref();
  v1::HeartbeatResponse response;
  EXPECT_EQ(cluster_->workers()->Heartbeat(&context, request, &response).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  // On HTTP a worker's token opens nothing.
  const std::string token =
      ReadFile(cluster_->run_root() + "/" + first->id() + "/trainer-0/worker.token").value_or("");
  auto page = cluster_->Http("GET", "/api/jobs?token=" + std::string(absl::StripAsciiWhitespace(token)), false);
  ASSERT_TRUE(page.ok());
  EXPECT_EQ(page->status, 401);
}

class SharedCoordinatorTest : public ClusterTest {
 protected:
  ClusterOptions Options() override {
    ClusterOptions options;
    options.more_users = {{"bob", "bobs-token-0123456789"}};
    return options;
  }
};

TEST_F(SharedCoordinatorTest, UsersCancelOnlyTheirOwnJobs) {
  const std::string dataset = cluster_->MakeDataset("ds", "step_ms=10\n");
  auto mine = cluster_->Submit(Cluster::Spec("mine", dataset, 100000, 1, 0, 100000));
  ASSERT_TRUE(mine.ok()) << mine.status();
  auto cancel = [&](const std::string& token, const std::string& job_id) {
    grpc::ClientContext context;
    context.AddMetadata("authorization", "Bearer " + token);
    v1::CancelJobRequest request;
    request.set_job_id(job_id);
    v1::Job job;
    return cluster_->jobs()->CancelJob(&context, request, &job);
  };
  grpc::Status refused = cancel("bobs-token-0123456789", mine->id());
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_TRUE(absl::StrContains(refused.error_message(), "only they may cancel it"))
      << refused.error_message();
  auto http = cluster_->Http("POST", "/api/jobs/" + mine->id() + "/cancel?token=bobs-token-0123456789",
                             false);
  ASSERT_TRUE(http.ok());
  EXPECT_EQ(http->status, 403);
  EXPECT_EQ(cluster_->GetJob(mine->id())->state(), v1::JOB_RUNNING);
  EXPECT_TRUE(cancel(cluster_->token(), mine->id()).ok());
}

TEST_F(SecurityTest, InvalidSpecsAreRefusedNamingTheField) {
  const std::string good = Cluster::Spec("good", dataset_, 10, 2, 1, 5);
  ASSERT_EQ(symlink(cluster_->root().c_str(), (cluster_->data_root() + "/escape").c_str()), 0);
  ASSERT_TRUE(MakeDirs(cluster_->root() + "/outside").ok());
  struct Case {
    std::string spec;
    std::string field;
  };
  const std::vector<Case> cases = {
      {"bogus: 1\n" + good, "bogus"},
      {absl::StrReplaceAll(good, {{"world_size: 2", "world_size: 0"}}), "world_size"},
      {absl::StrReplaceAll(good, {{"world_size: 2", "world_size: -3"}}), "world_size"},
      {absl::StrReplaceAll(good, {{"world_size: 2\n", ""}}), "world_size"},
      {absl::StrReplaceAll(good, {{"world_size: 2", "world_size: 9"}}), "world_size"},
      {absl::StrReplaceAll(good, {{"n_evaluators: 1", "n_evaluators: -1"}}), "n_evaluators"},
      {absl::StrReplaceAll(good, {{"checkpoint_every_steps: 5", "checkpoint_every_steps: 0"}}),
       "checkpoint_every_steps"},
      {"keep_last_checkpoints: 0\n" + good, "keep_last_checkpoints"},
      {"max_restarts: -1\n" + good, "max_restarts"},
      {"device: \"tpu\"\n" + good, "device"},
      {absl::StrReplaceAll(good, {{"\"ds\"", "\"../outside\""}}), "dataset_dir"},
      {absl::StrReplaceAll(good, {{"\"ds\"", "\"/etc\""}}), "dataset_dir"},
      {absl::StrReplaceAll(good, {{"\"ds\"", "\"escape/outside\""}}), "dataset_dir"},
      {absl::StrReplaceAll(good, {{"\"ds\"", "\"missing\""}}), "dataset_dir"},
      {absl::StrReplaceAll(good, {{"name: \"good\"", "name: \"a/b\""}}), "name"},
      {absl::StrReplaceAll(good, {{"name: \"good\"\n", ""}}), "name"},
      {absl::StrReplaceAll(good, {{"steps: 10", "steps: 0"}}), "steps"},
      {absl::StrReplaceAll(good, {{"lr: 0.001", "lr: -1"}}), "optimizer.lr"},
      {absl::StrReplaceAll(good, {{"batch_size: 1", "batch_size: 1 checkpoint_dir: \"/tmp\""}}),
       "train.checkpoint_dir"},
      {absl::StrReplaceAll(good, {{"batch_size: 1", "batch_size: 1 text_path: \"../../x\""}}),
       "train.text_path"},
  };
  for (const Case& c : cases) {
    grpc::Status status = SubmitRaw(c.spec);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << c.field << "\n" << c.spec;
    EXPECT_TRUE(absl::StrContains(status.error_message(), c.field))
        << c.field << ": " << status.error_message();
    // The HTTP face refuses it the same way.
    auto answer = cluster_->Http("POST", "/api/jobs", true, c.spec);
    ASSERT_TRUE(answer.ok());
    EXPECT_EQ(answer->status, 400) << c.field;
    EXPECT_TRUE(absl::StrContains(answer->body, c.field)) << answer->body;
  }
  ExpectAliveAndEmpty();
}

TEST_F(SecurityTest, FuzzedInputCrashesNothingAndStoresNothing) {
  absl::BitGen random;
  auto random_bytes = [&](size_t max) {
    std::string s(absl::Uniform<size_t>(random, 0, max), '\0');
    for (char& c : s) c = static_cast<char>(absl::Uniform<int>(random, 0, 256));
    return s;
  };
  // Every truncation of a valid spec (all but its final newline), and random
  // bytes, as SubmitJob specs.
  const std::string spec = Cluster::Spec("fuzz", dataset_, 10, 1, 0, 5);
  for (size_t n = 0; n + 1 < spec.size(); ++n) {
    grpc::Status status = SubmitRaw(spec.substr(0, n));
    ASSERT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << spec.substr(0, n);
  }
  for (int i = 0; i < 300; ++i) {
    std::string bytes = random_bytes(2000);
    // Random edits of the valid spec reach deeper into the parser.
    if (i % 2 == 0) {
      bytes = spec;
      for (int k = 0; k < 3; ++k) {
        bytes[absl::Uniform<size_t>(random, 0, bytes.size())] =
            static_cast<char>(absl::Uniform<int>(random, 0, 256));
      }
      bytes.resize(absl::Uniform<size_t>(random, 0, bytes.size()));
    }
    ASSERT_NE(SubmitRaw(bytes).error_code(), grpc::StatusCode::OK);
  }
  // Random bytes as the protobuf message itself.
  grpc::GenericStub generic(*MakeChannel(cluster_->client_options()));
  for (int i = 0; i < 100; ++i) {
    grpc::ClientContext context;
    cluster_->Prepare(&context);
    const std::string bytes = random_bytes(500);
    grpc::Slice slice(bytes);
    grpc::ByteBuffer request(&slice, 1), response;
    std::promise<grpc::Status> done;
    generic.UnaryCall(&context, "/modamba.v1.JobService/SubmitJob", grpc::StubOptions(), &request,
                      &response, [&](grpc::Status s) { done.set_value(s); });
    grpc::Status status = done.get_future().get();
    // Usually unparseable; a parseable one is an invalid spec.
    EXPECT_NE(status.error_code(), grpc::StatusCode::OK);
  }

  // HTTP: random bodies to POST /api/jobs, random targets, and raw garbage.
  for (int i = 0; i < 100; ++i) {
    auto answer =
        cluster_->Http("POST", "/api/jobs", true, i % 2 ? random_bytes(3000) : spec.substr(0, i));
    ASSERT_TRUE(answer.ok()) << answer.status();
    EXPECT_EQ(answer->status, 400);
    std::string target = "/api/jobs/";
    for (int k = 0; k < 20; ++k) target += "abc%/?&=.-_"[absl::Uniform<int>(random, 0, 11)];
    auto get = cluster_->Http("GET", target);
    ASSERT_TRUE(get.ok()) << get.status();
    EXPECT_GE(get->status, 400);
  }
  for (int i = 0; i < 100; ++i) {
    boost::asio::io_context io;
    boost::asio::ip::tcp::socket socket(io);
    boost::system::error_code ec;
    socket.connect(
        {boost::asio::ip::make_address("127.0.0.1"), static_cast<uint16_t>(cluster_->http_port())},
        ec);
    ASSERT_FALSE(ec) << ec.message();
    std::string garbage = random_bytes(4000);
    if (i % 3 == 0)
      garbage = "GET /api/jobs HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n" + garbage;
    boost::asio::write(socket, boost::asio::buffer(garbage), ec);
    socket.shutdown(boost::asio::ip::tcp::socket::shutdown_send, ec);
    char reply[256];
    socket.read_some(boost::asio::buffer(reply), ec);  // an error response or a close
  }
  ExpectAliveAndEmpty();
}

TEST_F(SecurityTest, OversizedRequestsAreRefused) {
  // HTTP bodies beyond 1 MiB: 413 before anything is parsed.
  auto answer = cluster_->Http("POST", "/api/jobs", true, std::string(2 << 20, 'a'));
  ASSERT_TRUE(answer.ok()) << answer.status();
  EXPECT_EQ(answer->status, 413);
  // gRPC messages beyond the bound: RESOURCE_EXHAUSTED.
  EXPECT_EQ(SubmitRaw(std::string(40 << 20, 'a')).error_code(),
            grpc::StatusCode::RESOURCE_EXHAUSTED);
  // A spec beyond its own bound (1 MiB) but within the message bound.
  grpc::Status status = SubmitRaw(std::string(2 << 20, ' '));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(absl::StrContains(status.error_message(), "larger than")) << status.error_message();
  ExpectAliveAndEmpty();
}

TEST(TlsTest, GrpcOverTlsWithWorkersAndPlaintextRefused) {
  const std::string dir = std::string(getenv("TEST_TMPDIR")) + "/tls";
  ASSERT_TRUE(MakeDirs(dir).ok());
  const std::string command = absl::StrCat(
      "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost "
      "-addext subjectAltName=IP:127.0.0.1,DNS:localhost -keyout ",
      dir, "/key.pem -out ", dir, "/cert.pem >/dev/null 2>&1");
  if (system(command.c_str()) != 0) GTEST_SKIP() << "no openssl to make a certificate";
  ClusterOptions options;
  options.tls_cert = dir + "/cert.pem";
  options.tls_key = dir + "/key.pem";
  auto cluster = Cluster::Start(options);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  Cluster& c = **cluster;

  // Workers dial back over TLS too: a whole job runs.
  const std::string dataset = c.MakeDataset("tls", "step_ms=5\n");
  auto job = c.Submit(Cluster::Spec("tls", dataset, 10, 2, 1, 5));
  ASSERT_TRUE(job.ok()) << job.status();
  auto done = c.WaitFinished(job->id());
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_EQ(done->state(), v1::JOB_SUCCEEDED) << done->reason() << c.Logs();

  // A plaintext client gets nowhere.
  ClientOptions plain = c.client_options();
  plain.tls_ca_file.clear();
  auto channel = MakeChannel(plain);
  ASSERT_TRUE(channel.ok());
  grpc::ClientContext context;
  PrepareContext(&context, plain, absl::Seconds(5));
  v1::ListJobsResponse jobs;
  EXPECT_EQ(v1::JobService::NewStub(*channel)
                ->ListJobs(&context, v1::ListJobsRequest(), &jobs)
                .error_code(),
            grpc::StatusCode::UNAVAILABLE);
}

}  // namespace
}  // namespace modamba
