// Policy outer (DiLoCo, the default): an outer Nesterov step on the
// replicas' mean change since the last round (nettorrent/outer.hpp); its
// per-layer state is the outer momentum.
#include "nettorrent/sync_policy.hpp"

#include "nettorrent/slice_ops.hpp"

namespace nettorrent {

namespace {

// The state: one part per layer, the outer momentum (the layer's shape).

std::vector<layer_state> outer_of_replicas(exchange_input& in) {
  std::vector<const layer_state*> ptrs;
  for (const auto& r : in.replicas)
    ptrs.push_back(&r);
  outer_state s{std::move(in.theta), std::move(in.state.parts.at(0))};
  std::vector<layer_state> out = outer_exchange(in.cfg, ptrs, s);
  in.state.parts.assign(1, std::move(s.velocity));
  return out;
}

policy_state zero_momentum(const dense_params& layer) {
  return policy_state{{zero_velocity(layer)}};
}

std::string shape_of(const dense_params& p) {
  return std::to_string(p.w.rows()) + " x " + std::to_string(p.w.cols()) + " (bias "
         + std::to_string(p.b.size()) + ")";
}

std::string request_shape(const dense_params& p) {
  return std::to_string(p.w.rows()) + " x " + std::to_string(p.w.cols()) + ", bias "
         + std::to_string(p.b.size());
}

std::string check_momentum(const policy_state& s, const dense_params& layer) {
  if (s.parts.size() != 1)
    return "an outer state of " + std::to_string(s.parts.size())
           + " matrices (the outer momentum is one)";
  if (!same_shape(s.parts[0], layer))
    return "an outer momentum of " + shape_of(s.parts[0]) + " for a layer of " + shape_of(layer);
  return {};
}

std::string check_outer_request(const outer_config& c, const dense_params& theta,
                                const policy_state& s) {
  if (!(c.learning_rate > 0 && c.learning_rate <= 10))
    return "sync: outer learning rate " + std::to_string(c.learning_rate)
           + " is out of range (0, 10]";
  if (!(c.momentum >= 0 && c.momentum < 1))
    return "sync: outer momentum " + std::to_string(c.momentum) + " is out of range [0, 1)";
  if (theta.w.cols() != theta.b.size() || theta.w.size() == 0 || s.parts.size() != 1
      || !same_shape(theta, s.parts[0]))
    return "sync: the outer state's weights (" + request_shape(theta) + ") and momentum ("
           + (s.parts.size() <= 1 ? request_shape(s.parts.empty() ? dense_params{} : s.parts[0])
                                  : std::to_string(s.parts.size()) + " matrices")
           + ") do not match";
  return {};
}

} // namespace

// id, name, exchanges, picks_best, scores_synced_model, keeps_state,
// exchange, initial_state, check_state, check_request, keeps_inner_state
// (nettorrent/sync_policy.hpp).
const sync_policy_def sync::outer{sync_policy::outer,
                                  "outer",
                                  true,
                                  false,
                                  true,
                                  true,
                                  outer_of_replicas,
                                  zero_momentum,
                                  check_momentum,
                                  check_outer_request,
                                  true};

} // namespace nettorrent
