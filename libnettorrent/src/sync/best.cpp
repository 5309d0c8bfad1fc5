// Policy best: every replica is scored, and every replica takes the layers
// of the one with the lowest validation loss (the seed's rule).
#include "nettorrent/sync_policy.hpp"

#include "nettorrent/error.hpp"

namespace nettorrent {

namespace {

std::vector<layer_state> take_best(exchange_input& in) {
  if (in.best >= in.replicas.size())
    throw error("best: no replica " + std::to_string(in.best));
  std::vector<layer_state> out;
  out.push_back(std::move(in.replicas[in.best]));
  return out;
}

} // namespace

// id, name, exchanges, picks_best, scores_synced_model, keeps_state,
// exchange, initial_state, check_state, check_request (nettorrent/sync_policy.hpp).
const sync_policy_def sync::best{
    sync_policy::best, "best", true, true, false, false, take_best, nullptr, nullptr, nullptr};

} // namespace nettorrent
