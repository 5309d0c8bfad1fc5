// The nemesis's fault schedule: a pure function of a seed. From the seed it
// draws the run's settings (exact: max_in_flight = 1, or the shipped ones)
// and 2-4 faults at moments of the run's first `window` milliseconds, each
// on a non-coordinator node (n1, n2) or, for the CPU hog, on the machine.
// The generator is written out (splitmix64), not taken from <random>, whose
// distributions differ between standard libraries: the same seed gives the
// same schedule everywhere.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

namespace nemesis {

/// What a fault does.
enum class fault_kind {
  kill, ///< SIGKILL; the node is started again after `duration_ms` if `restart`
  stop, ///< SIGSTOP, SIGCONT after `duration_ms`
  link, ///< the node's link down, up after `duration_ms`
  rate, ///< the node's link cut to 1 Mbit/s both ways, restored after `duration_ms`
  cpu,  ///< a CPU hog on both cores (stress-ng --cpu 2), stopped after `duration_ms`
};

inline constexpr std::array<fault_kind, 5> all_kinds{
    fault_kind::kill, fault_kind::stop, fault_kind::link, fault_kind::rate, fault_kind::cpu};

inline const char* name_of(fault_kind k) {
  switch (k) {
  case fault_kind::kill:
    return "kill";
  case fault_kind::stop:
    return "stop";
  case fault_kind::link:
    return "link-down";
  case fault_kind::rate:
    return "rate-1mbit";
  case fault_kind::cpu:
    return "cpu-hog";
  }
  return "?";
}

/// The node index of the machine-wide CPU hog (no node of its own).
inline constexpr int machine = -1;

/// One fault: at `at_ms` after training started, on node `node` (1 or 2,
/// or `machine`), for `duration_ms` (for a kill: until the restart).
struct fault {
  std::int64_t at_ms = 0;
  fault_kind kind = fault_kind::kill;
  int node = 1;
  std::int64_t duration_ms = 0;
  bool restart = false; ///< kill only: started again after duration_ms

  std::int64_t end_ms() const { return at_ms + duration_ms; }
  bool operator==(const fault& o) const {
    return at_ms == o.at_ms && kind == o.kind && node == o.node && duration_ms == o.duration_ms
           && restart == o.restart;
  }
};

/// The run's settings.
enum class settings {
  exact,   ///< max_in_flight = 1: the final model must equal the fault-free one bit for bit
  shipped, ///< config/hosts as shipped: accuracy within 0.5 pp plus the fault-free spread
};

inline const char* name_of(settings s) {
  return s == settings::exact ? "exact (max_in_flight = 1, round moments)" : "shipped";
}

struct schedule {
  std::uint64_t seed = 0;
  settings mode = settings::exact;
  std::vector<fault> faults; ///< by at_ms

  bool operator==(const schedule& o) const {
    return seed == o.seed && mode == o.mode && faults == o.faults;
  }
};

/// splitmix64: a small generator whose output is fixed by its seed.
class generator {
public:
  explicit generator(std::uint64_t seed) : state_(seed) {}
  std::uint64_t next() {
    std::uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  /// Uniform in [lo, hi] (the modulo bias is below 2^-40 for these ranges).
  std::int64_t between(std::int64_t lo, std::int64_t hi) {
    return lo + static_cast<std::int64_t>(next() % static_cast<std::uint64_t>(hi - lo + 1));
  }

private:
  std::uint64_t state_;
};

/// The duration range of each kind, in ms (a kill's: the restart delay).
inline std::pair<std::int64_t, std::int64_t> duration_range(fault_kind k) {
  switch (k) {
  case fault_kind::kill:
    return {2000, 10000};
  case fault_kind::stop:
  case fault_kind::link:
    return {2000, 15000};
  case fault_kind::rate:
  case fault_kind::cpu:
    return {5000, 20000};
  }
  return {0, 0};
}

/// The schedule of `seed` for a run whose training lasts about `window_ms`
/// without faults. Faults on one node (or of the machine's CPU hog) never
/// overlap: a fault that would start while its node is still faulted starts
/// 1 s after it recovers; a node killed for good gets no later fault.
inline schedule draw(std::uint64_t seed, std::int64_t window_ms = 20000) {
  generator g{seed ^ 0x6e656d65736973ULL}; // "nemesis"
  schedule s;
  s.seed = seed;
  s.mode = g.between(0, 1) == 0 ? settings::exact : settings::shipped;
  const auto count = g.between(2, 4);
  std::array<std::int64_t, 3> busy_until{0, 0, 0}; // n1, n2, machine
  std::array<bool, 2> gone{false, false};
  for (std::int64_t k = 0; k < count; ++k) {
    fault f;
    f.kind = all_kinds[static_cast<std::size_t>(g.between(0, 4))];
    f.at_ms = g.between(0, window_ms);
    const auto [lo, hi] = duration_range(f.kind);
    f.duration_ms = g.between(lo, hi);
    const bool restart = g.between(0, 1) == 1;
    const auto node = static_cast<int>(g.between(1, 2));
    if (f.kind == fault_kind::cpu) {
      f.node = machine;
    } else {
      f.node = gone[static_cast<std::size_t>(node - 1)] ? 3 - node : node;
      if (gone[static_cast<std::size_t>(f.node - 1)])
        continue; // both killed for good: nothing left to fault
    }
    const std::size_t slot = f.node == machine ? 2 : static_cast<std::size_t>(f.node - 1);
    if (f.at_ms < busy_until[slot])
      f.at_ms = busy_until[slot] + 1000;
    if (f.kind == fault_kind::kill) {
      f.restart = restart;
      if (!restart)
        gone[slot] = true;
    }
    busy_until[slot] = f.end_ms();
    s.faults.push_back(f);
  }
  std::stable_sort(s.faults.begin(), s.faults.end(),
                   [](const fault& a, const fault& b) { return a.at_ms < b.at_ms; });
  return s;
}

/// "  12.345 s  kill        n2  restarted after 4.321 s".
inline std::string describe(const fault& f) {
  char buf[160];
  const std::string node = f.node == machine ? "all" : "n" + std::to_string(f.node);
  const double at = static_cast<double>(f.at_ms) / 1e3;
  const double d = static_cast<double>(f.duration_ms) / 1e3;
  if (f.kind == fault_kind::kill && !f.restart)
    std::snprintf(buf, sizeof buf, "%8.3f s  %-10s  %-3s  not restarted", at, name_of(f.kind),
                  node.c_str());
  else if (f.kind == fault_kind::kill)
    std::snprintf(buf, sizeof buf, "%8.3f s  %-10s  %-3s  restarted after %.3f s", at,
                  name_of(f.kind), node.c_str(), d);
  else
    std::snprintf(buf, sizeof buf, "%8.3f s  %-10s  %-3s  for %.3f s", at, name_of(f.kind),
                  node.c_str(), d);
  return buf;
}

/// The whole schedule, one line per fault after a header line.
inline std::string describe(const schedule& s) {
  std::string out = "seed " + std::to_string(s.seed) + ": settings " + name_of(s.mode) + ", "
                    + std::to_string(s.faults.size()) + " faults\n";
  for (const auto& f : s.faults)
    out += describe(f) + "\n";
  return out;
}

} // namespace nemesis
