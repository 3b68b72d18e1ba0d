#include "delivery.h"

#include "util.h"

#include <future>
#include <string>
#include <system_error>
#include <thread>
#include <utility>

namespace eventq::detail {

namespace {

// The reader whose poll cycle (or idle()) this thread runs now: a listener of a session without
// threads runs inside it, and must not start another (it would wait for itself).
thread_local const delivery* t_polling = nullptr;
struct polling_mark {
  const delivery* prev;
  explicit polling_mark(const delivery* d) : prev(std::exchange(t_polling, d)) {}
  ~polling_mark() { t_polling = prev; }
  polling_mark(const polling_mark&) = delete;
  polling_mark& operator=(const polling_mark&) = delete;
};

// Pages with at least this many rows are checked on two threads (see delivery::deliver()).
constexpr std::size_t k_parallel_check_rows = 128;

// Counts the large pages being checked in this process; a page gets a helper thread only
// while they number at most half the cores (see delivery::deliver()).
std::atomic<unsigned> g_pages_checking{0};
struct busy_checking {
  bool counted;
  bool with_helper = false;
  explicit busy_checking(bool large) : counted(large) {
    if (!counted) return;
    unsigned cores = std::max(2u, std::thread::hardware_concurrency());
    with_helper = 2 * (g_pages_checking.fetch_add(1) + 1) <= cores;
  }
  ~busy_checking() {
    if (counted) g_pages_checking.fetch_sub(1);
  }
  busy_checking(const busy_checking&) = delete;
  busy_checking& operator=(const busy_checking&) = delete;
};

}  // namespace

std::vector<rejected_row> scan_rejected(storage& store, const keyring& keys, const options& opts,
                                        std::size_t max_rows) {
  std::vector<rejected_row> out;
  row_check_policy policy{&keys, verify_mode::required, opts.max_payload_bytes,
                          std::chrono::system_clock::now()};
  std::string at = store.oldest_cursor();
  read_result page;
  do {
    page = store.read(at, opts.page_size);
    for (auto& row : page.events) {
      if (out.size() >= max_rows) return out;
      auto checked = check_row(row, policy);
      if (checked.verdict == row_verdict::ok) continue;
      out.push_back(rejected_row{std::move(row), std::string(to_string(checked.verdict)),
                                 std::move(checked.reason)});
    }
    at = page.next_cursor;
  } while (page.more);
  return out;
}

delivery::delivery(storage& store, const options& opts, const keyring& keys, dispatcher& disp,
                   queue_counters& counters, control_inbox& inbox, consumer_set& consumers,
                   lease_fence& fence, std::string token)
    : m_store(store),
      m_opts(opts),
      m_keys(keys),
      m_disp(disp),
      m_counters(counters),
      m_inbox(inbox),
      m_consumers(consumers),
      m_fence(fence),
      m_token(std::move(token)),
      m_regains_seen(fence.regains()) {
  auto stored = m_store.load_cursor(m_opts.instance_name);
  if (stored) {
    m_cursor = resume_from(std::move(*stored));
  } else {
    m_cursor =
        m_opts.start == start_position::now ? m_store.head_cursor() : m_store.oldest_cursor();
    write_cursor(m_cursor);
  }
  m_stored = m_cursor_copy = m_cursor;
}

std::string delivery::cursor() const {
  std::lock_guard lk(m_cursor_copy_mutex);
  return m_cursor_copy;
}

bool delivery::targets_me(const event_record& r) const {
  switch (r.mode) {
    case raise_mode::both:
    case raise_mode::none:  // meant for nobody: every instance refuses and counts it
      return true;
    case raise_mode::globally:
      return r.instance != m_opts.instance_name;
    case raise_mode::locally:
      return r.instance == m_opts.instance_name;
  }
  return false;
}

std::size_t delivery::poll(const std::function<bool()>& keep_going) {
  refuse_reentry("poll_once()");
  std::lock_guard lk(m_poll_mutex);
  if (!holds_name()) return 0;
  polling_mark mark(this);
  auto t0 = std::chrono::steady_clock::now();
  ++m_counters.polls;
  if (m_removed) {
    dispatcher::scope scope(m_disp);
    tell_missed(m_removed->reason, m_removed->old_cursor);
    m_removed.reset();
    write_cursor(m_cursor);  // replaces the marker: nothing after m_cursor is finished yet
  }
  if (!m_backlog_checked) {
    if (m_opts.max_backlog > 0) check_backlog();
    m_backlog_checked = true;
  }
  for (const auto& r : m_inbox.take()) carry_out(r);
  std::size_t count = 0;
  m_refused = {};
  // Stops between rows too once the name is lost (maintenance saw it at a renewal).
  const std::function<bool()> go = [&] { return m_fence.held() && keep_going(); };
  try {
    count = poll_pages(go);
  } catch (...) {
    log_refusals();  // what was refused before the failure is said too
    throw;
  }
  log_refusals();
  m_counters.delivered += count;
  m_counters.last_poll_us =
      std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0)
          .count();
  return count;
}

// The database reads only the types someone here wants, and only when every subscriber and
// every session listener names its types (one that wants all of them needs every row). No
// subscriber at all: every row, as before (each is counted as of unknown type). The rows are
// still checked here one by one (dispatcher, event_filter), so a backend that ignores the
// filter only reads more.
type_filter delivery::read_filter() {
  auto types = m_disp.wanted_types();
  if (!types) return {};
  for (const auto& c : m_consumers.snapshot()) {
    auto more = c->wanted_types();
    if (!more) return {};
    types->insert(types->end(), more->begin(), more->end());
  }
  return type_filter::of(*types, m_opts.instance_name);
}

std::size_t delivery::poll_pages(const std::function<bool()>& keep_going) {
  std::size_t count = 0;
  read_result page;
  do {
    // A listener added while the page was read may want rows the filter left out, raised
    // after it was added: read the page again with the filter that includes it. (Rows that
    // were already in the table when it was added are not promised to it.)
    auto filter = read_filter();
    for (;;) {
      page = m_store.read(m_cursor, m_opts.page_size, filter);
      auto now = read_filter();
      if (filter.all() || (now.names == filter.names && now.prefixes == filter.prefixes)) break;
      filter = std::move(now);
    }
    const std::uint64_t base = m_consumers.reserve(page.events.size());
    bool whole_page = true;
    {
      dispatcher::scope scope(m_disp);
      if (page.notice) log(log_level::warning, *page.notice);
      if (page.missed) tell_missed(*page.missed, m_cursor);
      count += deliver(page.events, base, keep_going, whole_page);
    }
    // A page left half-way (stop() between two rows, or while a session's buffer was full)
    // keeps the cursor before it: its rows are delivered again, at least once, by the next poll.
    if (!whole_page) break;
    // Rows the database left out by type, addressed to this instance: no handler here wanted
    // them, so they count as they would have had they been read.
    m_counters.unknown_types += page.skipped;
    m_consumers.run_due();  // listeners of sessions without threads run here
    if (page.next_cursor != m_cursor) {
      m_cursor = page.next_cursor;
      m_consumers.page_read(base + page.events.size(), m_cursor);
    }
    store_finished();
  } while (page.more && keep_going());
  return count;
}

// While another process holds the name, this one neither delivers nor stores. Once it holds the
// name again, it continues from the cursor stored for the name: the other holder may have moved
// it. REQUIRES: m_poll_mutex held.
bool delivery::holds_name() {
  if (!m_fence.held()) return false;
  const auto regains = m_fence.regains();
  if (regains == m_regains_seen) return true;
  m_regains_seen = regains;
  m_refusal_told = false;
  if (auto stored = m_store.load_cursor(m_opts.instance_name)) {
    m_cursor = resume_from(std::move(*stored));
    m_consumers.page_read(m_consumers.reserve(0), m_cursor);
    m_stored = m_cursor;
    std::lock_guard c(m_cursor_copy_mutex);
    m_cursor_copy = m_cursor;
  }
  return true;
}

// Stores `cursor` as the lease holder. A refusal while another process holds the name (this
// one's lease lapsed and the name was taken over) is counted, logged once per loss, and stops
// delivery until the maintenance thread (asked to renew now) holds the name again.
bool delivery::write_cursor(const std::string& cursor) {
  if (m_store.store_cursor_fenced(m_opts.instance_name, m_token, cursor)) return true;
  if (m_fence.reclaim() && m_store.store_cursor_fenced(m_opts.instance_name, m_token, cursor)) {
    return true;  // nobody held the name: registered again under this token
  }
  ++m_counters.cursor_writes_refused;
  m_fence.lose();
  log(std::exchange(m_refusal_told, true) ? log_level::debug : log_level::error,
      "cursor write refused by the database: instance name '" + m_opts.instance_name +
          "' is held by another process now (this process's lease lapsed and the name was "
          "taken over); stopped delivering until this process holds the name again");
  m_fence.check_soon();
  return false;
}

void delivery::refuse_reentry(const char* call) const {
  if (m_disp.in_dispatch() || t_polling == this) {
    throw error(errc::invalid_argument,
                std::string(call) +
                    " called from an event handler of the same queue: it would wait for the "
                    "poll that runs the handler. Call it from another thread, or after the "
                    "handler returns");
  }
}

// Checks and delivers one page's rows in order; returns those delivered to a handler.
// REQUIRES: m_poll_mutex held, inside a dispatcher scope.
//
// Checking a row (parsing its JSON, verifying its signature) is most of a poll's work. On a
// large page (a backlog) a helper thread checks the second half while this thread checks and
// delivers the first; delivery stays on this thread, in order. Only while the process checks
// few large pages at once: with a page per core already (several instances draining), a
// helper would only take turns with them.
std::size_t delivery::deliver(const std::vector<event_record>& rows, std::uint64_t base,
                              const std::function<bool()>& keep_going, bool& whole_page) {
  // With sessions attached, the page's accepted rows are kept (parsed) to be handed to them
  // after the queue's own subscribers had them; rows only sessions may want wait in `deferred`.
  const bool sessions = !m_consumers.snapshot().empty();
  std::vector<delivered_ptr> handed;
  std::vector<std::size_t> deferred;
  auto policy = check_policy(m_opts.verify);
  std::vector<checked_row> checked(rows.size());
  auto check = [&](std::size_t i) {
    if (targets_me(rows[i])) checked[i] = check_row(rows[i], policy);
  };
  std::size_t split = rows.size();
  busy_checking busy(rows.size() >= k_parallel_check_rows);
  std::future<void> helper;  // destroyed (joined) before `checked`
  if (busy.with_helper) {
    try {
      helper = std::async(std::launch::async, [&check, half = rows.size() / 2, n = rows.size()] {
        for (std::size_t i = half; i < n; ++i) check(i);
      });
      split = rows.size() / 2;
    } catch (const std::system_error& e) {  // no thread to be had: check on this one
      // Nothing is lost (the page is checked on this thread); said once per queue.
      if (!m_helper_warned.exchange(true)) {
        log(log_level::warning,
            std::string("cannot start a thread to check a large page, checking on the "
                        "poller's alone (said once): ") +
                e.what());
      }
    }
  }
  std::size_t count = 0;
  for (std::size_t i = 0; i < rows.size(); ++i) {
    if (i < split) {
      check(i);
    } else if (i == split) {
      helper.get();  // rethrows what checking threw
    }
    const auto& row = rows[i];
    if (!targets_me(row)) continue;
    if (!keep_going()) {  // stop() waits for the running handler, not for the page
      whole_page = false;
      break;
    }
    if (checked[i].verdict != row_verdict::ok) {
      count_refusal(row, checked[i]);
      continue;
    }
    const nlohmann::json* data = &checked[i].data;
    if (sessions) {
      handed.push_back(std::make_shared<const delivered_event>(
          delivered_event{base + i + 1, row, std::move(checked[i].data)}));
      data = &handed.back()->data;
      if (!m_disp.handles(row.type)) {
        deferred.push_back(handed.size() - 1);
        continue;
      }
    }
    auto out = m_disp.dispatch(row, *data);
    checked[i] = {};  // a page of large payloads is not held parsed in full
    if (out.delivered) ++count;
    if (out.unknown_type) ++m_counters.unknown_types;
    if (out.undecodable) ++m_counters.undecodable;
    m_counters.handler_errors += out.handler_errors;
  }
  if (sessions && whole_page) {
    count += hand_to_sessions(handed, deferred, base + rows.size(), keep_going, whole_page);
  }
  return count;
}

// Offers the page's rows to every session (which may wait for room in its buffer); then the
// rows that neither a session nor a subscriber wanted are counted as of unknown type. Returns
// the rows only sessions took. REQUIRES: m_poll_mutex held, inside a dispatcher scope.
std::size_t delivery::hand_to_sessions(std::vector<delivered_ptr>& handed,
                                       const std::vector<std::size_t>& deferred,
                                       std::uint64_t page_end,
                                       const std::function<bool()>& keep_going, bool& whole_page) {
  std::vector<char> taken(handed.size(), 0);
  const std::function<bool()> stopping = [&keep_going] { return !keep_going(); };
  for (const auto& c : m_consumers.snapshot()) {
    if (!c->consume(handed, page_end, stopping, taken)) {
      whole_page = false;
      return 0;
    }
  }
  std::size_t count = 0;
  for (std::size_t i : deferred) {
    if (taken[i]) {
      ++count;
      continue;
    }
    auto out = m_disp.dispatch(handed[i]->row, handed[i]->data);  // counts and logs it
    if (out.unknown_type) ++m_counters.unknown_types;
  }
  return count;
}

// options::max_backlog: more rows after the cursor than allowed means a jump to the head and
// one Missed. REQUIRES: m_poll_mutex held.
void delivery::store_finished() {
  if (!m_fence.held()) return;
  auto c = m_consumers.storable();
  if (!c || *c == m_stored) return;
  if (!write_cursor(*c)) return;
  m_stored = std::move(*c);
  std::lock_guard lk(m_cursor_copy_mutex);
  m_cursor_copy = m_stored;
}

void delivery::idle_if_free() {
  std::unique_lock lk(m_poll_mutex, std::try_to_lock);
  if (!lk.owns_lock() || !holds_name()) return;
  polling_mark mark(this);
  m_consumers.run_due();
  store_finished();
}

std::optional<std::chrono::steady_clock::time_point> delivery::idle() {
  std::lock_guard lk(m_poll_mutex);
  if (!holds_name()) return std::nullopt;
  polling_mark mark(this);
  auto due = m_consumers.run_due();
  store_finished();
  return due;
}

row_check_policy delivery::check_policy(verify_mode verify) const {
  return row_check_policy{&m_keys, verify, m_opts.max_payload_bytes,
                          std::chrono::system_clock::now()};
}

void delivery::count_refusal(const event_record& row, const checked_row& checked) {
  switch (checked.verdict) {
    case row_verdict::unauthentic:
      ++m_counters.unauthentic;
      ++m_refused.unauthentic;
      break;
    case row_verdict::oversized:
      ++m_counters.oversized;
      ++m_refused.oversized;
      break;
    case row_verdict::malformed:
    case row_verdict::ok:
      ++m_counters.undecodable;
      ++m_refused.malformed;
      break;
  }
  if (m_refused.total() == 1) m_refused.first_id = row.id;
  m_refused.last_id = row.id;
  // One table of unsigned rows must not fill the log: the detail is at debug, the poll cycle
  // says it once (log_refusals).
  log(log_level::debug, "event " + std::to_string(row.id) + " skipped, " +
                            std::string(to_string(checked.verdict)) + ": " + checked.reason);
}

void delivery::log_refusals() {
  const auto& r = m_refused;
  if (r.total() == 0) return;
  std::string counts;
  auto add = [&](std::size_t n, const char* what) {
    if (n == 0) return;
    if (!counts.empty()) counts += ", ";
    counts += std::to_string(n) + " " + what;
  };
  add(r.unauthentic, "unauthentic");
  add(r.oversized, "oversized");
  add(r.malformed, "malformed");
  log(log_level::error,
      "refused " + std::to_string(r.total()) + (r.total() == 1 ? " row" : " rows") +
          " in this poll (" + counts + "), ids " + std::to_string(r.first_id) + " to " +
          std::to_string(r.last_id) +
          ": not delivered; `eventq verify` lists them, the log has each at debug level");
  m_refused = {};
}

std::vector<rejected_row> delivery::find_rejected(std::size_t max_rows) {
  refuse_reentry("find_rejected_rows()");
  std::lock_guard lk(m_poll_mutex);
  return scan_rejected(m_store, m_keys, m_opts, max_rows);
}

}  // namespace eventq::detail
