// Policy average: every replica takes the element-wise mean of all
// replicas' weights and optimizer moments (summed in replica order).
#include "nettorrent/sync_policy.hpp"

#include "nettorrent/slice_ops.hpp"

namespace nettorrent {

namespace {

std::vector<layer_state> mean_of_replicas(exchange_input& in) {
  std::vector<const layer_state*> ptrs;
  for (const auto& r : in.replicas)
    ptrs.push_back(&r);
  std::vector<layer_state> out;
  out.push_back(average_states(ptrs));
  return out;
}

} // namespace

// id, name, exchanges, picks_best, scores_synced_model, keeps_state,
// exchange, initial_state, check_state, check_request (nettorrent/sync_policy.hpp).
const sync_policy_def sync::average{
    sync_policy::average, "average", true, false, true, false, mean_of_replicas, nullptr, nullptr, nullptr};

} // namespace nettorrent
