// The C# example of Optimizely's "Use the Event API" (seed 000), ported line by line to
// eventq's registry (eventq/registry.h). Each C# line stands above its C++ counterpart.
//
// Two sites of a load-balanced farm run in this one process, each with its own queue (an
// instance of the shared database), registry and module: site-2 raises, site-1's cache hears it,
// site-2's handler skips its own raise. Exits 0 once site-1 got both events.
//
//   eventq_episerver_example [DB_FILE]     (default: a fresh file under /tmp)
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <memory>
#include <mutex>
#include <string>

#include "eventq/eventq.h"

namespace example {

using namespace std::chrono_literals;

// public class MyEventData {
struct my_event_data {
  // public string Message { get; set; }
  std::string message;
  // public int MyNumber { get; set; }
  int my_number = 0;
};
// (data contract and JSON serialization: nlohmann's to_json/from_json)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(my_event_data, message, my_number)

class my_module {
 public:
  explicit my_module(std::string site) : m_site(std::move(site)) {}

  // Generate unique id for your event and the raiser
  // private static readonly Guid RaiserId = new Guid("F080ABD6-9BB0-4DC0-9D95-265472FA1CC6");
  //   One per running instance rather than one per program: a fixed id is the same on every
  //   server of the farm, and the check in my_event_raised would then skip their events too.
  //   (n.local says "raised here" directly; see README, "EPiServer-style events".)
  const eventq::guid raiser_id = eventq::guid::random();
  // private static readonly Guid EventId = new Guid("888B5C89-9B0F-4E67-A3B0-6E660AB9A60F");
  static inline const eventq::guid event_id =
      eventq::guid::parse("888B5C89-9B0F-4E67-A3B0-6E660AB9A60F");

  // public void Initialize(InitializationEngine context) {
  void initialize(eventq::event_registry& registry) {
    m_registry = &registry;
    // Set up event handler
    // var myEvent = context.Locate.Advanced.GetInstance<IEventRegistry>().Instance.Get(EventId);
    eventq::remote_event& my_event = registry.get(event_id);
    // myEvent.Raised += myEvent_Raised;
    m_raised =
        my_event.on_raised([this](const eventq::event_notification& e) { my_event_raised(e); });
    // (Missed: the seed subscribes "optionally"; a cache flushes everything there.)
    m_missed = my_event.on_missed([this](const eventq::missed_info& info) {
      say("missed events (" + info.reason + "): flushing the whole cache");
    });
  }

  // void myEvent_Raised(object sender, EventNotificationEventArgs e) {
  void my_event_raised(const eventq::event_notification& e) {
    // don't process events locally raised
    // if (e.RaiserId != RaiserId) {
    if (e.raiser_id != raiser_id) {
      // Do something, e.g. invalidate cache
      std::string what =
          e.param.is_string() ? e.param.get<std::string>() : e.param.get<my_event_data>().message;
      say("invalidating the cache entry for '" + what + "' (raised by " + e.instance + ")");
      std::lock_guard lk(m_mutex);
      ++m_invalidations;
      m_cv.notify_all();
    } else {
      say("skipping my own event (local: " + std::string(e.local ? "yes" : "no") + ")");
    }
  }

  // public void RaiseEvent(string message) {
  void raise_event(const std::string& message) {
    // ServiceLocator.Current.GetInstance<IEventRegistry>().Get(EventId).Raise(RaiserId, message);
    m_registry->get(event_id).raise(raiser_id, message);
  }

  // The custom event argument of the seed's second example.
  void raise_event(const my_event_data& data) { m_registry->get(event_id).raise(raiser_id, data); }

  bool wait_for_invalidations(int n, std::chrono::seconds timeout) {
    std::unique_lock lk(m_mutex);
    return m_cv.wait_for(lk, timeout, [&] { return m_invalidations >= n; });
  }

 private:
  void say(const std::string& what) {
    std::printf("%-7s| %s\n", m_site.c_str(), what.c_str());
    std::fflush(stdout);
  }

  std::string m_site;
  eventq::event_registry* m_registry = nullptr;
  std::mutex m_mutex;
  std::condition_variable m_cv;
  int m_invalidations = 0;
  eventq::subscription m_raised, m_missed;
};

// One site of the farm: its instance of the queue, its registry (IEventRegistry), its module.
struct site {
  site(const std::string& url, const std::string& name)
      : queue(url, options_for(name)), registry(queue), module(name) {
    module.initialize(registry);
    queue.start();  // other sites' raises arrive on the queue's poller thread
  }
  static eventq::options options_for(const std::string& name) {
    eventq::options o;
    o.instance_name = name;
    return o;
  }
  eventq::queue queue;
  eventq::event_registry registry;
  my_module module;
};

}  // namespace example

int main(int argc, char** argv) {
  std::string path = argc > 1 ? argv[1]
                              : (std::filesystem::temp_directory_path() /
                                 ("eventq-episerver-" + std::to_string(getpid()) + ".db"))
                                    .string();
  bool ok = false;
  try {
    example::site site1("sqlite:" + path, "site-1");
    example::site site2("sqlite:" + path, "site-2");
    site2.module.raise_event("page 42");
    site2.module.raise_event(example::my_event_data{"Hello", 42});
    ok = site1.module.wait_for_invalidations(2, std::chrono::seconds(30));
  } catch (const std::exception& e) {
    std::cerr << "eventq_episerver_example: " << e.what() << '\n';
    return 1;
  }
  std::cout << (ok ? "site-1 heard both events of site-2\n"
                   : "site-1 did not hear site-2 within 30 s\n");
  if (argc <= 1) {
    for (const char* suffix : {"", "-wal", "-shm"}) std::filesystem::remove(path + suffix);
  }
  return ok ? 0 : 1;
}
