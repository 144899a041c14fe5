// The gRPC faces of the job manager: JobService (users), WorkerService
// (workers) and CheckpointService (checkpoint files). Every call is checked
// first for who it speaks for (coordinator/auth.h): JobService takes users
// only, a worker call or upload only the worker it names, a checkpoint
// download a user or a worker of that job. Blocking calls wait at most a
// bounded time and never past the client's deadline.
#ifndef MODAMBA_COORDINATOR_GRPC_SERVICES_H_
#define MODAMBA_COORDINATOR_GRPC_SERVICES_H_

#include "coordinator/auth.h"
#include "coordinator/checkpoint_store.h"
#include "coordinator/job_manager.h"
#include "proto/service.grpc.pb.h"

namespace modamba {

// Bytes in one streamed checkpoint chunk.
inline constexpr size_t kCheckpointChunkBytes = 1 << 20;

class JobServiceImpl final : public v1::JobService::Service {
 public:
  JobServiceImpl(JobManager* manager, const TokenAuth* auth) : manager_(manager), auth_(auth) {}

  grpc::Status SubmitJob(grpc::ServerContext* context, const v1::SubmitJobRequest* request,
                         v1::Job* response) override;
  grpc::Status GetJob(grpc::ServerContext* context, const v1::GetJobRequest* request,
                      v1::Job* response) override;
  grpc::Status ListJobs(grpc::ServerContext* context, const v1::ListJobsRequest* request,
                        v1::ListJobsResponse* response) override;
  grpc::Status CancelJob(grpc::ServerContext* context, const v1::CancelJobRequest* request,
                         v1::Job* response) override;
  grpc::Status WatchJob(grpc::ServerContext* context, const v1::WatchJobRequest* request,
                        grpc::ServerWriter<v1::JobEvent>* writer) override;
  grpc::Status GetMetrics(grpc::ServerContext* context, const v1::GetMetricsRequest* request,
                          v1::GetMetricsResponse* response) override;
  grpc::Status ListWorkers(grpc::ServerContext* context, const v1::ListWorkersRequest* request,
                           v1::ListWorkersResponse* response) override;
  grpc::Status GetLogs(grpc::ServerContext* context, const v1::GetLogsRequest* request,
                       v1::GetLogsResponse* response) override;

 private:
  JobManager* const manager_;
  const TokenAuth* const auth_;
};

class WorkerServiceImpl final : public v1::WorkerService::Service {
 public:
  WorkerServiceImpl(JobManager* manager, const TokenAuth* auth) : manager_(manager), auth_(auth) {}

  grpc::Status Register(grpc::ServerContext* context, const v1::RegisterRequest* request,
                        v1::RegisterResponse* response) override;
  grpc::Status Heartbeat(grpc::ServerContext* context, const v1::HeartbeatRequest* request,
                         v1::HeartbeatResponse* response) override;
  grpc::Status KvSet(grpc::ServerContext* context, const v1::KvSetRequest* request,
                     v1::KvSetResponse* response) override;
  grpc::Status KvGet(grpc::ServerContext* context, const v1::KvGetRequest* request,
                     v1::KvGetResponse* response) override;
  grpc::Status KvAdd(grpc::ServerContext* context, const v1::KvAddRequest* request,
                     v1::KvAddResponse* response) override;
  grpc::Status KvCheck(grpc::ServerContext* context, const v1::KvCheckRequest* request,
                       v1::KvCheckResponse* response) override;
  grpc::Status ReportMetrics(grpc::ServerContext* context, const v1::ReportMetricsRequest* request,
                             v1::ReportMetricsResponse* response) override;
  grpc::Status ReportCheckpoint(grpc::ServerContext* context,
                                const v1::ReportCheckpointRequest* request,
                                v1::ReportCheckpointResponse* response) override;
  grpc::Status AwaitCheckpoint(grpc::ServerContext* context,
                               const v1::AwaitCheckpointRequest* request,
                               v1::AwaitCheckpointResponse* response) override;
  grpc::Status Done(grpc::ServerContext* context, const v1::DoneRequest* request,
                    v1::DoneResponse* response) override;

 private:
  JobManager* const manager_;
  const TokenAuth* const auth_;
};

class CheckpointServiceImpl final : public v1::CheckpointService::Service {
 public:
  CheckpointServiceImpl(JobManager* manager, CheckpointStore* store, const TokenAuth* auth)
      : manager_(manager), store_(store), auth_(auth) {}

  grpc::Status Upload(grpc::ServerContext* context, grpc::ServerReader<v1::UploadChunk>* reader,
                      v1::UploadResponse* response) override;
  grpc::Status Download(grpc::ServerContext* context, const v1::DownloadRequest* request,
                        grpc::ServerWriter<v1::DownloadChunk>* writer) override;
  grpc::Status List(grpc::ServerContext* context, const v1::ListCheckpointsRequest* request,
                    v1::ListCheckpointsResponse* response) override;

 private:
  JobManager* const manager_;
  CheckpointStore* const store_;
  const TokenAuth* const auth_;
};

// absl -> gRPC status, code and message kept.
grpc::Status ToGrpc(const absl::Status& status);

}  // namespace modamba

#endif  // MODAMBA_COORDINATOR_GRPC_SERVICES_H_
