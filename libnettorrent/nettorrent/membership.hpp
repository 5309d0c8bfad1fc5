// Membership: the replicas of a run change at a sync round. Today that is an
// elastic resume (`--resume` with another topology.replicas); a replica that
// joins or leaves a running swarm will come through the same function at a
// barrier. Plain C++: the round machine calls it on the state of a kept
// round (tests/unit/test_membership.cpp).
//
// From R replicas to R':
//  - replica r < min(R, R') keeps its model (weights and inner optimizer
//    state) and its counters;
//  - a new replica r >= R starts as a copy of replica 0 at the kept round:
//    the model every replica shares after an exchanging round (best,
//    average, outer; under none replica 0's own), with replica 0's inner
//    optimizer state, batch ids from 0;
//  - a removed replica's model goes; its samples still count in the run's
//    total (run_state::retired_samples);
//  - the samples of the current epoch that no replica has trained yet are
//    dealt again over the R' replicas (data.hpp: epoch_deal), so the epoch
//    still trains each sample at most once; the epochs after are ordered for
//    R'. Every replica must stand in the same epoch.
//  - a sync policy with a state keeps it when R' > 1; from R = 1 it starts
//    from the policy's initial state; at R' = 1 it is dropped (one replica
//    syncs nothing).
#pragma once

#include <cstddef>
#include <string>

#include "nettorrent/run_checkpoint.hpp"
#include "nettorrent/sync_policy.hpp"

namespace nettorrent {

/// `st` (a kept round of st.positions.size() replicas) fitted to `replicas`
/// replicas under `policy`. Throws nettorrent::error if the replicas stand
/// in different epochs, or `replicas` is 0.
run_state change_replicas(const run_state& st, std::size_t replicas, const sync_policy_def& policy);

/// "3 replicas instead of 2: replica 2 starts as a copy of replica 0; 4 224
/// samples of epoch 1 not yet trained are dealt again over 3 replicas".
std::string describe_replica_change(const run_state& before, const run_state& after);

} // namespace nettorrent
