#include "process_session.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <iostream>
#include <random>
#include <ostream>
#include <set>
#include <string_view>
#include <thread>

#include <caf/all.hpp>
#include <caf/io/all.hpp>
#include <caf/openssl/all.hpp>

#include "coordinator.hpp"
#include "metrics.hpp"
#include "nettorrent/cost_model.hpp"
#include "nettorrent/error.hpp"
#include "nettorrent/placement.hpp"
#include "nettorrent/run_support.hpp"
#include "nettorrent/session.hpp"
#include "nettorrent/signals.hpp"
#include "node_actor.hpp"
#include "spawn.hpp"
#include "tls_shim.hpp"

namespace nettorrent {

namespace {

using clock_type = std::chrono::steady_clock;

caf::timespan seconds(double s) {
  return std::chrono::duration_cast<caf::timespan>(std::chrono::duration<double>(s));
}

/// What one process of a run holds besides its actor system. Declared
/// before the actor system, so the metrics outlive every actor using them.
struct process_resources {
  std::shared_ptr<const data_splits> data;
  std::unique_ptr<metrics> m;
  std::unique_ptr<prometheus::Exposer> exposer;
};

/// The steps before the actor system starts: output directory (the
/// coordinator's process writes the outputs), data, banner, metrics.
process_resources prepare(const run_config& cfg, const std::string& node_id,
                          std::uint16_t metrics_port, bool coordinator, bool needs_data,
                          bool verbose, std::ostream& out, const std::string& prefix) {
  prepare_math_thread(); // the final evaluation runs on this thread
  process_resources res;
  if (coordinator)
    check_output_dir(cfg.training.output_dir);
  if (needs_data || coordinator)
    res.data = load_checked_data(cfg);
  if (coordinator && verbose)
    print_banner(cfg, *res.data, /*actor_run=*/true, out);
  if (cfg.system.metrics) {
    res.m = std::make_unique<metrics>(node_id, run_layout{cfg});
    res.exposer = expose_metrics(*res.m, cfg.system.metrics_bind, metrics_port);
    if (verbose)
      out << prefix << "metrics: http://" << cfg.system.metrics_bind << ':' << metrics_port
          << "/metrics" << std::endl;
  }
  return res;
}

/// The actor system of every process: scheduler from cfg.system, the message
/// types of the protocol, and (clusters) the middleman with heartbeats.
void configure(caf::actor_system_config& sys_cfg, const run_config& cfg, bool networked,
               const tls_config* tls = nullptr) {
  configure_actor_system(sys_cfg, cfg);
  register_message_types(sys_cfg);
  if (!networked)
    return;
  // What crosses nodes is serialised: activations and gradients in the
  // cluster's wire precision (part of the cluster hash, so every node agrees).
  wire_precision_setting().store(cfg.system.wire);
  sys_cfg.load<caf::io::middleman>();
  const bool secure = tls != nullptr && tls->enabled;
  if (secure) {
    // Mutual TLS: certificate, key and CA set (load_node_config checked
    // them), so caf_openssl verifies every peer against the CA.
    sys_cfg.load<caf::openssl::manager>();
    sys_cfg.set("openssl.certificate", tls->certificate);
    sys_cfg.set("openssl.key", tls->key);
    sys_cfg.set("openssl.cafile", tls->ca_file);
    if (!tls->passphrase.empty())
      sys_cfg.set("openssl.passphrase", tls->passphrase);
  }
  // Nodes connect to each other explicitly (the mesh in run_node), with TLS
  // or without. CAF 0.17's automatic connections open plain TCP, bypassing
  // TLS, and connect both ways at once when two nodes learn of each other
  // through a third: they stay off.
  sys_cfg.set("middleman.enable-automatic-connections", false);
  sys_cfg.set("middleman.heartbeat-interval", seconds(cfg.system.heartbeat_interval));
  sys_cfg.set("middleman.connection-timeout", seconds(cfg.system.connection_timeout));
}

/// The state a --resume continues from (null without --resume). Throws
/// naming the file and every key that must not differ.
std::shared_ptr<const run_state> resume_state(const run_config& cfg, const std::string& resume,
                                              std::ostream& out) {
  if (resume.empty())
    return nullptr;
  run_checkpoint ck = load_resume_checkpoint(cfg, resume);
  print_resume(ck.path, ck.state, out);
  return std::make_shared<const run_state>(std::move(ck.state));
}

coordinator_spec make_coordinator_spec(const run_config& cfg, bool verbose, std::uint64_t hash,
                                       const process_resources& res, std::vector<std::string> nodes,
                                       std::vector<std::size_t> placement) {
  coordinator_spec spec;
  spec.cfg = cfg;
  spec.verbose = verbose;
  spec.cluster_hash = hash;
  spec.metrics = res.m ? &res.m->run() : nullptr;
  // Only the coordinator's process reports the nodes (the others keep 0, so
  // the run's value is the maximum over its processes, as for every
  // run-level gauge); every node is alive at the start.
  if (spec.metrics)
    spec.metrics->nodes_alive->Set(static_cast<double>(nodes.size()));
  spec.train_samples = res.data ? res.data->train.size() : 0;
  spec.nodes = std::move(nodes);
  spec.placement = std::move(placement);
  std::random_device rd; // not training's randomness: the seed does not reach it
  spec.halt_token = (std::uint64_t{rd()} << 32 | rd()) | 1;
  return spec;
}

node_actor spawn_node(caf::actor_system& sys, const std::string& id, std::uint64_t hash,
                      const run_config& cfg, const process_resources& res) {
  return sys.spawn(node, node_spec{id, hash, cfg, res.data, res.m.get()});
}

/// Has the node actor join the coordinator. Empty on success, else why not.
template <class Timeout>
std::string join_run(caf::scoped_actor& self, const node_actor& n, const coordinator_actor& coord,
                     Timeout timeout, bool* timed_out = nullptr) {
  std::string why;
  self->request(n, timeout, atom::join::value, coord)
      .receive([](atom::ok) {},
               [&](caf::error& e) {
                 why = self->system().render(e);
                 if (timed_out != nullptr)
                   *timed_out = e == caf::sec::request_timeout;
               });
  return why;
}

/// Runs the coordinator to the end, then writes the outputs and the summary.
run_result run_to_end(caf::scoped_actor& self, const coordinator_actor& coord,
                      const run_config& cfg, const process_resources& res, bool verbose,
                      std::ostream& out) {
  run_result r;
  self->request(coord, caf::infinite, atom::run::value)
      .receive([&](run_result& x) { r = std::move(x); },
               [&](caf::error& e) {
                 r.ok = false;
                 r.error = "the coordinator failed: " + self->system().render(e);
               });
  if (!r.ok)
    return r;
  try {
    write_outputs(cfg, *res.data, r, out);
  } catch (const error& e) {
    r.ok = false;
    r.error = e.what();
    return r;
  }
  if (res.m)
    res.m->run().test_accuracy->Set(r.test.accuracy);
  if (verbose)
    print_summary(r, out);
  return r;
}

/// Times the run's dense layers on one core (0.2 s), prints the rate and
/// returns it (GFLOP/s).
double probe_compute(const run_config& cfg, const std::string& me, std::ostream& out) {
  const double gflops = measure_gflops(cfg, 0.2);
  out << me << ": compute: " << format_value("%.1f", gflops)
      << " GFLOP/s on one core (the run's dense layers, a batch at a time)" << std::endl;
  return gflops;
}

/// Times a 1 MiB transfer to the coordinator's node, prints the rate (one
/// way plus a round trip: a lower bound on the link's throughput) and
/// returns it in Mbit/s (0: no answer).
double probe_link(caf::scoped_actor& self, const coordinator_actor& coord, const std::string& me,
                  std::ostream& out) {
  double mbit = 0;
  probe_bytes b;
  b.data.assign(std::size_t{1} << 20, 0x5a);
  const double mb = static_cast<double>(b.data.size()) / 1e6;
  const auto t0 = std::chrono::steady_clock::now();
  self->request(coord, std::chrono::seconds(30), atom::probe::value, std::move(b))
      .receive(
          [&](std::uint64_t) {
            const double s =
                std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            mbit = mb * 8 / std::max(s, 1e-9);
            out << me << ": link to the coordinator's node: " << format_value("%.2f", mb)
                << " MB in " << format_value("%.3f", s) << " s (" << format_value("%.0f", mbit)
                << " Mbit/s)" << std::endl;
          },
          [&](caf::error& e) {
            out << me << ": link to the coordinator's node: no answer to a 1 MiB probe ("
                << self->system().render(e) << ")" << std::endl;
          });
  return mbit;
}

/// The coordinator's process: its own node actor joins, the run goes to
/// its end, the outputs are written; then the node actor leaves.
run_result coordinate(caf::scoped_actor& self, const coordinator_actor& coord,
                      std::uint64_t halt_token, const node_actor& local, const run_config& cfg,
                      const process_resources& res, bool verbose, std::ostream& out) {
  run_result r;
  // SIGINT / SIGTERM: the run stops at its next sync round; SIGUSR1: a dump.
  const signal_actions signals{
      [coord, halt_token](const char* name) {
        caf::anon_send(coord, atom::halt::value, halt_token, std::string{name});
      },
      [coord] { caf::anon_send(coord, atom::dump::value); }};
  if (auto why = join_run(self, local, coord, caf::infinite); !why.empty()) {
    r.ok = false;
    r.error = "the coordinator's own node could not join the run: " + why;
    self->send_exit(coord, caf::exit_reason::user_shutdown);
  } else {
    r = run_to_end(self, coord, cfg, res, verbose, out);
  }
  self->send_exit(local, caf::exit_reason::user_shutdown);
  return r;
}

/// Connects to the coordinator published at `addr`, retrying until
/// `deadline`. Returns an invalid handle and sets `why` on failure.
template <class Handle = coordinator_actor>
Handle connect(caf::actor_system& sys, caf::scoped_actor& self, const node_address& addr,
               clock_type::time_point deadline, std::string& why, bool secure) {
  auto mm = secure ? sys.openssl_manager().actor_handle() : sys.middleman().actor_handle();
  const auto expected = sys.message_types<Handle>();
  for (;;) {
    Handle result;
    self->request(mm, std::chrono::seconds(5), caf::connect_atom::value, addr.host, addr.port)
        .receive(
            [&](const caf::node_id&, caf::strong_actor_ptr& ptr, const std::set<std::string>& ifs) {
              if (!ptr)
                why = "nothing is published at " + addr.endpoint();
              else if (ifs != expected)
                why = addr.endpoint()
                      + " is not a NetTorrent node of this kind (its interface "
                        "differs)";
              else
                result = caf::actor_cast<Handle>(std::move(ptr));
            },
            [&](caf::error& err) { why = sys.render(err); });
    if (result || clock_type::now() >= deadline)
      return result;
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
}

} // namespace

run_result run_embedded(const run_config& cfg, std::ostream& out, bool verbose,
                        const std::string& resume) {
  const process_resources res =
      prepare(cfg, "local", static_cast<std::uint16_t>(cfg.system.metrics_port),
              /*coordinator=*/true, /*needs_data=*/true, verbose, out, "");
  caf::actor_system_config sys_cfg;
  configure(sys_cfg, cfg, /*networked=*/false);
  caf::actor_system sys{sys_cfg};
  caf::scoped_actor self{sys};
  // A one-node cluster: every actor of the layout on node "local".
  const run_layout layout{cfg};
  auto spec = make_coordinator_spec(cfg, verbose, 0, res, {"local"},
                                    std::vector<std::size_t>(layout.size(), 0));
  spec.resume = resume_state(cfg, resume, out);
  const std::uint64_t token = spec.halt_token;
  auto coord = sys.spawn(coordinator, std::move(spec));
  const run_result r = coordinate(self, coord, token, spawn_node(sys, "local", 0, cfg, res), cfg,
                                  res, verbose, out);
  if (res.m)
    linger_for_scrapes(cfg.system.metrics_linger, out);
  return r;
}

int run_node(const node_config& nc, std::ostream& out, std::ostream& err,
             const std::string& resume) {
  const cluster_config& cc = nc.cluster;
  const run_config& cfg = cc.run;
  const placement_plan plan = plan_placement(cc);
  const std::vector<actor_key> mine = actors_on(plan, nc.id);
  const std::string& coord_id = plan.nodes[plan.coordinator_node];
  const bool is_coordinator = coord_id == nc.id;
  const node_address* coord_addr = cc.find_node(coord_id);
  const std::string me = "node " + nc.id;
  const std::uint64_t hash = cc.hash();

  const bool at_start = planned_at_start(cc);
  out << me << ": cluster " << nc.cluster_file << " (hash " << hash_hex(hash) << "), ";
  if (at_start)
    out << "actors placed by the coordinator on every node's start-up figures";
  else
    out << mine.size() << " actors here";
  out << ", listening on " << nc.bind << ':' << nc.port << (cc.tls.enabled ? " (TLS)" : "")
      << ", wire precision " << to_string(cfg.system.wire) << '\n';
  if (at_start)
    out << "placement auto: planned once every node has measured its link and compute; on the "
           "description alone it would be\n";
  out << describe(plan) << std::flush;

  if (!resume.empty() && !is_coordinator) {
    err << me << ": error: --resume is for the coordinator's node (node " << coord_id
        << "); start the other nodes as usual" << std::endl;
    return 1;
  }
  // Every node reads the data set itself, whatever the plan gives it now: a
  // shard worker re-placed after a loss can land on any node.
  const bool needs_data = true;
  const process_resources res =
      prepare(cfg, nc.id, nc.metrics_port, is_coordinator, needs_data, true, out, me + ": ");
  const bool secure = cc.tls.enabled;
  // Handshakes this node refuses (or that a peer refuses) are logged with
  // the peer's address and OpenSSL's reason; the sink goes before `err`.
  struct refusal_log {
    refusal_log(bool on, std::ostream& err, const std::string& me) {
      if (on)
        set_tls_refusal_sink(
            [&err, me](const std::string& line) { err << me << ": " << line << std::endl; });
    }
    ~refusal_log() { set_tls_refusal_sink({}); }
  } refusals{secure, err, me};
  caf::actor_system_config sys_cfg;
  configure(sys_cfg, cfg, /*networked=*/true, &cc.tls);
  caf::actor_system sys{sys_cfg};
  caf::scoped_actor self{sys};
  const auto deadline = clock_type::now() + seconds(cfg.system.registration_timeout);

  if (is_coordinator) {
    const double gflops = probe_compute(cfg, me, out);
    std::vector<std::size_t> placement;
    for (const auto& a : plan.actors())
      placement.push_back(plan.node_index(a));
    auto spec = make_coordinator_spec(cfg, true, hash, res, plan.nodes, placement);
    spec.rebalance_on_rejoin = cc.placement.rebalance_on_rejoin;
    spec.resume = resume_state(cfg, resume, out);
    spec.cluster = std::make_shared<const cluster_config>(cc);
    spec.own_gflops = gflops;
    const std::uint64_t token = spec.halt_token;
    auto coord = sys.spawn(coordinator, std::move(spec));
    auto port = secure ? caf::openssl::publish(coord, nc.port, nc.bind.c_str(), true)
                       : sys.middleman().publish(coord, nc.port, nc.bind.c_str(), true);
    if (!port) {
      err << me << ": error: cannot listen on " << nc.bind << ':' << nc.port << ": "
          << sys.render(port.error()) << std::endl;
      self->send_exit(coord, caf::exit_reason::user_shutdown);
      return 1;
    }
    const run_result r = coordinate(self, coord, token, spawn_node(sys, nc.id, hash, cfg, res), cfg,
                                    res, true, out);
    if (!r.ok) {
      err << me << ": error: " << r.error << std::endl;
      return 1;
    }
    if (res.m)
      linger_for_scrapes(cfg.system.metrics_linger, out);
    return 0;
  }

  // Peers connect here directly: this node's node actor is published on the
  // port (the explicit mesh below).
  auto local = spawn_node(sys, nc.id, hash, cfg, res);
  // SIGUSR1: what this node's actors wait for. SIGINT / SIGTERM: a graceful
  // leave, its actors moved to other nodes at the next sync round (a second
  // signal exits at once; the coordinator then recovers as from a lost node).
  // Before the coordinator admitted this node there is nothing to leave.
  auto admitted = std::make_shared<std::atomic<bool>>(false);
  const signal_actions signals{
      [local, admitted](const char* name) {
        if (!admitted->load()) {
          std::cerr << "nettorrent node: not admitted to a run yet: exiting" << std::endl;
          std::_Exit(128 + (std::string_view{name} == "SIGINT" ? SIGINT : SIGTERM));
        }
        caf::anon_send(local, atom::leave::value);
      },
      [local] { caf::anon_send(local, atom::dump::value); },
      "leaving: at the coordinator's next sync round this node's actors move to the other "
      "nodes, then it exits"};
  if (auto port = secure ? caf::openssl::publish(local, nc.port, nc.bind.c_str(), true)
                         : sys.middleman().publish(local, nc.port, nc.bind.c_str(), true);
      !port) {
    err << me << ": error: cannot listen on " << nc.bind << ':' << nc.port << ": "
        << sys.render(port.error()) << std::endl;
    self->send_exit(local, caf::exit_reason::user_shutdown);
    return 1;
  }
  std::string why;
  const coordinator_actor coord = connect(sys, self, *coord_addr, deadline, why, secure);
  if (!coord) {
    err << me << ": error: cannot reach the coordinator (node " << coord_id << ") at "
        << coord_addr->endpoint() << " within " << cfg.system.registration_timeout << "s: " << why
        << std::endl;
    self->send_exit(local, caf::exit_reason::user_shutdown);
    return 1;
  }
  // The explicit mesh, before this node joins (so no pipeline message is
  // sent before its link exists). Before training begins, every node links
  // to each node whose id sorts before its own (the coordinator's link is up
  // already), waiting for it as long as registration lasts: only one side of
  // a pair ever connects. A node that joins once training began (restarted
  // after a loss, or late) links to every node that is up; nodes the
  // coordinator knows are lost are not waited for. Traffic to a node without
  // a direct link goes through the coordinator's node.
  node_states states;
  bool began = false;
  why.clear(); // connect() leaves the reason of its last failed attempt
  self->request(coord, std::chrono::seconds(10), atom::peers::value)
      .receive(
          [&](node_states& v, bool b) {
            states = std::move(v);
            began = b;
          },
          [&](caf::error& e) {
            why = e == caf::sec::request_receiver_down
                      ? "it went away (its run may have ended)"
                      : sys.render(e);
          });
  if (!why.empty()) {
    err << me << ": error: the coordinator at " << coord_addr->endpoint()
        << " did not say which nodes are up: " << why << std::endl;
    self->send_exit(local, caf::exit_reason::user_shutdown);
    return 1;
  }
  for (const auto& peer : cc.nodes) {
    if (peer.id == nc.id || peer.id == coord_id)
      continue;
    const auto at = std::find(plan.nodes.begin(), plan.nodes.end(), peer.id);
    const auto i = static_cast<std::size_t>(at - plan.nodes.begin());
    const auto state = i < states.data.size() ? static_cast<peer_state>(states.data[i])
                                              : peer_state::unseen;
    if (state == peer_state::lost) {
      out << me << ": node " << peer.id << " is down; its traffic goes through the coordinator's"
          << " node until it links here" << std::endl;
      continue;
    }
    if (began ? state != peer_state::alive : peer.id >= nc.id)
      continue; // that node links to this one when it joins (or it did)
    // A node that is up has published already: a short wait is enough.
    const auto until = began ? std::min(deadline, clock_type::now() + seconds(5)) : deadline;
    std::string peer_why;
    if (!connect<node_actor>(sys, self, peer, until, peer_why, secure))
      err << me << ": warning: no direct link to node " << peer.id << " at " << peer.endpoint()
          << " (" << peer_why << "); its traffic goes through the coordinator's node"
          << std::endl;
    else
      out << me << ": " << (secure ? "TLS link" : "link") << " to node " << peer.id << " at "
          << peer.endpoint() << std::endl;
  }
  const double mbit = probe_link(self, coord, me, out);
  const double gflops = probe_compute(cfg, me, out);
  self->monitor(coord);
  // No answer within 10 s (a slow or broken link): ask again, as long as
  // registration lasts; the coordinator admits a node once.
  for (;;) {
    bool timed_out = false;
    why = join_run(self, local, coord, std::chrono::seconds(10), &timed_out);
    if (why.empty())
      break;
    if (timed_out && clock_type::now() < deadline) {
      err << me << ": no answer from the coordinator at " << coord_addr->endpoint()
          << " within 10 s; asking again" << std::endl;
      continue;
    }
    err << me << ": error: the coordinator at " << coord_addr->endpoint()
        << (timed_out ? " did not answer this node's hello: " : " refused this node: ") << why;
    if (!timed_out)
      err << "\n  (this node's cluster description " << nc.cluster_file << " hashes to "
          << hash_hex(hash) << "; every node must use the same description)";
    err << std::endl;
    self->send_exit(local, caf::exit_reason::user_shutdown);
    return 1;
  }
  out << me << ": admitted by the coordinator at " << coord_addr->endpoint() << std::endl;
  admitted->store(true);
  // The coordinator plans placement "auto" on every node's figures (a link
  // without an answer goes as 0: not measured) and prints its predictions.
  self->send(coord, atom::probe::value, to_node_name(nc.id), mbit, gflops,
             std::max(1u, std::thread::hardware_concurrency()));
  // Wait for the coordinator to end the run (it stops every actor first),
  // or to release this node after a graceful leave.
  caf::error reason;
  bool released = false;
  self->receive([&](caf::down_msg& d) { reason = d.reason; },
                [&](atom::released) { released = true; });
  self->send_exit(local, caf::exit_reason::user_shutdown);
  if (released) {
    out << me << ": left the run: its actors went on on other nodes at a sync round, nothing "
               "redone"
        << std::endl;
    if (res.m)
      linger_for_scrapes(cfg.system.metrics_linger, out);
    return 0;
  }
  if (reason && reason != caf::exit_reason::normal) {
    err << me << ": error: the run ended abnormally: " << sys.render(reason)
        << " (lost the coordinator's node " << coord_id << " or the link to it; see its log). "
        << "If node " << coord_id << " still runs, start this node again: it rejoins the run. "
        << "If it exited, its run checkpoints are in " << cfg.training.output_dir << " on node "
        << coord_id << ": restart node " << coord_id << " with --resume=" << cfg.training.output_dir
        << " and the other nodes as before" << std::endl;
    return 1;
  }
  out << me << ": the run is over" << std::endl;
  if (res.m)
    linger_for_scrapes(cfg.system.metrics_linger, out);
  return 0;
}

} // namespace nettorrent
