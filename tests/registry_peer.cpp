// A separate OS process for the registry tests: one site of seed 001's "Testing the event
// system", a page cache kept fresh by an EPiServer-style event (eventq/registry.h).
//
//   registry_peer view URL NAME RAISER PAGES OUT   site #1: show page 42 (cache it), drop it
//                                                  when Raised by another raiser and show it
//                                                  again; exit once the "stop" event arrives
//   registry_peer edit URL NAME RAISER PAGES OUT   site #2: edit page 42 (write PAGES/42),
//                                                  raise the event, keep receiving for a second
//
// PAGES is the directory of page files (the sites' shared content database); OUT gets one line
// per thing done: "render 42 <text>", "raised local=<0|1> raiser=<guid> param=<json>
// <invalidated|skipped>", and "done" at a clean exit.
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>

#include "eventq/eventq.h"

namespace {

using namespace std::chrono_literals;

const auto k_page_event = eventq::guid::parse("888B5C89-9B0F-4E67-A3B0-6E660AB9A60F");
const auto k_stop_event = eventq::guid::parse("{5E0D5C8A-0000-4000-8000-00000000570F}");
constexpr int k_page = 42;

class site {
 public:
  site(const std::string& url, const std::string& name, const std::string& raiser,
       std::string pages, const std::string& out)
      : m_raiser(eventq::guid::parse(raiser)),
        m_pages(std::move(pages)),
        m_out(out, std::ios::app) {
    eventq::options o;
    o.instance_name = name;
    o.poll_interval = 200ms;
    o.change_check_interval = 10ms;
    m_queue = std::make_unique<eventq::queue>(url, o);
    m_registry = std::make_unique<eventq::event_registry>(*m_queue);
    // C#: myEvent.Raised += myEvent_Raised;
    m_raised = m_registry->get(k_page_event)
                   .on_raised<int>([this](int page, const eventq::event_notification& n) {
                     on_page_event(page, n);
                   });
    m_stop = m_registry->get(k_stop_event).on_raised([this](const eventq::event_notification&) {
      std::lock_guard lk(m_mutex);
      m_stopped = true;
      m_cv.notify_all();
    });
    m_queue->start();
  }

  // Shows the page: from the cache, else from the page file (and cached).
  void render(int page) {
    std::lock_guard lk(m_mutex);
    auto it = m_cache.find(page);
    if (it == m_cache.end()) {
      std::ifstream in(m_pages + "/" + std::to_string(page));
      std::string text;
      std::getline(in, text);
      it = m_cache.emplace(page, text).first;
    }
    write("render " + std::to_string(page) + " " + it->second);
  }

  // Site #2's editor: save the page, then tell the other sites.
  void edit(int page, const std::string& text) {
    {
      std::ofstream f(m_pages + "/" + std::to_string(page), std::ios::trunc);
      f << text << '\n';
    }
    m_registry->get(k_page_event).raise(m_raiser, page);
  }

  bool wait_for_stop(std::chrono::seconds timeout) {
    std::unique_lock lk(m_mutex);
    return m_cv.wait_for(lk, timeout, [this] { return m_stopped; });
  }

  // Stops the poller, then reads whatever is still pending: a duplicate would show up here.
  void finish() {
    m_queue->stop();
    m_queue->poll_once();
    std::lock_guard lk(m_mutex);
    write("done");
  }

 private:
  void on_page_event(int page, const eventq::event_notification& n) {
    bool mine = n.raiser_id == m_raiser;  // C#: if (e.RaiserId != RaiserId)
    {
      std::lock_guard lk(m_mutex);
      if (!mine) m_cache.erase(page);
      write("raised local=" + std::to_string(n.local ? 1 : 0) +
            " raiser=" + n.raiser_id.to_string() + " param=" + n.param.dump() + " " +
            (mine ? "skipped" : "invalidated"));
    }
    if (!mine) render(page);  // the next visitor sees the new text
  }

  // REQUIRES: m_mutex held.
  void write(const std::string& line) { m_out << line << std::endl; }

  eventq::guid m_raiser;
  std::string m_pages;
  std::mutex m_mutex;
  std::condition_variable m_cv;
  std::map<int, std::string> m_cache;
  std::ofstream m_out;
  bool m_stopped = false;
  std::unique_ptr<eventq::queue> m_queue;
  std::unique_ptr<eventq::event_registry> m_registry;
  eventq::subscription m_raised, m_stop;
};

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> a(argv, argv + argc);
  try {
    if (a.size() == 7 && a[1] == "view") {
      site s(a[2], a[3], a[4], a[5], a[6]);
      s.render(k_page);
      if (!s.wait_for_stop(120s)) {
        std::cerr << "registry_peer: no stop event within 120 s\n";
        return 2;
      }
      s.finish();
      return 0;
    }
    if (a.size() == 7 && a[1] == "edit") {
      site s(a[2], a[3], a[4], a[5], a[6]);
      s.edit(k_page, "v2");
      std::this_thread::sleep_for(1s);  // the poller runs: our own row must not come back
      s.finish();
      return 0;
    }
  } catch (const std::exception& e) {
    std::cerr << "registry_peer: " << e.what() << '\n';
    return 1;
  }
  std::cerr << "usage: see the comment at the top of tests/registry_peer.cpp\n";
  return 64;
}
