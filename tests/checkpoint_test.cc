// The checkpoint store's guarantees, over gRPC: a corrupted upload is
// refused and leaves nothing behind; a file corrupted on the coordinator's
// disk is never served, not even in part.
#include <cstdio>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/file_util.h"
#include "gtest/gtest.h"
#include "tests/cluster.h"

namespace modamba {
namespace {

class CheckpointTest : public ClusterTest {
 protected:
  // Uploads `data` announced as (`size`, `sha256`) for checkpoint `step` as `worker`.
  grpc::Status Upload(const v1::WorkerRef& worker, int64_t step, const std::string& path,
                      const std::string& data, int64_t size, const std::string& sha256) {
    grpc::ClientContext context;
    cluster_->PrepareAsWorker(&context, worker.job_id(),
                              absl::StrCat(worker.role() == v1::ROLE_TRAINER ? "trainer-" : "evaluator-",
                                           worker.rank()));
    v1::UploadResponse response;
    auto writer = cluster_->checkpoints()->Upload(&context, &response);
    v1::UploadChunk chunk;
    *chunk.mutable_header()->mutable_worker() = worker;
    chunk.mutable_header()->set_step(step);
    chunk.mutable_header()->mutable_file()->set_path(path);
    chunk.mutable_header()->mutable_file()->set_size(size);
    chunk.mutable_header()->mutable_file()->set_sha256(sha256);
    writer->Write(chunk);
    chunk.set_data(data);
    writer->Write(chunk);
    writer->WritesDone();
    return writer->Finish();
  }

  // Downloads a whole checkpoint; counts the data chunks that arrived.
  grpc::Status Download(const std::string& job_id, int64_t step, int* data_chunks) {
    grpc::ClientContext context;
    cluster_->Prepare(&context);
    v1::DownloadRequest request;
    request.set_job_id(job_id);
    request.set_step(step);
    auto reader = cluster_->checkpoints()->Download(&context, request);
    v1::DownloadChunk chunk;
    *data_chunks = 0;
    while (reader->Read(&chunk)) *data_chunks += chunk.has_file() ? 0 : 1;
    return reader->Finish();
  }

};

TEST_F(CheckpointTest, CorruptedUploadsAreRefusedAndLeaveNothing) {
  // A trainer that idles, whose identity the test borrows.
  const std::string dataset = cluster_->MakeDataset("idle", "step_ms=100\n");
  auto job = cluster_->Submit(Cluster::Spec("idle", dataset, 100000, 1, 0, 100000));
  ASSERT_TRUE(job.ok()) << job.status();
  auto running = cluster_->WaitJob(job->id(), [](const v1::Job& j) {
    return j.workers_size() == 1 && j.workers(0).state() == v1::WORKER_RUNNING;
  });
  ASSERT_TRUE(running.ok()) << running.status();
  const v1::WorkerRef trainer = running->workers(0).ref();

  const std::string data(5000, 'x');
  const std::string sha = Sha256Hex(data);
  const std::string other_sha = Sha256Hex("something else");
  // Wrong sha256, too few bytes, too many bytes: DATA_LOSS.
  EXPECT_EQ(Upload(trainer, 777, "rank-0/a.bin", data, 5000, other_sha).error_code(),
            grpc::StatusCode::DATA_LOSS);
  EXPECT_EQ(Upload(trainer, 777, "rank-0/a.bin", data, 6000, sha).error_code(),
            grpc::StatusCode::DATA_LOSS);
  EXPECT_EQ(Upload(trainer, 777, "rank-0/a.bin", data, 100, sha).error_code(),
            grpc::StatusCode::DATA_LOSS);
  // Paths that would leave the checkpoint directory.
  for (const std::string path : {"../escape.bin", "/abs.bin", "rank-0/../../x", ""}) {
    EXPECT_EQ(Upload(trainer, 777, path, data, 5000, sha).error_code(),
              grpc::StatusCode::INVALID_ARGUMENT)
        << path;
  }
  // A generation that is not the current one, and a worker without the token.
  v1::WorkerRef stale = trainer;
  stale.set_generation(trainer.generation() + 1);
  EXPECT_EQ(Upload(stale, 777, "rank-0/a.bin", data, 5000, sha).error_code(),
            grpc::StatusCode::ABORTED);

  // Nothing was recorded and nothing was written.
  auto checkpoints = cluster_->Checkpoints(job->id());
  ASSERT_TRUE(checkpoints.ok());
  EXPECT_TRUE(checkpoints->empty());
  EXPECT_FALSE(FileExists(absl::StrCat(cluster_->checkpoint_root(), "/", job->id())));
  EXPECT_FALSE(FileExists(cluster_->root() + "/escape.bin"));

  // The same bytes, announced truthfully, are taken.
  EXPECT_TRUE(Upload(trainer, 777, "rank-0/a.bin", data, 5000, sha).ok());
  checkpoints = cluster_->Checkpoints(job->id());
  ASSERT_TRUE(checkpoints.ok());
  ASSERT_EQ(checkpoints->size(), 1u);
  EXPECT_FALSE((*checkpoints)[0].complete());
  EXPECT_EQ((*checkpoints)[0].files(0).sha256(), sha);
  // An incomplete checkpoint is not served.
  int chunks = 0;
  EXPECT_EQ(Download(job->id(), 777, &chunks).error_code(), grpc::StatusCode::FAILED_PRECONDITION);
}

TEST_F(CheckpointTest, AFileCorruptedOnDiskIsNeverServed) {
  const std::string dataset = cluster_->MakeDataset("rot", "step_ms=5\npayload_bytes=3000000\n");
  auto job = cluster_->Submit(Cluster::Spec("rot", dataset, 20, 2, 0, 10));
  ASSERT_TRUE(job.ok()) << job.status();
  auto done = cluster_->WaitFinished(job->id());
  ASSERT_TRUE(done.ok()) << done.status();
  ASSERT_EQ(done->state(), v1::JOB_SUCCEEDED) << done->reason();

  // Both checkpoints are served whole at first (3 MB files: several chunks).
  int chunks = 0;
  ASSERT_TRUE(Download(job->id(), 10, &chunks).ok());
  EXPECT_GT(chunks, 4);
  ASSERT_TRUE(Download(job->id(), 20, &chunks).ok());

  // One byte flips in rank 1's weights of step 20.
  const std::string victim = absl::StrFormat("%s/%s/step-%08d/rank-1/model.bin",
                                             cluster_->checkpoint_root(), job->id(), 20);
  FILE* f = fopen(victim.c_str(), "r+b");
  ASSERT_NE(f, nullptr) << victim;
  fseek(f, 123456, SEEK_SET);
  const int byte = fgetc(f);
  fseek(f, 123456, SEEK_SET);
  fputc(byte ^ 0x01, f);
  fclose(f);

  // Refused before a single byte of data leaves, and marked for good.
  grpc::Status status = Download(job->id(), 20, &chunks);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::DATA_LOSS);
  EXPECT_TRUE(absl::StrContains(status.error_message(), "rank-1/model.bin"))
      << status.error_message();
  EXPECT_EQ(chunks, 0);
  EXPECT_EQ(Download(job->id(), 20, &chunks).error_code(), grpc::StatusCode::DATA_LOSS);
  auto checkpoints = cluster_->Checkpoints(job->id());
  ASSERT_TRUE(checkpoints.ok());
  ASSERT_EQ(checkpoints->size(), 2u);
  EXPECT_FALSE((*checkpoints)[0].corrupt());
  EXPECT_TRUE((*checkpoints)[1].corrupt());
  // The newest checkpoint a restart would resume from is now the sound one.
  auto after = cluster_->GetJob(job->id());
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->latest_checkpoint_step(), 10);
  // The other checkpoint is unaffected.
  EXPECT_TRUE(Download(job->id(), 10, &chunks).ok());
}

}  // namespace
}  // namespace modamba
