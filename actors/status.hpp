// One-line status texts of the actors, for the stall watchdog's dump and
// SIGUSR1: what each actor holds that is waiting for someone else.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <caf/actor.hpp>
#include <caf/error.hpp>

#include "atoms.hpp"

namespace nettorrent {

/// "3 [17 18 19]": how many batch ids `keys` holds and the lowest few, in
/// order. Works on any set or map keyed by batch id.
template <class Container>
std::string batch_list(const Container& keys, std::size_t shown = 6) {
  std::vector<std::uint64_t> ids;
  ids.reserve(keys.size());
  for (const auto& k : keys) {
    if constexpr (std::is_same_v<std::decay_t<decltype(k)>, std::uint64_t>)
      ids.push_back(k);
    else
      ids.push_back(k.first);
  }
  std::sort(ids.begin(), ids.end());
  std::string out = std::to_string(ids.size());
  if (ids.empty())
    return out;
  out += " [";
  for (std::size_t i = 0; i < ids.size() && i < shown; ++i)
    out += (i > 0 ? " " : "") + std::to_string(ids[i]);
  if (ids.size() > shown)
    out += " ...";
  return out + "]";
}

/// One actor's answer to a status request.
struct status_line {
  std::string who;     ///< "replica 0 worker"
  std::string what;    ///< its status text; empty if it did not answer
  bool answered = false;
};

/// Asks every actor of `who` for its status (at most `timeout`) and calls
/// `done` once with every answer, in `who`'s order; an actor that does not
/// answer in time (a frozen or unreachable node) is marked unanswered.
template <class Self>
void query_status(Self self, const std::vector<std::pair<std::string, caf::actor>>& who,
                  std::chrono::milliseconds timeout,
                  std::function<void(std::vector<status_line>&&)> done) {
  struct gather {
    std::vector<status_line> lines;
    std::size_t open = 0;
    std::function<void(std::vector<status_line>&&)> done;
    void one() {
      if (--open == 0)
        done(std::move(lines));
    }
  };
  auto g = std::make_shared<gather>();
  g->done = std::move(done);
  g->open = who.size();
  for (const auto& [name, a] : who)
    g->lines.push_back(status_line{name, "", false});
  if (who.empty()) {
    g->done(std::move(g->lines));
    return;
  }
  for (std::size_t i = 0; i < who.size(); ++i) {
    if (!who[i].second) {
      g->lines[i].what = "no handle (not registered, or stopped)";
      g->one();
      continue;
    }
    self->request(who[i].second, timeout, atom::status::value)
        .then(
            [g, i](std::string& text) {
              g->lines[i].what = std::move(text);
              g->lines[i].answered = true;
              g->one();
            },
            [g, i](caf::error& err) {
              g->lines[i].what = "no answer (" + caf::to_string(err) + ")";
              g->one();
            });
  }
}

} // namespace nettorrent
