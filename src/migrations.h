// Migrations embedded in the library (generated from migrations/<backend>/*.sql).
#pragma once

#include <span>

namespace eventq::detail {

struct migration {
  int version;       ///< the file's number: applied in increasing order
  const char* name;  ///< the file name without .sql, recorded in EventQueueSchema
  const char* sql;   ///< the statements
};

std::span<const migration> sqlite_migrations();
std::span<const migration> postgres_migrations();

}  // namespace eventq::detail
