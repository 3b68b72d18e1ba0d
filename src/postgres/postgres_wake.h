// PostgreSQL wake-ups: the LISTEN receiver. Internal to src/postgres/.
#pragma once

#include <atomic>
#include <pqxx/pqxx>
#include <string>

#include "postgres/postgres_storage.h"

namespace eventq::postgres {

class postgres_storage::listener final : public pqxx::notification_receiver {
 public:
  listener(pqxx::connection& c, const std::string& channel, std::atomic<bool>& flag)
      : pqxx::notification_receiver(c, channel), m_flag(flag) {}
  void operator()(const std::string&, int) override { m_flag = true; }

 private:
  std::atomic<bool>& m_flag;
};

}  // namespace eventq::postgres
