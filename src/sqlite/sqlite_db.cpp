#include "sqlite/sqlite_db.h"

namespace eventq::sqlite {

namespace {
bool is_open_failure(int rc) {
  int primary = rc & 0xff;
  return primary == SQLITE_CANTOPEN || primary == SQLITE_PERM || primary == SQLITE_NOTADB ||
         primary == SQLITE_READONLY || primary == SQLITE_AUTH;
}
}  // namespace

connection::connection(const std::string& path, std::chrono::milliseconds busy_timeout)
    : m_path(path), m_busy_timeout(busy_timeout) {
  sqlite3* raw = nullptr;
  int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
  int rc = sqlite3_open_v2(path.c_str(), &raw, flags, nullptr);
  m_db.reset(raw);
  if (rc != SQLITE_OK) {
    std::string msg = raw ? sqlite3_errmsg(raw) : sqlite3_errstr(rc);
    throw error(errc::database_unavailable,
                "cannot open SQLite database '" + path + "': " + msg +
                    " (check that the directory exists and this process may write to it)");
  }
  sqlite3_extended_result_codes(raw, 1);
  sqlite3_busy_handler(raw, &connection::on_busy, this);
  // WAL lets readers and one writer work at once across processes; it is a property of the
  // file, so setting it again on every open is a cheap no-op.
  //
  // When several connections open a new file at once, switching it to WAL can fail with
  // SQLITE_BUSY without SQLite ever calling the busy handler (it refuses to wait where waiting
  // could deadlock: this connection holds a shared lock and wants an exclusive one). Those
  // attempts are retried here until busy_timeout, like any other busy wait.
  const char* setup = "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;";
  auto deadline = std::chrono::steady_clock::now() + busy_timeout;
  for (int attempt = 0;; ++attempt) {
    char* err = nullptr;
    rc = sqlite3_exec(raw, setup, nullptr, nullptr, &err);
    std::string msg = err ? err : sqlite3_errstr(rc);
    sqlite3_free(err);
    if (rc == SQLITE_OK) break;
    int primary = rc & 0xff;
    bool busy = primary == SQLITE_BUSY || primary == SQLITE_LOCKED;
    if (busy && std::chrono::steady_clock::now() < deadline) {
      sqlite3_sleep(attempt < 100 ? 1 : 5);
      continue;
    }
    throw error(errc::database_unavailable,
                "SQLite database '" + path + "': " + msg + " (while switching it to WAL mode" +
                    (busy ? ": another process held a lock on it longer than "
                            "options::busy_timeout)"
                          : "; is it an SQLite database, on a local disk that supports WAL, "
                            "and writable?)"));
  }
}

// SQLite's own busy timeout sleeps 1, 2, 5, 10 ... up to 100 ms between attempts, so a raiser
// that meets two or three cleanup batches in a row waits far longer than the batches hold the
// lock. Retrying every millisecond keeps the wait close to the time the lock is actually held.
int connection::on_busy(void* self, int count) noexcept {
  auto* c = static_cast<connection*>(self);
  auto now = std::chrono::steady_clock::now();
  if (count == 0) c->m_busy_since = now;
  if (now - c->m_busy_since >= c->m_busy_timeout) return 0;
  sqlite3_sleep(count < 100 ? 1 : 2);
  return 1;
}

std::size_t connection::changes() const noexcept {
  return static_cast<std::size_t>(sqlite3_changes(m_db.get()));
}

void connection::exec(std::string_view sql) {
  std::string text(sql);
  char* err = nullptr;
  int rc = sqlite3_exec(m_db.get(), text.c_str(), nullptr, nullptr, &err);
  if (rc != SQLITE_OK) {
    std::string msg = err ? err : sqlite3_errstr(rc);
    sqlite3_free(err);
    errc code = is_open_failure(rc) ? errc::database_unavailable : errc::database_error;
    throw error(code, "SQLite database '" + m_path + "': " + msg +
                          " (while running: " + text.substr(0, 80) + ")");
  }
}

void connection::fail(int rc, std::string_view what) const {
  errc code = is_open_failure(rc) ? errc::database_unavailable : errc::database_error;
  std::string hint;
  if ((rc & 0xff) == SQLITE_BUSY || (rc & 0xff) == SQLITE_LOCKED) {
    hint = " (another process held the write lock longer than options::busy_timeout)";
  } else if ((rc & 0xff) == SQLITE_FULL) {
    hint = " (the disk is full)";
  }
  throw error(code, "SQLite database '" + m_path + "': " + std::string(what) +
                        " failed: " + sqlite3_errmsg(m_db.get()) + hint);
}

statement::statement(connection& conn, std::string_view sql) : m_conn(&conn), m_sql(sql) {
  sqlite3_stmt* raw = nullptr;
  int rc = sqlite3_prepare_v3(conn.get(), m_sql.data(), static_cast<int>(m_sql.size()),
                              SQLITE_PREPARE_PERSISTENT, &raw, nullptr);
  m_stmt.reset(raw);
  if (rc != SQLITE_OK) conn.fail(rc, "preparing '" + m_sql + "'");
}

statement& statement::bind(int index, std::int64_t value) {
  int rc = sqlite3_bind_int64(m_stmt.get(), index, value);
  if (rc != SQLITE_OK) m_conn->fail(rc, "binding a parameter");
  return *this;
}

statement& statement::bind(int index, std::string_view value) {
  int rc = sqlite3_bind_text64(m_stmt.get(), index, value.data(), value.size(), SQLITE_TRANSIENT,
                               SQLITE_UTF8);
  if (rc != SQLITE_OK) m_conn->fail(rc, "binding a parameter");
  return *this;
}

statement& statement::bind_static(int index, std::string_view value) {
  int rc = sqlite3_bind_text64(m_stmt.get(), index, value.data(), value.size(), SQLITE_STATIC,
                               SQLITE_UTF8);
  if (rc != SQLITE_OK) m_conn->fail(rc, "binding a parameter");
  return *this;
}

statement& statement::bind_null(int index) {
  int rc = sqlite3_bind_null(m_stmt.get(), index);
  if (rc != SQLITE_OK) m_conn->fail(rc, "binding a parameter");
  return *this;
}

bool statement::step() {
  int rc = sqlite3_step(m_stmt.get());
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  std::string what = "running '" + m_sql.substr(0, 60) + "'";
  reset();
  m_conn->fail(rc, what);
}

void statement::run() {
  while (step()) {
  }
  reset();
}

void statement::reset() noexcept {
  sqlite3_reset(m_stmt.get());
  sqlite3_clear_bindings(m_stmt.get());
}

bool statement::is_null(int col) const noexcept {
  return sqlite3_column_type(m_stmt.get(), col) == SQLITE_NULL;
}

std::int64_t statement::int64(int col) const noexcept {
  return sqlite3_column_int64(m_stmt.get(), col);
}

double statement::real(int col) const noexcept { return sqlite3_column_double(m_stmt.get(), col); }

std::string statement::text(int col) const { return std::string(text_view(col)); }

std::string_view statement::text_view(int col) const noexcept {
  const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(m_stmt.get(), col));
  if (!p) return {};
  return {p, static_cast<std::size_t>(sqlite3_column_bytes(m_stmt.get(), col))};
}

write_transaction::write_transaction(connection& conn) : m_conn(conn) {
  m_conn.exec("BEGIN IMMEDIATE");
}

write_transaction::~write_transaction() {
  if (!m_done) sqlite3_exec(m_conn.get(), "ROLLBACK", nullptr, nullptr, nullptr);
}

void write_transaction::commit() {
  m_conn.exec("COMMIT");
  m_done = true;
}

}  // namespace eventq::sqlite
