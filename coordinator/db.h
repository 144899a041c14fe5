// The coordinator's durable state in SQLite: jobs, workers, checkpoint
// records, metric points and the rendezvous key-value pairs. Rows hold the
// serialized protos of proto/job.proto beside the columns they are looked up
// by, so the schema never lags the protos.
//
// WAL mode with synchronous=NORMAL: a commit survives kill -9 of the
// coordinator (only an OS crash could lose the last commits). The database is
// opened in exclusive locking mode, so a second coordinator on the same file
// fails at start instead of corrupting the first one's state.
#ifndef MODAMBA_COORDINATOR_DB_H_
#define MODAMBA_COORDINATOR_DB_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "proto/job.pb.h"

struct sqlite3;

namespace modamba {

// Everything one event changes, written in one transaction.
struct WriteBatch {
  std::vector<v1::Job> jobs;  // `workers` of a Job are not stored with it
  std::vector<v1::WorkerInfo> workers;
  std::vector<v1::CheckpointInfo> checkpoints;
  std::vector<std::pair<std::string, v1::MetricPoint>> metrics;  // (job id, point)
  // (namespace, key) -> value
  std::vector<std::pair<std::pair<std::string, std::string>, std::string>> kv;
  std::vector<std::string> drop_kv_namespaces;

  bool empty() const {
    return jobs.empty() && workers.empty() && checkpoints.empty() && metrics.empty() &&
           kv.empty() && drop_kv_namespaces.empty();
  }
};

// The whole stored state, as loaded at start.
struct StoredState {
  std::vector<v1::Job> jobs;  // in submission order
  std::vector<v1::WorkerInfo> workers;
  std::vector<v1::CheckpointInfo> checkpoints;                   // by job, then step
  std::map<std::string, std::vector<v1::MetricPoint>> metrics;   // by job, in seq order
  std::map<std::string, std::map<std::string, std::string>> kv;  // namespace -> key -> value
};

class Db {
 public:
  // Creates the file and its tables when missing.
  static absl::StatusOr<std::unique_ptr<Db>> Open(const std::string& path);
  ~Db();
  Db(const Db&) = delete;
  Db& operator=(const Db&) = delete;

  // Inserts or replaces every row of `batch` atomically. Not thread-safe:
  // the caller serialises writes.
  absl::Status Write(const WriteBatch& batch);

  absl::StatusOr<StoredState> Load();

 private:
  explicit Db(sqlite3* db) : db_(db) {}
  absl::Status Exec(const char* sql);

  sqlite3* db_;
};

}  // namespace modamba

#endif  // MODAMBA_COORDINATOR_DB_H_
