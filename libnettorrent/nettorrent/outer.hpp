// The outer optimizer of sync policy `outer` (DiLoCo: Douillard et al.,
// 2023). The replicas' mean change over a round is a pseudo-gradient; an
// outer momentum optimizer applies it to the global weights theta (the
// state after the last round), and every replica continues from the new
// theta. The replicas' inner optimizer moments stay their own unless
// topology.outer_average_moments is set. Plain C++, testable without actors.
#pragma once

#include <vector>

#include "nettorrent/checkpoint.hpp"
#include "nettorrent/config.hpp"
#include "nettorrent/dense.hpp"

namespace nettorrent {

struct outer_config {
  float learning_rate = 0.7f; ///< eta
  float momentum = 0.9f;      ///< mu
  bool nesterov = true;
  bool average_moments = false;

  static outer_config of(const topology_config& t) {
    return {t.outer_learning_rate, t.outer_momentum, t.outer_nesterov, t.outer_average_moments};
  }
};

/// The outer optimizer's state of one layer (or slice): the global weights
/// after the last round, and the momentum buffer (zero before the first
/// round).
struct outer_state {
  dense_params theta;
  dense_params velocity;
};

/// The outer momentum of a layer of `theta`'s shape before the first round.
dense_params zero_velocity(const dense_params& theta);

/// Element-wise mean of the replicas' parameters, summed in the order given
/// (callers pass replica-id order), then scaled by 1/n: the same arithmetic
/// as average_states' weights.
dense_params mean_params(const std::vector<const dense_params*>& ps);

/// One outer step, element by element, on `s` from the replicas' mean:
///   delta = theta - mean
///   v     = mu * v + delta
///   theta = theta - eta * (delta + mu * v)   (Nesterov)
///   theta = theta - eta * v                  (plain momentum)
/// evaluated as theta' = mean + (delta - eta * (delta + mu * v)) (resp.
/// mean + (delta - eta * v)), which is the same value and gives exactly the
/// mean for eta = 1, mu = 0. Shapes must match (throws nettorrent::error).
void outer_step(const outer_config& cfg, const dense_params& mean, outer_state& s);

/// The exchange of one layer under policy outer: `replicas` holds every
/// replica's whole layer state (replica-id order), `s` the layer's outer
/// state, updated in place. Returns the replicas' state after the round: one
/// per replica (theta and the replica's own moments), or one shared state
/// when cfg.average_moments (theta and the mean moments).
std::vector<layer_state> outer_exchange(const outer_config& cfg,
                                        const std::vector<const layer_state*>& replicas,
                                        outer_state& s);

} // namespace nettorrent
