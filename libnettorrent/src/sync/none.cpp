// Policy none: the replicas train independently; a round only keeps every
// replica's layers as its rollback state.
#include "nettorrent/sync_policy.hpp"

namespace nettorrent {

// id, name, exchanges, picks_best, scores_synced_model, keeps_state,
// exchange, initial_state, check_state, check_request (nettorrent/sync_policy.hpp).
const sync_policy_def sync::none{
    sync_policy::none, "none", false, false, false, false, nullptr, nullptr, nullptr, nullptr};

} // namespace nettorrent
