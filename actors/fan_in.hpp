// One fan-in for an actor that asks n peers and answers once: every reply
// goes to its own slot, and when the last is in, `done` turns the slots into
// the answer. The first error is the answer instead and later replies are
// dropped; an exception from `done` (a reply that does not fit) becomes an
// invalid_argument error prefixed with `what`. The swarm leader's sync,
// restore, collect and statistics requests are such fan-ins.
#pragma once

#include <cstddef>
#include <exception>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <caf/error.hpp>
#include <caf/sec.hpp>
#include <caf/typed_response_promise.hpp>

namespace nettorrent {

/// Asks `n` peers, `ask(i)` returning the response handle of request i
/// (self->request(...)), and answers with `done(replies)`, replies[i] being
/// request i's. With n = 0, `done` runs at once on no replies.
template <class Result, class Reply, class Self, class Ask, class Done>
caf::typed_response_promise<Result> fan_in(Self* self, std::size_t n, const std::string& what,
                                           Ask ask, Done done) {
  struct gather {
    caf::typed_response_promise<Result> promise;
    std::vector<Reply> replies;
    std::size_t pending = 0;
    bool answered = false;
    std::string what;
    Done done;

    void fail(caf::error err) {
      if (!answered) {
        answered = true;
        promise.deliver(std::move(err));
      }
    }
    void finish() {
      answered = true;
      try {
        promise.deliver(done(replies));
      } catch (const std::exception& e) {
        promise.deliver(caf::make_error(caf::sec::invalid_argument, what + ": " + e.what()));
      }
    }
  };
  auto g = std::make_shared<gather>(
      gather{self->template make_response_promise<Result>(), std::vector<Reply>(n), n, false,
             what, std::move(done)});
  if (n == 0) {
    g->finish();
    return g->promise;
  }
  for (std::size_t i = 0; i < n; ++i)
    ask(i).then(
        [g, i](Reply& x) {
          if (g->answered)
            return;
          g->replies[i] = std::move(x);
          if (--g->pending == 0)
            g->finish();
        },
        [g](caf::error& err) { g->fail(std::move(err)); });
  return g->promise;
}

} // namespace nettorrent
