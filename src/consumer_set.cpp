#include "consumer_set.h"

#include <algorithm>
#include <limits>

namespace eventq::detail {

void consumer_set::attach(std::shared_ptr<page_consumer> c) {
  std::lock_guard lk(m_mutex);
  c->attach_at(m_position);
  m_consumers.push_back(std::move(c));
}

std::vector<std::shared_ptr<page_consumer>> consumer_set::snapshot() {
  std::lock_guard lk(m_mutex);
  std::erase_if(m_consumers, [](const auto& c) { return c->closed(); });
  return m_consumers;
}

std::uint64_t consumer_set::reserve(std::size_t n) {
  std::lock_guard lk(m_mutex);
  auto base = m_position;
  m_position += n;
  return base;
}

void consumer_set::page_read(std::uint64_t page_end, std::string cursor) {
  std::lock_guard lk(m_mutex);
  if (!m_pages.empty() && m_pages.back().first == page_end) {
    m_pages.back().second = std::move(cursor);  // an empty page moved the cursor on
  } else {
    m_pages.emplace_back(page_end, std::move(cursor));
  }
}

std::optional<std::string> consumer_set::storable() {
  std::lock_guard lk(m_mutex);
  if (m_pages.empty()) return std::nullopt;
  auto low = std::numeric_limits<std::uint64_t>::max();
  for (const auto& c : m_consumers) low = std::min(low, c->finished());
  std::optional<std::string> out;
  while (!m_pages.empty() && m_pages.front().first <= low) {
    out = std::move(m_pages.front().second);
    m_pages.pop_front();
  }
  return out;
}

std::optional<std::chrono::steady_clock::time_point> consumer_set::run_due() {
  std::optional<std::chrono::steady_clock::time_point> due;
  for (const auto& c : snapshot()) {
    auto d = c->run_due();
    if (d && (!due || *d < *due)) due = d;
  }
  return due;
}

void consumer_set::shut_down_all() noexcept {
  std::vector<std::shared_ptr<page_consumer>> all;
  {
    std::lock_guard lk(m_mutex);
    all.swap(m_consumers);
  }
  for (const auto& c : all) c->shut_down();
}

}  // namespace eventq::detail
