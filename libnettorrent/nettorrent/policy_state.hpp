// A sync policy's per-layer state between rounds (policy outer: the outer
// momentum). Only the policy reads what is inside; the round machine's
// rollback, run checkpoints and sync requests carry it as it is.
#pragma once

#include <vector>

#include "nettorrent/dense.hpp"

namespace nettorrent {

struct policy_state {
  std::vector<dense_params> parts;
  bool empty() const noexcept { return parts.empty(); }
};

} // namespace nettorrent
