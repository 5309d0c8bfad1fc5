#include "node_actor.hpp"

#include <algorithm>
#include <sstream>

#include <caf/all.hpp>

#include "nettorrent/error.hpp"
#include "nettorrent/wire.hpp"
#include "spawn.hpp"
#include "status.hpp"

namespace nettorrent {

namespace {

using self_ptr = node_actor::stateful_pointer<node_state>;

void stop_hosted(self_ptr self) {
  for (const auto& [key, a] : self->state.hosted)
    self->send_exit(a, caf::exit_reason::user_shutdown);
  self->state.hosted.clear();
}

} // namespace

node_actor::behavior_type node(node_actor::stateful_pointer<node_state> self, node_spec spec) {
  self->state.spec = std::move(spec);
  self->set_down_handler([self](caf::down_msg& msg) {
    if (msg.source == self->state.coordinator.address()) {
      stop_hosted(self);
      self->quit(msg.reason);
    }
  });
  return {
      [=](atom::join, coordinator_actor& coord) -> caf::result<atom::ok> {
        auto& st = self->state;
        // A join may be asked again while its hello is unanswered (a slow
        // link): the hello goes again, which the coordinator takes once.
        if (st.admitted || (st.coordinator && st.coordinator != coord))
          return caf::make_error(caf::sec::invalid_argument,
                                 "node " + st.spec.id + " joined a run already");
        if (!st.coordinator) {
          st.coordinator = coord;
          self->monitor(coord);
        }
        if (self->current_sender() && self->current_sender()->node() == self->node())
          st.joiner = self->current_sender();
        auto rp = self->make_response_promise<atom::ok>();
        self->request(coord, caf::infinite, atom::hello::value, to_node_name(st.spec.id),
                      st.spec.cluster_hash, wire_version, byte_mark{byte_order_mark()})
            .then([self, rp](atom::ok) mutable {
                    self->state.admitted = true;
                    rp.deliver(atom::ok::value);
                  },
                  [rp](caf::error& err) mutable { rp.deliver(std::move(err)); });
        return rp;
      },
      [=](atom::spawn, const actor_key& key, std::uint32_t incarnation) -> caf::result<caf::actor> {
        auto& st = self->state;
        if (!st.coordinator)
          return caf::make_error(caf::sec::invalid_argument,
                                 "node " + st.spec.id + " has not joined a run");
        caf::actor a;
        try {
          a = spawn_run_actor(self->system(), st.spec.cfg, st.spec.data, key, incarnation,
                              st.spec.process_metrics);
        } catch (const error& e) {
          return caf::make_error(caf::sec::invalid_argument, "node " + st.spec.id + " cannot spawn "
                                                                 + describe(key) + ": " + e.what());
        }
        // Spawned again after a loss: forget the earlier one of that key.
        auto& h = st.hosted;
        h.erase(std::remove_if(h.begin(), h.end(), [&](const auto& x) { return x.first == key; }),
                h.end());
        h.emplace_back(key, a);
        self->send(st.coordinator, atom::reg::value, key, incarnation, a);
        return a;
      },
      [=](atom::hosts) {
        std::vector<actor_key> keys;
        for (const auto& [key, a] : self->state.hosted)
          keys.push_back(key);
        return keys;
      },
      [=](atom::hosts, const actor_key& key) -> caf::result<caf::actor> {
        for (const auto& [k, a] : self->state.hosted)
          if (k == key)
            return a;
        return caf::make_error(caf::sec::invalid_argument,
                               "node " + self->state.spec.id + " does not host " + describe(key));
      },
      [=](atom::stop) {
        stop_hosted(self);
        return atom::ok::value;
      },
      [=](atom::placed, const std::string& plan) {
        const auto& sender = self->current_sender();
        if (!sender || sender->address() != self->state.coordinator.address())
          return; // only the coordinator of the run this node joined
        std::string out;
        std::istringstream lines{plan.substr(0, 1u << 16)};
        for (std::string line; std::getline(lines, line);)
          out += "node " + self->state.spec.id + ": " + line + "\n";
        caf::aout(self) << out << std::flush;
      },
      [=](atom::leave) {
        auto& st = self->state;
        const std::string me = "node " + st.spec.id;
        if (self->current_sender() && self->current_sender()->node() != self->node())
          return; // only this process asks
        if (!st.admitted) { // the process exits on a signal before admission
          caf::aout(self) << me << ": not admitted to a run yet: nothing to leave" << std::endl;
          return;
        }
        caf::aout(self) << me << ": asking the coordinator to leave at the next sync round"
                        << std::endl;
        self->request(st.coordinator, std::chrono::seconds(30), atom::leave::value,
                      to_node_name(st.spec.id))
            .then(
                [self, me](const std::string& why) {
                  if (!why.empty())
                    caf::aout(self) << me << ": the coordinator refused the leave: " << why
                                    << " (send SIGTERM again to exit at once)" << std::endl;
                },
                [self, me](caf::error& e) {
                  caf::aout(self) << me << ": no answer to the leave request: "
                                  << self->system().render(e)
                                  << " (send SIGTERM again to exit at once)" << std::endl;
                });
      },
      [=](atom::released) {
        const auto& sender = self->current_sender();
        if (!sender || sender->address() != self->state.coordinator.address())
          return; // only the coordinator of the run this node joined
        stop_hosted(self);
        if (self->state.joiner)
          caf::anon_send(caf::actor_cast<caf::actor>(self->state.joiner), atom::released::value);
        self->quit(caf::exit_reason::normal);
      },
      [=](atom::dump) {
        std::vector<std::pair<std::string, caf::actor>> who;
        for (const auto& [key, a] : self->state.hosted)
          who.emplace_back(describe(key), a);
        const std::string me = "node " + self->state.spec.id;
        query_status(self, who, std::chrono::seconds(5),
                     [self, me](std::vector<status_line>&& lines) {
                       std::string out = me + ": status of the " + std::to_string(lines.size())
                                         + " actors hosted here:\n";
                       for (const auto& l : lines)
                         out += "  " + l.who + ": " + l.what + "\n";
                       caf::aout(self) << out << std::flush;
                     });
      },
  };
}

} // namespace nettorrent
