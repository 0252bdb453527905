// The SQLite StateStore. Rows hold the serialized proto plus the columns we
// index; the proto is the schema, so adding a field needs no migration.
// WAL mode lets readers (metrics, a second process inspecting the db) run
// beside the writer; synchronous=FULL makes each commit durable before the
// coordinator acts on it.
#include <sqlite3.h>

#include <mutex>
#include <string>
#include <utility>

#include "runtime/coordinator/state_store.h"

namespace kp::coordinator {
namespace {

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS jobs (
  job_id TEXT PRIMARY KEY,
  state INTEGER NOT NULL,
  priority INTEGER NOT NULL,
  sequence INTEGER NOT NULL,
  data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS agents (
  agent_id TEXT PRIMARY KEY,
  data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS assignments (
  job_id TEXT NOT NULL,
  rank INTEGER NOT NULL,
  agent_id TEXT NOT NULL,
  data BLOB NOT NULL,
  PRIMARY KEY (job_id, rank)
);
CREATE TABLE IF NOT EXISTS events (
  job_id TEXT NOT NULL,
  sequence INTEGER NOT NULL,
  data BLOB NOT NULL,
  PRIMARY KEY (job_id, sequence)
);
)sql";

// A prepared statement that finalizes itself.
class Stmt {
 public:
  Stmt(sqlite3* db, const char* sql) { rc_ = sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr); }
  ~Stmt() { sqlite3_finalize(stmt_); }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;
  bool ok() const { return rc_ == SQLITE_OK; }
  sqlite3_stmt* get() { return stmt_; }
  void BindText(int i, const std::string& s) { sqlite3_bind_text(stmt_, i, s.data(), static_cast<int>(s.size()), SQLITE_TRANSIENT); }
  void BindBlob(int i, const std::string& s) { sqlite3_bind_blob(stmt_, i, s.data(), static_cast<int>(s.size()), SQLITE_TRANSIENT); }
  void BindInt(int i, int64_t v) { sqlite3_bind_int64(stmt_, i, v); }
  std::string ColumnBlob(int i) {
    const void* p = sqlite3_column_blob(stmt_, i);
    int n = sqlite3_column_bytes(stmt_, i);
    return p == nullptr ? std::string() : std::string(static_cast<const char*>(p), n);
  }

 private:
  sqlite3_stmt* stmt_ = nullptr;
  int rc_;
};

class SqliteStateStore final : public StateStore {
 public:
  SqliteStateStore(sqlite3* db, std::string path) : db_(db), path_(std::move(path)) {}
  ~SqliteStateStore() override { sqlite3_close(db_); }

  absl::Status Init() {
    KP_RETURN_IF_ERROR(Exec("PRAGMA journal_mode=WAL;"));
    KP_RETURN_IF_ERROR(Exec("PRAGMA synchronous=FULL;"));
    KP_RETURN_IF_ERROR(Exec("PRAGMA busy_timeout=5000;"));
    return Exec(kSchema);
  }

  absl::Status CommitJob(const v1::JobStatus& job, const std::vector<v1::Assignment>* assignments,
                         const std::vector<v1::JobEvent>& events) override {
    std::lock_guard<std::mutex> lock(mu_);
    KP_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE;"));
    absl::Status st = CommitJobLocked(job, assignments, events);
    if (!st.ok()) {
      Exec("ROLLBACK;").IgnoreError();
      return st;
    }
    return Exec("COMMIT;");
  }

  absl::Status SaveAgent(const v1::AgentStatus& agent) override {
    std::lock_guard<std::mutex> lock(mu_);
    Stmt s(db_, "INSERT OR REPLACE INTO agents (agent_id, data) VALUES (?, ?);");
    if (!s.ok()) return Error("prepare agents insert");
    s.BindText(1, agent.info().agent_id());
    s.BindBlob(2, agent.SerializeAsString());
    return Step(s, "insert agent " + agent.info().agent_id());
  }

  absl::StatusOr<std::vector<v1::JobStatus>> LoadJobs() override {
    return LoadAll<v1::JobStatus>("SELECT data FROM jobs ORDER BY sequence;", "jobs");
  }
  absl::StatusOr<std::vector<v1::AgentStatus>> LoadAgents() override {
    return LoadAll<v1::AgentStatus>("SELECT data FROM agents ORDER BY agent_id;", "agents");
  }
  absl::StatusOr<std::vector<v1::Assignment>> LoadAssignments() override {
    return LoadAll<v1::Assignment>("SELECT data FROM assignments ORDER BY job_id, rank;", "assignments");
  }
  absl::StatusOr<std::vector<v1::JobEvent>> LoadEvents() override {
    return LoadAll<v1::JobEvent>("SELECT data FROM events ORDER BY job_id, sequence;", "events");
  }

 private:
  absl::Status CommitJobLocked(const v1::JobStatus& job, const std::vector<v1::Assignment>* assignments,
                               const std::vector<v1::JobEvent>& events) {
    {
      Stmt s(db_, "INSERT OR REPLACE INTO jobs (job_id, state, priority, sequence, data) VALUES (?, ?, ?, ?, ?);");
      if (!s.ok()) return Error("prepare jobs insert");
      s.BindText(1, job.job_id());
      s.BindInt(2, job.state());
      s.BindInt(3, job.spec().priority());
      s.BindInt(4, job.sequence());
      s.BindBlob(5, job.SerializeAsString());
      KP_RETURN_IF_ERROR(Step(s, "insert job " + job.job_id()));
    }
    if (assignments != nullptr) {
      Stmt del(db_, "DELETE FROM assignments WHERE job_id = ?;");
      if (!del.ok()) return Error("prepare assignments delete");
      del.BindText(1, job.job_id());
      KP_RETURN_IF_ERROR(Step(del, "delete assignments of " + job.job_id()));
      for (const auto& a : *assignments) {
        Stmt s(db_, "INSERT INTO assignments (job_id, rank, agent_id, data) VALUES (?, ?, ?, ?);");
        if (!s.ok()) return Error("prepare assignments insert");
        s.BindText(1, a.job_id());
        s.BindInt(2, a.rank());
        s.BindText(3, a.agent_id());
        s.BindBlob(4, a.SerializeAsString());
        KP_RETURN_IF_ERROR(Step(s, "insert assignment " + a.job_id()));
      }
    }
    for (const auto& e : events) {
      Stmt s(db_, "INSERT OR REPLACE INTO events (job_id, sequence, data) VALUES (?, ?, ?);");
      if (!s.ok()) return Error("prepare events insert");
      s.BindText(1, e.job_id());
      s.BindInt(2, e.sequence());
      s.BindBlob(3, e.SerializeAsString());
      KP_RETURN_IF_ERROR(Step(s, "insert event of " + e.job_id()));
    }
    return absl::OkStatus();
  }

  template <typename T>
  absl::StatusOr<std::vector<T>> LoadAll(const char* sql, const char* what) {
    std::lock_guard<std::mutex> lock(mu_);
    Stmt s(db_, sql);
    if (!s.ok()) return Error(std::string("prepare load ") + what);
    std::vector<T> out;
    int rc;
    while ((rc = sqlite3_step(s.get())) == SQLITE_ROW) {
      T msg;
      if (!msg.ParseFromString(s.ColumnBlob(0))) {
        return absl::DataLossError(std::string("corrupt row in table ") + what + " of " + path_);
      }
      out.push_back(std::move(msg));
    }
    if (rc != SQLITE_DONE) return Error(std::string("load ") + what);
    return out;
  }

  absl::Status Step(Stmt& s, const std::string& what) {
    if (sqlite3_step(s.get()) != SQLITE_DONE) return Error(what);
    return absl::OkStatus();
  }

  absl::Status Exec(const char* sql) {
    char* err = nullptr;
    if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
      std::string msg = err != nullptr ? err : "unknown";
      sqlite3_free(err);
      return absl::InternalError("sqlite " + path_ + ": " + msg + " in: " + std::string(sql).substr(0, 60));
    }
    return absl::OkStatus();
  }

  absl::Status Error(const std::string& what) {
    return absl::InternalError("sqlite " + path_ + ": " + what + ": " + sqlite3_errmsg(db_));
  }

  std::mutex mu_;
  sqlite3* db_;
  std::string path_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<StateStore>> OpenSqliteStateStore(const std::string& path) {
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                           nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = db != nullptr ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close(db);
    return absl::UnavailableError("cannot open state db " + path + ": " + msg);
  }
  auto store = std::make_unique<SqliteStateStore>(db, path);
  KP_RETURN_IF_ERROR(store->Init());
  return std::unique_ptr<StateStore>(std::move(store));
}

}  // namespace kp::coordinator
