// Separate network hosts on one machine, for the multihost tests: one Linux
// network namespace per host, each joined to a bridge of its own by a veth
// pair, with an address from 10.213.0.0/24 that exists only inside the
// namespaces (the root namespace gets no address on the bridge, so nothing
// outside can reach them and parallel tests' labs do not see each other).
//
// The lab removes everything it made in its destructor — namespaces, veth
// pairs, the bridge — also when a test fails, and at start removes what a
// killed earlier run left behind (names carry the pid of the process that
// made them; a name whose process is gone is stale). Each kind of lab has a
// prefix of its own (lab_names), so labs of different tools running side by
// side neither collide nor clean up each other's.
#pragma once

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace integration {

/// Runs `cmd` through the shell; returns its exit status and fills `output`
/// with its stdout and stderr.
inline int shell(const std::string& cmd, std::string* output = nullptr) {
  std::string text;
  FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
  if (p == nullptr)
    return -1;
  char buf[4096];
  for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, p)) > 0;)
    text.append(buf, n);
  const int st = ::pclose(p);
  if (output != nullptr)
    *output = text;
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/// The absolute path of `ip` (iproute2), or "" if not installed.
inline std::string ip_binary() {
  for (const char* p : {"/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"})
    if (::access(p, X_OK) == 0)
      return p;
  return {};
}

/// The prefixes of a lab's names: its namespaces ("<ns><pid>.<n>-h<i>") and
/// its links ("<link>b<pid>.<n>" for the bridge, "<link>v<pid>.<n>h<i>" and
/// "...b<i>" for the veth ends; at most 15 characters, so `link` is short).
struct lab_names {
  std::string ns = "ntmh-";
  std::string link = "nt";
};

class network_lab {
public:
  /// Why no lab can be built here ("" if one can): not root, no `ip`, or
  /// the kernel refuses a namespace. Tries for real.
  static std::string unavailable() {
    if (::geteuid() != 0)
      return "network namespaces need root (running as uid " + std::to_string(::geteuid()) + ")";
    if (ip_binary().empty())
      return "`ip` (iproute2) is not installed";
    const std::string probe = "ntprobe" + std::to_string(::getpid());
    std::string out;
    if (shell(ip_binary() + " netns add " + probe, &out) != 0)
      return "the kernel refused a network namespace: " + out;
    shell(ip_binary() + " netns del " + probe);
    return {};
  }

  /// Builds `hosts` namespaces h0..h(n-1) with addresses 10.213.0.1.. on
  /// one bridge. Throws (after removing what it made) on any failure.
  explicit network_lab(std::size_t hosts, lab_names names = {})
      : ip_(ip_binary()), names_(std::move(names)) {
    static int counter = 0;
    tag_ = std::to_string(::getpid()) + "." + std::to_string(counter++ % 10);
    remove_stale();
    try {
      run("link add " + bridge() + " type bridge");
      made_bridge_ = true;
      run("link set " + bridge() + " up");
      for (std::size_t i = 0; i < hosts; ++i)
        add_host();
    } catch (...) {
      teardown();
      throw;
    }
  }

  network_lab(const network_lab&) = delete;
  network_lab& operator=(const network_lab&) = delete;
  ~network_lab() { teardown(); }

  std::size_t hosts() const { return hosts_; }
  /// The namespace of host i.
  std::string ns(std::size_t i) const { return names_.ns + tag_ + "-h" + std::to_string(i); }
  /// Host i's address (inside the lab only).
  static std::string address(std::size_t i) { return "10.213.0." + std::to_string(i + 1); }
  /// Host i's end of its link (inside its namespace) and the bridge's end.
  std::string host_if(std::size_t i) const {
    return names_.link + "v" + tag_ + "h" + std::to_string(i);
  }
  std::string bridge_if(std::size_t i) const {
    return names_.link + "v" + tag_ + "b" + std::to_string(i);
  }
  std::string bridge() const { return names_.link + "b" + tag_; }
  /// "<pid>.<n>": the part of every name that is this lab's own.
  const std::string& tag() const { return tag_; }

  /// argv that runs `argv` inside host i's namespace.
  std::vector<std::string> in_host(std::size_t i, std::vector<std::string> argv) const {
    std::vector<std::string> full{ip_, "netns", "exec", ns(i)};
    full.insert(full.end(), argv.begin(), argv.end());
    return full;
  }

  /// A token bucket of `rate` (tc syntax, e.g. "100mbit") on both directions
  /// of host i's link: its own end (what it sends) and the bridge's end
  /// (what it receives).
  void limit_rate(std::size_t i, const std::string& rate) {
    const std::string tbf = " root tbf rate " + rate + " burst 64kbit latency 50ms";
    run("netns exec " + ns(i) + " " + ip_ + " link show " + host_if(i)); // exists
    sh(tc() + " -n " + ns(i) + " qdisc add dev " + host_if(i) + tbf);
    sh(tc() + " qdisc add dev " + bridge_if(i) + tbf);
  }

  /// Removes the token buckets limit_rate put on host i's link.
  void unlimit_rate(std::size_t i) {
    sh(tc() + " -n " + ns(i) + " qdisc del dev " + host_if(i) + " root");
    sh(tc() + " qdisc del dev " + bridge_if(i) + " root");
  }

  /// Takes host i's end of its link down (nothing goes in or out) or up.
  void set_link(std::size_t i, bool up) {
    run("-n " + ns(i) + " link set " + host_if(i) + (up ? " up" : " down"));
  }

  /// Pids of the processes inside host i's namespace (`ip netns pids`).
  std::string pids_in(std::size_t i) const {
    std::string out;
    shell(ip_ + " netns pids " + ns(i), &out);
    return out;
  }

  /// The qdisc line of host i's link (for the test log).
  std::string qdisc(std::size_t i) const {
    std::string out;
    shell(tc() + " -n " + ns(i) + " qdisc show dev " + host_if(i), &out);
    return out;
  }

  /// Bytes host i sent and received on its link so far (kernel counters).
  std::uint64_t link_bytes(std::size_t i) const {
    auto counter = [&](const char* which) -> std::uint64_t {
      std::ifstream f("/sys/class/net/" + bridge_if(i) + "/statistics/" + which);
      std::uint64_t v = 0;
      f >> v;
      return v;
    };
    return counter("rx_bytes") + counter("tx_bytes");
  }

private:
  static std::string tc() {
    for (const char* p : {"/usr/sbin/tc", "/sbin/tc"})
      if (::access(p, X_OK) == 0)
        return p;
    return "tc";
  }

  void add_host() {
    const std::size_t i = hosts_;
    run("netns add " + ns(i));
    namespaces_.push_back(ns(i));
    ++hosts_;
    run("link add " + bridge_if(i) + " type veth peer name " + host_if(i));
    run("link set " + host_if(i) + " netns " + ns(i));
    run("link set " + bridge_if(i) + " master " + bridge());
    run("link set " + bridge_if(i) + " up");
    run("-n " + ns(i) + " addr add " + address(i) + "/24 dev " + host_if(i));
    run("-n " + ns(i) + " link set " + host_if(i) + " up");
    run("-n " + ns(i) + " link set lo up");
  }

  void run(const std::string& args) { sh(ip_ + " " + args); }

  static void sh(const std::string& cmd) {
    std::string out;
    if (shell(cmd, &out) != 0)
      throw std::runtime_error("network lab: `" + cmd + "` failed: " + out);
  }

  void teardown() {
    // Deleting a namespace destroys the veth ends inside it, and with them
    // their peers on the bridge.
    for (const auto& n : namespaces_)
      shell(ip_ + " netns del " + n);
    // A veth pair whose host end never reached its namespace is still here.
    for (std::size_t i = 0; i < hosts_; ++i)
      shell(ip_ + " link del " + bridge_if(i));
    namespaces_.clear();
    if (made_bridge_)
      shell(ip_ + " link del " + bridge());
    made_bridge_ = false;
  }

  /// Namespaces and links of labs whose process is gone.
  void remove_stale() const {
    auto dead = [](const std::string& name, std::size_t from) {
      const std::size_t end = name.find('.', from);
      if (end == std::string::npos || end == from)
        return false;
      const long pid = std::strtol(name.substr(from, end - from).c_str(), nullptr, 10);
      return pid > 0 && ::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH;
    };
    std::string list;
    shell(ip_ + " netns list", &list);
    std::istringstream ns_lines{list};
    for (std::string line; std::getline(ns_lines, line);) {
      const std::string name = line.substr(0, line.find(' '));
      if ((name.rfind(names_.ns, 0) == 0 && dead(name, names_.ns.size()))
          || (name.rfind("ntprobe", 0) == 0 && dead(name + ".", 7)))
        shell(ip_ + " netns del " + name);
    }
    shell(ip_ + " -o link show", &list);
    std::istringstream link_lines{list};
    for (std::string line; std::getline(link_lines, line);) {
      // "12: ntb1234.0: <...": the name after the index.
      const auto colon = line.find(": ");
      if (colon == std::string::npos)
        continue;
      std::string name = line.substr(colon + 2, line.find(':', colon + 2) - colon - 2);
      name = name.substr(0, name.find('@'));
      const std::size_t n = names_.link.size();
      if ((name.rfind(names_.link + "b", 0) == 0 || name.rfind(names_.link + "v", 0) == 0)
          && dead(name, n + 1))
        shell(ip_ + " link del " + name);
    }
  }

  std::string ip_;
  lab_names names_;
  std::string tag_;
  std::size_t hosts_ = 0;
  bool made_bridge_ = false;
  std::vector<std::string> namespaces_;
};

} // namespace integration
