#include "nettorrent/sync_policy.hpp"

#include "nettorrent/error.hpp"

namespace nettorrent {

const std::array<const sync_policy_def*, 4>& sync_policies() {
  // In the order of the enum's values.
  static const std::array<const sync_policy_def*, 4> table{&sync::best, &sync::average,
                                                           &sync::none, &sync::outer};
  return table;
}

const sync_policy_def* policy_def_of_id(unsigned id) noexcept {
  const auto& t = sync_policies();
  return id < t.size() ? t[id] : nullptr;
}

const sync_policy_def& policy_def(sync_policy p) {
  const sync_policy_def* d = policy_def_of_id(static_cast<unsigned>(p));
  if (d == nullptr || d->id != p)
    throw error("no sync policy with id " + std::to_string(static_cast<unsigned>(p)));
  return *d;
}

bool round_sets_moments(const topology_config& t) {
  return !policy_def(t.policy).keeps_inner_state || t.outer_average_moments;
}

std::string_view to_string(sync_policy p) noexcept {
  const sync_policy_def* d = policy_def_of_id(static_cast<unsigned>(p));
  return d != nullptr ? d->name : "?";
}

sync_policy parse_sync_policy(std::string_view name) {
  const auto& all = sync_policies();
  std::string names;
  for (std::size_t i = 0; i < all.size(); ++i) {
    if (name == all[i]->name)
      return all[i]->id;
    names += (i == 0 ? "" : i + 1 == all.size() ? " or " : ", ") + std::string{all[i]->name};
  }
  throw error("unknown sync policy \"" + std::string{name} + "\" (expected " + names + ")");
}

} // namespace nettorrent
