#include "coordinator/db.h"

#include <sqlite3.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "core/status_macros.h"

namespace modamba {
namespace {

constexpr const char* kSchema[] = {
    "CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, record BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS workers (job_id TEXT NOT NULL, role INTEGER NOT NULL, "
    "rank INTEGER NOT NULL, record BLOB NOT NULL, PRIMARY KEY (job_id, role, rank))",
    "CREATE TABLE IF NOT EXISTS checkpoints (job_id TEXT NOT NULL, step INTEGER NOT NULL, "
    "record BLOB NOT NULL, PRIMARY KEY (job_id, step))",
    "CREATE TABLE IF NOT EXISTS metrics (job_id TEXT NOT NULL, seq INTEGER NOT NULL, "
    "record BLOB NOT NULL, PRIMARY KEY (job_id, seq))",
    "CREATE TABLE IF NOT EXISTS kv (namespace TEXT NOT NULL, key BLOB NOT NULL, "
    "value BLOB NOT NULL, PRIMARY KEY (namespace, key))",
};

// SQLite's message, and the operating system's for an I/O error ("database
// or disk is full (No space left on device)").
absl::Status SqliteError(sqlite3* db) {
  std::string message = absl::StrCat("sqlite: ", sqlite3_errmsg(db));
  // SQLite's own VFS reports a full disk as SQLITE_FULL and keeps no errno.
  const int err = sqlite3_errcode(db) == SQLITE_FULL ? ENOSPC : sqlite3_system_errno(db);
  if (err != 0) absl::StrAppend(&message, " (", std::strerror(err), ")");
  return absl::InternalError(message);
}

// A prepared statement, finalized on scope exit.
class Statement {
 public:
  Statement(sqlite3* db, const char* sql) : db_(db) {
    if (sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr) != SQLITE_OK) stmt_ = nullptr;
  }
  ~Statement() { sqlite3_finalize(stmt_); }
  bool ok() const { return stmt_ != nullptr; }

  Statement& Bind(int index, const std::string& blob) {
    sqlite3_bind_blob(stmt_, index, blob.data(), static_cast<int>(blob.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Statement& BindText(int index, const std::string& text) {
    sqlite3_bind_text(stmt_, index, text.data(), static_cast<int>(text.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Statement& Bind(int index, int64_t value) {
    sqlite3_bind_int64(stmt_, index, value);
    return *this;
  }

  // Runs a statement that returns no rows, then resets it for reuse.
  absl::Status Run() {
    const int rc = sqlite3_step(stmt_);
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
    if (rc != SQLITE_DONE) return SqliteError(db_);
    return absl::OkStatus();
  }
  // Steps a query: true while there is a row.
  absl::StatusOr<bool> Next() {
    const int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    return SqliteError(db_);
  }
  std::string Blob(int column) const {
    const void* data = sqlite3_column_blob(stmt_, column);
    return std::string(static_cast<const char*>(data), sqlite3_column_bytes(stmt_, column));
  }

 private:
  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
};

absl::StatusOr<Statement*> Prepare(sqlite3* db, const char* sql, std::unique_ptr<Statement>* out) {
  *out = std::make_unique<Statement>(db, sql);
  if (!(*out)->ok()) return SqliteError(db);
  return out->get();
}

template <typename Proto>
absl::Status ParseRow(const std::string& blob, const char* table, Proto* out) {
  if (!out->ParseFromString(blob)) {
    return absl::DataLossError(absl::StrCat("database: a row of table ", table, " is unreadable"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Db>> Db::Open(const std::string& path) {
  sqlite3* handle = nullptr;
  const int rc =
      sqlite3_open_v2(path.c_str(), &handle,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, nullptr);
  std::unique_ptr<Db> db(new Db(handle));
  if (rc != SQLITE_OK) {
    return absl::UnavailableError(
        absl::StrCat("cannot open database ", path, ": ", sqlite3_errmsg(handle)));
  }
  // busy_timeout first: the exclusive lock of a coordinator that was just
  // killed may still be in the process of being released.
  RETURN_IF_ERROR(db->Exec("PRAGMA busy_timeout=5000"));
  RETURN_IF_ERROR(db->Exec("PRAGMA locking_mode=EXCLUSIVE"));
  RETURN_IF_ERROR(db->Exec("PRAGMA journal_mode=WAL"));
  RETURN_IF_ERROR(db->Exec("PRAGMA synchronous=NORMAL"));
  for (const char* sql : kSchema) {
    absl::Status status = db->Exec(sql);
    if (!status.ok()) {
      return absl::Status(status.code(), absl::StrCat("database ", path, ": ", status.message(),
                                                      " (is another coordinator using it?)"));
    }
  }
  return db;
}

Db::~Db() { sqlite3_close(db_); }

absl::Status Db::Exec(const char* sql) {
  char* error = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &error) != SQLITE_OK) {
    sqlite3_free(error);
    return SqliteError(db_);
  }
  return absl::OkStatus();
}

absl::Status Db::Write(const WriteBatch& batch) {
  if (batch.empty()) return absl::OkStatus();
  RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
  auto write_all = [&]() -> absl::Status {
    std::unique_ptr<Statement> holder;
    if (!batch.jobs.empty()) {
      ASSIGN_OR_RETURN(Statement * s,
                       Prepare(db_,
                               "INSERT INTO jobs (id, record) VALUES (?, ?) "
                               "ON CONFLICT (id) DO UPDATE SET record = excluded.record",
                               &holder));
      for (v1::Job job : batch.jobs) {
        job.clear_workers();
        RETURN_IF_ERROR(s->BindText(1, job.id()).Bind(2, job.SerializeAsString()).Run());
      }
    }
    if (!batch.workers.empty()) {
      ASSIGN_OR_RETURN(
          Statement * s,
          Prepare(db_,
                  "INSERT INTO workers (job_id, role, rank, record) VALUES (?, ?, ?, ?) "
                  "ON CONFLICT (job_id, role, rank) DO UPDATE SET record = excluded.record",
                  &holder));
      for (const v1::WorkerInfo& w : batch.workers) {
        RETURN_IF_ERROR(s->BindText(1, w.ref().job_id())
                            .Bind(2, int64_t{w.ref().role()})
                            .Bind(3, int64_t{w.ref().rank()})
                            .Bind(4, w.SerializeAsString())
                            .Run());
      }
    }
    if (!batch.checkpoints.empty()) {
      ASSIGN_OR_RETURN(Statement * s,
                       Prepare(db_,
                               "INSERT INTO checkpoints (job_id, step, record) VALUES (?, ?, ?) "
                               "ON CONFLICT (job_id, step) DO UPDATE SET record = excluded.record",
                               &holder));
      for (const v1::CheckpointInfo& c : batch.checkpoints) {
        RETURN_IF_ERROR(
            s->BindText(1, c.job_id()).Bind(2, c.step()).Bind(3, c.SerializeAsString()).Run());
      }
    }
    if (!batch.metrics.empty()) {
      ASSIGN_OR_RETURN(
          Statement * s,
          Prepare(db_, "INSERT INTO metrics (job_id, seq, record) VALUES (?, ?, ?)", &holder));
      for (const auto& [job_id, point] : batch.metrics) {
        RETURN_IF_ERROR(
            s->BindText(1, job_id).Bind(2, point.seq()).Bind(3, point.SerializeAsString()).Run());
      }
    }
    if (!batch.kv.empty()) {
      ASSIGN_OR_RETURN(Statement * s,
                       Prepare(db_,
                               "INSERT INTO kv (namespace, key, value) VALUES (?, ?, ?) "
                               "ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value",
                               &holder));
      for (const auto& [where, value] : batch.kv) {
        RETURN_IF_ERROR(s->BindText(1, where.first).Bind(2, where.second).Bind(3, value).Run());
      }
    }
    if (!batch.drop_kv_namespaces.empty()) {
      ASSIGN_OR_RETURN(Statement * s, Prepare(db_, "DELETE FROM kv WHERE namespace = ?", &holder));
      for (const std::string& ns : batch.drop_kv_namespaces) {
        RETURN_IF_ERROR(s->BindText(1, ns).Run());
      }
    }
    return absl::OkStatus();
  };
  absl::Status status = write_all();
  if (!status.ok()) {
    Exec("ROLLBACK").IgnoreError();
    return status;
  }
  return Exec("COMMIT");
}

absl::StatusOr<StoredState> Db::Load() {
  StoredState state;
  std::unique_ptr<Statement> holder;
  {
    ASSIGN_OR_RETURN(Statement * s,
                     Prepare(db_, "SELECT record FROM jobs ORDER BY rowid", &holder));
    for (;;) {
      ASSIGN_OR_RETURN(bool row, s->Next());
      if (!row) break;
      RETURN_IF_ERROR(ParseRow(s->Blob(0), "jobs", &state.jobs.emplace_back()));
    }
  }
  {
    ASSIGN_OR_RETURN(
        Statement * s,
        Prepare(db_, "SELECT record FROM workers ORDER BY job_id, role, rank", &holder));
    for (;;) {
      ASSIGN_OR_RETURN(bool row, s->Next());
      if (!row) break;
      RETURN_IF_ERROR(ParseRow(s->Blob(0), "workers", &state.workers.emplace_back()));
    }
  }
  {
    ASSIGN_OR_RETURN(Statement * s,
                     Prepare(db_, "SELECT record FROM checkpoints ORDER BY job_id, step", &holder));
    for (;;) {
      ASSIGN_OR_RETURN(bool row, s->Next());
      if (!row) break;
      RETURN_IF_ERROR(ParseRow(s->Blob(0), "checkpoints", &state.checkpoints.emplace_back()));
    }
  }
  {
    ASSIGN_OR_RETURN(
        Statement * s,
        Prepare(db_, "SELECT job_id, record FROM metrics ORDER BY job_id, seq", &holder));
    for (;;) {
      ASSIGN_OR_RETURN(bool row, s->Next());
      if (!row) break;
      RETURN_IF_ERROR(ParseRow(s->Blob(1), "metrics", &state.metrics[s->Blob(0)].emplace_back()));
    }
  }
  {
    ASSIGN_OR_RETURN(Statement * s, Prepare(db_, "SELECT namespace, key, value FROM kv", &holder));
    for (;;) {
      ASSIGN_OR_RETURN(bool row, s->Next());
      if (!row) break;
      state.kv[s->Blob(0)][s->Blob(1)] = s->Blob(2);
    }
  }
  return state;
}

}  // namespace modamba
