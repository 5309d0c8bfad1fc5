// Sync policies: what a sync round does with the replicas' layers. Each
// policy is one row of one table (its file in src/sync/ defines the row);
// everything that differs between policies is a field of the row, so the
// round machine, the swarm leader, the config checks and the benchmarks ask
// the row instead of switching on the policy. Adding a policy means a file
// in src/sync/, its row in sync_policy.cpp and its value in `sync_policy`
// (config.hpp). Plain C++, testable without actors.
#pragma once

#include <array>
#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "nettorrent/checkpoint.hpp"
#include "nettorrent/config.hpp"
#include "nettorrent/outer.hpp"
#include "nettorrent/policy_state.hpp"

namespace nettorrent {

/// One layer's exchange, as the layer's swarm leader computes it.
struct exchange_input {
  /// Every replica's whole layer (its slices glued), in replica order; a
  /// replica the policy does not read (picks_best: all but the best) is
  /// left empty.
  std::vector<layer_state>& replicas;
  std::size_t best = 0; ///< the best replica of the round (picks_best policies)
  const outer_config& cfg; ///< the policies' hyper-parameters (topology.outer_*)
  /// The layer's weights after the last round, which every replica shared
  /// (keeps_state policies; the exchange may take it).
  dense_params& theta;
  policy_state& state; ///< the layer's state from the last round, updated in place
};

/// One policy.
struct sync_policy_def {
  sync_policy id;
  std::string_view name;
  /// False: a round exchanges nothing and only keeps every replica's own
  /// layers as its rollback state (none).
  bool exchanges = true;
  /// True: every replica is scored before the exchange, which takes the
  /// best one's layers; only it is read and it keeps what it has, so the
  /// policy needs a score in every round (best).
  bool picks_best = false;
  /// True: the exchange leaves every replica with the same weights, and the
  /// round scores that synced model once, after the exchange, each replica
  /// scoring its part of the validation subset (average, outer).
  bool scores_synced_model = false;
  /// True: the policy carries a per-layer state from round to round (the
  /// outer momentum), in rollbacks, run checkpoints and sync requests.
  bool keeps_state = false;
  /// The exchange (exchanges policies): the state every replica takes
  /// after the round, one shared by all or one per replica. Throws
  /// nettorrent::error on states of mismatched shapes.
  std::vector<layer_state> (*exchange)(exchange_input& in) = nullptr;
  /// keeps_state policies: the state of a layer before the first round.
  policy_state (*initial_state)(const dense_params& layer) = nullptr;
  /// keeps_state policies: what is wrong with a layer's state (read from a
  /// run checkpoint or a leader's answer) for a layer like `layer`, or "".
  std::string (*check_state)(const policy_state& state, const dense_params& layer) = nullptr;
  /// keeps_state policies: what is wrong with a sync request's
  /// hyper-parameters, weights and state, or "" (a request may come over
  /// the network).
  std::string (*check_request)(const outer_config& cfg, const dense_params& theta,
                               const policy_state& state) = nullptr;
  /// True: the exchange leaves every replica's optimizer moments as they
  /// are unless `outer_average_moments` is set (outer), so a round sends a
  /// replica only its new weights; false: the moments travel too.
  bool keeps_inner_state = false;
};

/// Whether a round under `t` sends the replicas new optimizer moments.
bool round_sets_moments(const topology_config& t);

/// Every policy, indexed by its `sync_policy` value.
const std::array<const sync_policy_def*, 4>& sync_policies();

/// The row of policy `p`.
const sync_policy_def& policy_def(sync_policy p);

/// The names of the policies `keep` accepts, quoted, as a list: "a", "b" or "c".
template <class Pred> std::string policy_names(Pred keep);

/// The row of the policy with wire id `id`, or nullptr if there is none.
const sync_policy_def* policy_def_of_id(unsigned id) noexcept;

template <class Pred> std::string policy_names(Pred keep) {
  std::vector<std::string_view> names;
  for (const auto* d : sync_policies())
    if (keep(*d))
      names.push_back(d->name);
  std::string out;
  for (std::size_t i = 0; i < names.size(); ++i)
    out += std::string{i == 0 ? "" : i + 1 == names.size() ? " or " : ", "} + "\""
           + std::string{names[i]} + "\"";
  return out;
}

namespace sync {
// The rows, one per file of src/sync/.
extern const sync_policy_def best;
extern const sync_policy_def average;
extern const sync_policy_def none;
extern const sync_policy_def outer;
} // namespace sync

} // namespace nettorrent
