// An application built against the installed eventq package.
#include <eventq/eventq.h>

#include <iostream>

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  eventq::options o;
  o.instance_name = "consumer";
  eventq::queue q(std::string("sqlite:") + argv[1], o);
  int got = 0;
  auto sub = q.subscribe_raw("hello", [&](const eventq::event_record&, const nlohmann::json& j) {
    got += j.at("n").get<int>();
  });
  q.raise_raw("hello", {{"n", 41}}, eventq::raise_mode::locally);
  q.poll_once();
  std::cout << "received " << got << '\n';
  return got == 41 ? 0 : 1;
}
