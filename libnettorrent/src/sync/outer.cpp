// Policy outer (DiLoCo, the default): an outer Nesterov step on the
// replicas' mean change since the last round (nettorrent/outer.hpp); its
// per-layer state is the outer momentum.
#include "nettorrent/sync_policy.hpp"

#include "nettorrent/slice_ops.hpp"

namespace nettorrent {

namespace {

std::vector<layer_state> outer_of_replicas(exchange_input& in) {
  std::vector<const layer_state*> ptrs;
  for (const auto& r : in.replicas)
    ptrs.push_back(&r);
  return outer_exchange(in.cfg, ptrs, in.state);
}

std::string check_outer_request(const outer_config& c, const outer_state& s) {
  if (!(c.learning_rate > 0 && c.learning_rate <= 10))
    return "sync: outer learning rate " + std::to_string(c.learning_rate)
           + " is out of range (0, 10]";
  if (!(c.momentum >= 0 && c.momentum < 1))
    return "sync: outer momentum " + std::to_string(c.momentum) + " is out of range [0, 1)";
  const auto& t = s.theta;
  const auto& v = s.velocity;
  if (t.w.cols() != t.b.size() || !same_shape(t, v) || t.w.size() == 0)
    return "sync: the outer state's weights (" + std::to_string(t.w.rows()) + " x "
           + std::to_string(t.w.cols()) + ", bias " + std::to_string(t.b.size())
           + ") and momentum (" + std::to_string(v.w.rows()) + " x " + std::to_string(v.w.cols())
           + ", bias " + std::to_string(v.b.size()) + ") do not match";
  return {};
}

} // namespace

// id, name, exchanges, picks_best, scores_synced_model, keeps_state,
// exchange, check_request (nettorrent/sync_policy.hpp).
const sync_policy_def sync::outer{
    sync_policy::outer, "outer", true, false, true, true, outer_of_replicas, check_outer_request};

} // namespace nettorrent
