#include "nettorrent/membership.hpp"

#include <algorithm>

#include "nettorrent/error.hpp"

namespace nettorrent {

namespace {

/// Every replica's epoch, or throws naming the two that differ.
std::uint64_t common_epoch(const std::vector<data_position>& positions) {
  const std::uint64_t e = positions.front().epoch;
  for (std::size_t r = 1; r < positions.size(); ++r)
    if (positions[r].epoch != e)
      throw error("cannot change the number of replicas here: replica 0 stands in epoch "
                  + std::to_string(e) + ", replica " + std::to_string(r) + " in epoch "
                  + std::to_string(positions[r].epoch)
                  + " (resume from a round where every replica is in the same epoch, or keep "
                    "topology.replicas = "
                  + std::to_string(positions.size()) + ")");
  return e;
}

} // namespace

run_state change_replicas(const run_state& st, std::size_t replicas,
                          const sync_policy_def& policy) {
  const std::size_t before = st.positions.size();
  if (replicas == 0)
    throw error("a run needs at least one replica");
  if (before == 0 || (st.models.size() != 1 && st.models.size() != before))
    throw error("the run state holds " + std::to_string(st.models.size()) + " models for "
                + std::to_string(before) + " replicas");
  run_state out = st;
  if (replicas == before)
    return out;
  const std::uint64_t epoch = common_epoch(st.positions);

  // Models: the first min(R, R') keep theirs, new ones copy replica 0's.
  if (st.models.size() != 1) {
    out.models.clear();
    for (std::size_t r = 0; r < replicas; ++r)
      out.models.push_back(st.model_of(r < before ? r : 0));
  }
  // Positions: the epoch's untrained samples are dealt again (epoch 0: the
  // run has not started an epoch, there is nothing to deal).
  out.positions.resize(replicas);
  for (std::size_t r = before; r < replicas; ++r)
    out.positions[r] = data_position{};
  for (std::size_t r = replicas; r < before; ++r)
    out.retired_samples += st.positions[r].samples;
  if (epoch > 0) {
    if (st.deal.empty() || st.deal.epoch != epoch)
      out.deal = epoch_deal{epoch, {}};
    replica_change change;
    change.from = static_cast<std::uint32_t>(before);
    for (const auto& p : st.positions)
      change.cursors.push_back(p.cursor);
    out.deal.changes.push_back(std::move(change));
    for (auto& p : out.positions) {
      p.epoch = epoch;
      p.cursor = 0;
    }
  }
  // The sync policy's state.
  const bool keeps = policy.keeps_state && replicas > 1;
  if (!keeps)
    out.policy_states.clear();
  else if (out.policy_states.empty())
    for (const auto& ls : out.model_of(0))
      out.policy_states.push_back(policy.initial_state(ls.params));
  return out;
}

std::string describe_replica_change(const run_state& before, const run_state& after) {
  const std::size_t from = before.positions.size();
  const std::size_t to = after.positions.size();
  std::string out = std::to_string(to) + " replicas instead of " + std::to_string(from);
  if (to > from) {
    out += to == from + 1 ? ": replica " + std::to_string(from)
                          : ": replicas " + std::to_string(from) + "-" + std::to_string(to - 1);
    out += " start" + std::string{to == from + 1 ? "s" : ""} + " as a copy of replica 0";
  } else {
    out += ": replica" + std::string{from - to > 1 ? "s " : " "} + std::to_string(to)
           + (from - to > 1 ? "-" + std::to_string(from - 1) : "") + " retire";
    out += from - to > 1 ? "" : "s";
  }
  if (!after.deal.empty())
    out += "; the samples of epoch " + std::to_string(after.deal.epoch)
           + " not yet trained are dealt again over " + std::to_string(to) + " replicas";
  return out;
}

} // namespace nettorrent
