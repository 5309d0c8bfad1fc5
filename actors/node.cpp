#include "node.hpp"

#include <chrono>
#include <cstdio>
#include <ostream>
#include <set>
#include <thread>

#include <caf/all.hpp>
#include <caf/io/all.hpp>

#include "coordinator.hpp"
#include "embedded.hpp"
#include "metrics.hpp"
#include "nettorrent/error.hpp"
#include "nettorrent/placement.hpp"
#include "nettorrent/plot.hpp"
#include "nettorrent/run_support.hpp"
#include "spawn.hpp"

namespace nettorrent {

namespace {

using clock_type = std::chrono::steady_clock;

caf::timespan seconds(double s) {
  return std::chrono::duration_cast<caf::timespan>(std::chrono::duration<double>(s));
}

/// Connects to the coordinator published at `addr`, retrying until
/// `deadline`. Returns an invalid handle and sets `why` on failure.
coordinator_actor connect(caf::actor_system& sys, caf::scoped_actor& self, const node_address& addr,
                          clock_type::time_point deadline, std::string& why) {
  auto mm = sys.middleman().actor_handle();
  const auto expected = sys.message_types<coordinator_actor>();
  for (;;) {
    coordinator_actor result;
    self->request(mm, std::chrono::seconds(5), caf::connect_atom::value, addr.host, addr.port)
        .receive(
            [&](const caf::node_id&, caf::strong_actor_ptr& ptr, const std::set<std::string>& ifs) {
              if (!ptr)
                why = "nothing is published at " + addr.endpoint();
              else if (ifs != expected)
                why = addr.endpoint() + " is not a NetTorrent coordinator (its interface differs)";
              else
                result = caf::actor_cast<coordinator_actor>(std::move(ptr));
            },
            [&](caf::error& err) { why = sys.render(err); });
    if (result || clock_type::now() >= deadline)
      return result;
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
}

} // namespace

int run_node(const node_config& nc, std::ostream& out, std::ostream& err) {
  const cluster_config& cc = nc.cluster;
  const run_config& cfg = cc.run;
  const placement_plan plan = plan_placement(cc);
  const std::vector<actor_key> mine = actors_on(plan, nc.id);
  const std::string& coord_id = plan.nodes[plan.coordinator_node];
  const bool is_coordinator = coord_id == nc.id;
  const node_address* coord_addr = cc.find_node(coord_id);
  const std::string me = "node " + nc.id;

  out << me << ": cluster " << nc.cluster_file << " (hash " << hash_hex(cc.hash()) << "), "
      << mine.size() << " actors here, listening on " << nc.bind << ':' << nc.port << '\n'
      << describe(plan) << std::flush;
  if (nc.binds_beyond_loopback())
    err << "*** WARNING: " << me << " listens on " << nc.bind
        << ", beyond loopback, WITHOUT TLS. Any host that reaches this port can make the\n"
           "*** node allocate whatever frame size it announces and send it messages.\n"
           "*** Only do this on a network you trust completely."
        << std::endl;

  bool needs_data = is_coordinator;
  for (const auto& key : mine)
    needs_data = needs_data || key.kind == actor_kind::shard_worker;
  std::shared_ptr<const data_splits> data;
  if (is_coordinator)
    check_output_dir(cfg.training.output_dir);
  if (needs_data) {
    data = std::make_shared<const data_splits>(load_run_data(cfg));
    check_shard_sizes(cfg, data->train.size());
  }

  // Metrics outlive the actor system: declared first, destroyed last.
  std::unique_ptr<metrics> m;
  std::unique_ptr<prometheus::Exposer> exposer;
  if (cfg.system.metrics) {
    m = std::make_unique<metrics>(nc.id, cfg.model.layers.size() - 1, cfg.topology.replicas);
    exposer = expose_metrics(*m, cfg.system.metrics_bind, nc.metrics_port);
    out << me << ": metrics on http://" << cfg.system.metrics_bind << ':' << nc.metrics_port
        << "/metrics" << std::endl;
  }
  caf::actor_system_config sys_cfg;
  configure_actor_system(sys_cfg, cfg);
  register_message_types(sys_cfg);
  sys_cfg.load<caf::io::middleman>();
  sys_cfg.set("middleman.enable-automatic-connections", true);
  sys_cfg.set("middleman.heartbeat-interval", seconds(cfg.system.heartbeat_interval));
  sys_cfg.set("middleman.connection-timeout", seconds(cfg.system.connection_timeout));
  caf::actor_system sys{sys_cfg};
  caf::scoped_actor self{sys};
  const auto deadline = clock_type::now() + seconds(cfg.system.registration_timeout);

  coordinator_actor coord;
  if (is_coordinator) {
    coordinator_spec spec;
    spec.cfg = cfg;
    spec.data = data;
    spec.verbose = true;
    spec.cluster_hash = cc.hash();
    spec.metrics = m ? &m->run() : nullptr;
    coord = sys.spawn(coordinator, spec);
    auto port = sys.middleman().publish(coord, nc.port, nc.bind.c_str(), true);
    if (!port) {
      err << me << ": error: cannot listen on " << nc.bind << ':' << nc.port << ": "
          << sys.render(port.error()) << std::endl;
      self->send_exit(coord, caf::exit_reason::user_shutdown);
      return 1;
    }
  } else {
    // Peers connect here directly once they learn of this node's actors.
    auto port = sys.middleman().open(nc.port, nc.bind.c_str(), true);
    if (!port) {
      err << me << ": error: cannot listen on " << nc.bind << ':' << nc.port << ": "
          << sys.render(port.error()) << std::endl;
      return 1;
    }
    std::string why;
    coord = connect(sys, self, *coord_addr, deadline, why);
    if (!coord) {
      err << me << ": error: cannot reach the coordinator (node " << coord_id << ") at "
          << coord_addr->endpoint() << " within " << cfg.system.registration_timeout << "s: " << why
          << std::endl;
      return 1;
    }
    bool admitted = false;
    self->request(coord, std::chrono::seconds(10), atom::hello::value, nc.id, cc.hash())
        .receive([&](atom::ok) { admitted = true; }, [&](caf::error& e) { why = sys.render(e); });
    if (!admitted) {
      err << me << ": error: the coordinator at " << coord_addr->endpoint()
          << " refused this node: " << why << "\n  (this node's cluster description "
          << nc.cluster_file << " hashes to " << hash_hex(cc.hash())
          << "; every node must use the same description)" << std::endl;
      return 1;
    }
    out << me << ": admitted by the coordinator at " << coord_addr->endpoint() << std::endl;
  }

  std::vector<caf::actor> local;
  for (const auto& key : mine)
    if (key.kind != actor_kind::coordinator)
      local.push_back(spawn_and_register(sys, cfg, data, key, coord, m.get(), &self));

  if (is_coordinator) {
    run_report report;
    self->request(coord, caf::infinite, atom::run::value)
        .receive([&](run_report& r) { report = std::move(r); },
                 [&](caf::error& e) {
                   report.ok = false;
                   report.error = "the coordinator failed: " + sys.render(e);
                 });
    if (!report.ok) {
      err << me << ": error: " << report.error << std::endl;
      for (const auto& a : local)
        self->send_exit(a, caf::exit_reason::user_shutdown);
      return 1;
    }
    print_summary(report, out);
    const std::string png = cfg.training.output_dir + "/curve.png";
    if (plot_curve(report.curve_path, png, out))
      out << "plotted " << png << std::endl;
    if (m)
      linger_for_scrapes(cfg.system.metrics_linger, out);
    return 0;
  }

  // Wait for the coordinator to end the run; it stops every actor first.
  // (Non-coordinator nodes linger below, after the run is over.)
  self->monitor(coord);
  caf::error reason;
  self->receive([&](caf::down_msg& d) { reason = d.reason; });
  for (const auto& a : local)
    self->send_exit(a, caf::exit_reason::user_shutdown);
  if (reason && reason != caf::exit_reason::normal) {
    err << me << ": error: the run ended abnormally: " << sys.render(reason)
        << " (see the coordinator's log on node " << coord_id << ")" << std::endl;
    return 1;
  }
  out << me << ": the run is over" << std::endl;
  if (m)
    linger_for_scrapes(cfg.system.metrics_linger, out);
  return 0;
}

} // namespace nettorrent
