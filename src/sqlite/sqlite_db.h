// RAII over the SQLite C API: one connection, prepared statements, immediate transactions.
// Every failure becomes an eventq::error naming the database file and SQLite's message.
#pragma once

#include <sqlite3.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "eventq/error.h"

namespace eventq::sqlite {

struct db_closer {
  void operator()(sqlite3* db) const noexcept { sqlite3_close_v2(db); }
};
struct stmt_finalizer {
  void operator()(sqlite3_stmt* s) const noexcept { sqlite3_finalize(s); }
};

/// One SQLite connection. Not thread-safe: the owner serialises use with its own mutex.
class connection {
 public:
  /// Opens (creating if needed) the file, sets WAL mode and the busy timeout.
  connection(const std::string& path, std::chrono::milliseconds busy_timeout);
  connection(const connection&) = delete;  // the busy handler holds `this`
  connection& operator=(const connection&) = delete;

  sqlite3* get() const noexcept { return m_db.get(); }
  const std::string& path() const noexcept { return m_path; }

  /// Runs one or more statements that return no rows.
  void exec(std::string_view sql);

  /// Throws eventq::error for a failed call, naming `what` was being done.
  [[noreturn]] void fail(int rc, std::string_view what) const;

  /// Rows changed by the latest statement.
  std::size_t changes() const noexcept;

 private:
  static int on_busy(void* self, int count) noexcept;

  std::string m_path;
  std::chrono::milliseconds m_busy_timeout;
  std::chrono::steady_clock::time_point m_busy_since{};
  std::unique_ptr<sqlite3, db_closer> m_db;
};

/// A prepared statement, reset after each use. Not thread-safe.
class statement {
 public:
  statement(connection& conn, std::string_view sql);

  statement& bind(int index, std::int64_t value);
  statement& bind(int index, std::string_view value);
  statement& bind_null(int index);
  /// Binds text without copying it: `value` must stay valid until the statement is reset
  /// (run() and a failed step() reset it).
  statement& bind_static(int index, std::string_view value);

  /// Steps once: true if a row is available.
  bool step();
  /// Steps to completion for statements that return no rows.
  void run();
  /// Resets the statement and clears bindings so it can be used again.
  void reset() noexcept;

  bool is_null(int col) const noexcept;
  std::int64_t int64(int col) const noexcept;
  double real(int col) const noexcept;
  std::string text(int col) const;
  std::string_view text_view(int col) const noexcept;

 private:
  connection* m_conn;
  std::unique_ptr<sqlite3_stmt, stmt_finalizer> m_stmt;
  std::string m_sql;
};

/// BEGIN IMMEDIATE ... COMMIT; rolls back in the destructor unless committed. Never throws
/// from the destructor.
class write_transaction {
 public:
  explicit write_transaction(connection& conn);
  ~write_transaction();
  void commit();
  write_transaction(const write_transaction&) = delete;
  write_transaction& operator=(const write_transaction&) = delete;

 private:
  connection& m_conn;
  bool m_done = false;
};

/// BEGIN (deferred) ... COMMIT around reads, so that several statements see one snapshot.
/// Ends in the destructor; a failed COMMIT of a read-only transaction is rolled back.
class read_transaction {
 public:
  explicit read_transaction(connection& conn) : m_conn(conn) { m_conn.exec("BEGIN"); }
  ~read_transaction() {
    if (sqlite3_exec(m_conn.get(), "COMMIT", nullptr, nullptr, nullptr) != SQLITE_OK) {
      sqlite3_exec(m_conn.get(), "ROLLBACK", nullptr, nullptr, nullptr);  // nothing was written
    }
  }
  read_transaction(const read_transaction&) = delete;
  read_transaction& operator=(const read_transaction&) = delete;

 private:
  connection& m_conn;
};

}  // namespace eventq::sqlite
