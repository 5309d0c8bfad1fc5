// nemesis: seeded faults on a 3-host cluster. For each seed it draws a
// schedule (nemesis_schedule.hpp), runs config/hosts (three `nettorrent
// node`s with mutual TLS, one network namespace each, the coordinator on n0,
// which is never faulted), applies the faults at their moments — SIGKILL
// (restarted or not), SIGSTOP/SIGCONT, link down/up, the link cut to
// 1 Mbit/s, a CPU hog on both cores — and checks the run: it completes with
// a summary before a deadline; under exact settings (max_in_flight = 1,
// rounds that read the moments) its model equals the fault-free run's bit
// for bit; under the shipped settings
// its test accuracy is within 0.5 pp plus the fault-free spread of the
// fault-free mean; samples redone stay within one sync interval plus the
// in-flight batches per rolled-back replica; no node's RSS grows by more
// than 50 MB; no process, namespace or link is left behind. It ends with a
// table. Exit status: 0 all passed, 1 a check failed, 2 bad flags,
// 77 skipped (no root or no network namespaces here).
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "child_process.hpp"
#include "nemesis_schedule.hpp"
#include "netns.hpp"

namespace fs = std::filesystem;
using integration::child_process;
using integration::network_lab;
using nemesis::fault;
using nemesis::fault_kind;
using nemesis::schedule;
using nemesis::settings;
using clock_type = std::chrono::steady_clock;
using namespace std::chrono_literals;

namespace {

constexpr int exit_failed = 1;
constexpr int exit_usage = 2;
constexpr int exit_skipped = 77;
constexpr long rss_limit_bytes = 50L * 1000 * 1000;
constexpr double accuracy_margin = 0.005; // 0.5 pp beyond the fault-free spread

/// The nemesis's own names: its labs neither collide with test_multihost's
/// nor clean up theirs.
const integration::lab_names lab_prefix{"ntnem-", "nn"};

double seconds_between(clock_type::time_point a, clock_type::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

// --- flags -----------------------------------------------------------------

struct options {
  std::uint64_t seed = 1;
  std::uint64_t schedules = 1;
  std::string build_dir = NETTORRENT_BUILD_DIR;
  std::string out_dir; // "" = <build_dir>/nemesis/<time>-<pid>
  int epochs = 12;
  double window = 15; ///< s of training over which faults are drawn
  int baseline_runs = 2;
  bool dry_run = false;
};

const char* usage =
    "usage: nemesis [--seed=N] [--schedules=N] [--build-dir=DIR] [--out-dir=DIR]\n"
    "               [--epochs=N] [--window=SECONDS] [--baseline-runs=N] [--dry-run]\n"
    "  --seed=N           the first schedule's seed (default 1)\n"
    "  --schedules=N      run N schedules, seeds N, N+1, ... (default 1)\n"
    "  --build-dir=DIR    the build tree with bin/nettorrent (default: this one's)\n"
    "  --out-dir=DIR      where logs and the table go (default BUILD/nemesis/<time>-<pid>)\n"
    "  --epochs=N         epochs per run (default 12)\n"
    "  --window=SECONDS   faults start within this long after training starts (default 15)\n"
    "  --baseline-runs=N  fault-free runs of the shipped settings for the spread (default 2)\n"
    "  --dry-run          print the schedules only\n";

/// A whole non-negative integer in [lo, hi], or an error naming the flag.
std::uint64_t parse_count(const std::string& flag, const std::string& v, std::uint64_t lo,
                          std::uint64_t hi) {
  if (v.empty() || v.find_first_not_of("0123456789") != std::string::npos || v.size() > 19)
    throw std::invalid_argument(flag + "=" + v + ": not a whole non-negative number");
  const std::uint64_t n = std::stoull(v);
  if (n < lo || n > hi)
    throw std::invalid_argument(flag + "=" + v + ": must be between " + std::to_string(lo) + " and "
                                + std::to_string(hi));
  return n;
}

options parse_flags(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const auto eq = a.find('=');
    const std::string flag = a.substr(0, eq);
    const std::string v = eq == std::string::npos ? "" : a.substr(eq + 1);
    const bool has_value = eq != std::string::npos;
    auto need_value = [&] {
      if (!has_value)
        throw std::invalid_argument(flag + " needs a value (" + flag + "=...)");
    };
    if (flag == "--seed") {
      need_value();
      o.seed = parse_count(flag, v, 0, UINT64_MAX / 2);
    } else if (flag == "--schedules") {
      need_value();
      o.schedules = parse_count(flag, v, 1, 100000);
    } else if (flag == "--epochs") {
      need_value();
      o.epochs = static_cast<int>(parse_count(flag, v, 1, 1000));
    } else if (flag == "--baseline-runs") {
      need_value();
      o.baseline_runs = static_cast<int>(parse_count(flag, v, 2, 20));
    } else if (flag == "--window") {
      need_value();
      o.window = static_cast<double>(parse_count(flag, v, 1, 3600));
    } else if (flag == "--build-dir") {
      need_value();
      if (v.empty())
        throw std::invalid_argument("--build-dir= is empty");
      o.build_dir = v;
    } else if (flag == "--out-dir") {
      need_value();
      if (v.empty())
        throw std::invalid_argument("--out-dir= is empty");
      o.out_dir = v;
    } else if (flag == "--dry-run" && !has_value) {
      o.dry_run = true;
    } else if (flag == "--help" || flag == "-h") {
      std::cout << usage;
      std::exit(0);
    } else {
      throw std::invalid_argument("unknown flag " + a);
    }
  }
  return o;
}

// --- what a run's coordinator printed --------------------------------------

/// "0.4s", "1m05s", "1h02m" (format_duration) in seconds; -1 if not one.
double parse_duration(const std::string& s) {
  std::smatch m;
  if (std::regex_match(s, m, std::regex{R"(([0-9.]+)s)"}))
    return std::stod(m[1]);
  if (std::regex_match(s, m, std::regex{R"(([0-9]+)m([0-9]+)s)"}))
    return 60 * std::stod(m[1]) + std::stod(m[2]);
  if (std::regex_match(s, m, std::regex{R"(([0-9]+)h([0-9]+)m)"}))
    return 3600 * std::stod(m[1]) + 60 * std::stod(m[2]);
  return -1;
}

struct coordinator_report {
  bool summary = false; ///< "done: N samples" and "test: accuracy" printed
  double samples = -1;
  double accuracy = -1;
  int losses = 0; ///< "lost ...; recovering" lines
  std::vector<double> recovery_seconds;
  long long recoveries = -1, rolled_back = -1, redone = -1; ///< the "failures:" line
};

coordinator_report read_coordinator(const std::string& out) {
  coordinator_report r;
  std::smatch m;
  const bool done = std::regex_search(out, m, std::regex{R"(done: ([0-9]+) samples in )"});
  if (done)
    r.samples = std::stod(m[1]);
  const bool test = std::regex_search(out, m, std::regex{R"(test: accuracy ([0-9.]+))"});
  if (test)
    r.accuracy = std::stod(m[1]);
  r.summary = done && test;
  const std::regex lost{R"(coordinator: lost [^\n]*; recovering)"};
  r.losses = static_cast<int>(
      std::distance(std::sregex_iterator(out.begin(), out.end(), lost), std::sregex_iterator()));
  const std::regex rec{R"(coordinator: recovered in ([0-9.hms]+): )"};
  for (auto it = std::sregex_iterator(out.begin(), out.end(), rec); it != std::sregex_iterator();
       ++it)
    r.recovery_seconds.push_back(parse_duration((*it)[1]));
  if (std::regex_search(
          out, m,
          std::regex{
              R"(failures: ([0-9]+) recoveries \(([0-9]+) replicas rolled back\), ([0-9]+) samples redone)"})) {
    r.recoveries = std::stoll(m[1]);
    r.rolled_back = std::stoll(m[2]);
    r.redone = std::stoll(m[3]);
  }
  return r;
}

/// The last `n` lines of `text`.
std::string tail(const std::string& text, std::size_t n) {
  std::size_t at = text.size();
  if (at > 0 && text[at - 1] == '\n')
    --at;
  for (std::size_t k = 0; k < n; ++k) {
    const auto p = at == 0 ? std::string::npos : text.rfind('\n', at - 1);
    if (p == std::string::npos)
      return text;
    at = p;
  }
  return text.substr(at + 1);
}

// --- one run ----------------------------------------------------------------

/// The run's result-affecting settings, read from the shipped cluster file.
struct run_settings {
  settings mode = settings::shipped;
  long sync_every = 5000;
  long max_in_flight = 2;
  long batch_size = 64;
  long registration_timeout = 30; ///< seconds a node waits to reach the coordinator
};

long ini_integer(const std::string& text, const std::string& key) {
  std::smatch m;
  if (!std::regex_search(text, m, std::regex{"\\n" + key + R"( *= *([0-9]+))"}))
    throw std::runtime_error("config/hosts/cluster.ini has no integer " + key);
  return std::stol(m[1]);
}

struct run_outcome {
  std::string name;
  settings mode = settings::shipped;
  std::vector<std::string> failures;
  coordinator_report report;
  double seconds = -1; ///< from the start of the nodes to the coordinator's exit
  std::string model;   ///< model.ckpt bytes
  std::map<fault_kind, int> applied;
  std::string dir;
  /// Seconds from the latest fault's start to each "recovered in" line
  /// (detection included), as seen while polling the coordinator's output.
  std::vector<double> fault_to_recovered;
  /// What faulted nodes did that no check forbids (e.g. a restarted node
  /// that gave up), for the report.
  std::vector<std::string> notes;
};

class cluster_run {
public:
  cluster_run(const options& o, std::string config_dir, std::string dir, run_settings rs)
      : opts_(o), config_dir_(std::move(config_dir)), dir_(std::move(dir)), rs_(rs),
        cli_(o.build_dir + "/bin/nettorrent") {
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    log_.open(dir_ + "/nemesis.log");
  }

  /// Runs the cluster with `faults` (none for a fault-free run).
  run_outcome run(const std::string& name, const std::vector<fault>& faults) {
    run_outcome r;
    r.name = name;
    r.mode = rs_.mode;
    r.dir = dir_;
    try {
      lab_ = std::make_unique<network_lab>(3, lab_prefix);
    } catch (const std::exception& e) {
      r.failures.push_back(std::string{"cannot build the network lab: "} + e.what());
      return r;
    }
    say("lab " + lab_->tag() + ": namespaces " + lab_->ns(0) + " .. " + lab_->ns(2));
    const auto launched = clock_type::now();
    for (int i = 0; i < 3; ++i)
      nodes_[static_cast<std::size_t>(i)] = start_node(i, "n" + std::to_string(i));
    drive(r, faults, launched);
    finish(r);
    return r;
  }

private:
  struct process {
    child_process* child = nullptr;
    clock_type::time_point started;
    long rss_base = -1;
    long rss_max = -1;
    long rss_logged = 0; ///< 10 MB steps above the baseline logged so far
  };

  void say(const std::string& line) {
    const double t = seconds_between(epoch_, clock_type::now());
    const std::string s = "[" + fmt("%7.2f", t) + " s] " + line;
    std::cout << "  " << s << '\n' << std::flush;
    log_ << s << '\n' << std::flush;
  }

  std::size_t start_node(int i, const std::string& name) {
    std::vector<std::string> argv{
        cli_, "node", "--config-file=" + config_dir_ + "/node-" + std::to_string(i) + ".ini",
        "--training.output_dir=" + dir_ + "/out",
        "--training.max_epochs=" + std::to_string(opts_.epochs), "--system.metrics=false",
        // Freezes and cut links of a few seconds are noticed.
        "--system.heartbeat_interval=0.5", "--system.connection_timeout=5"};
    if (rs_.mode == settings::exact) {
      // One batch in flight, and rounds that read the moments: a rolled-back
      // replica then goes on bit for bit (config/hosts leaves them on the hosts).
      argv.push_back("--topology.max_in_flight=1");
      argv.push_back("--topology.round_moments=true");
    }
    const std::string base = dir_ + "/" + name;
    children_.push_back(std::make_unique<child_process>(
        name, lab_->in_host(static_cast<std::size_t>(i), argv), dir_, base + ".out", base + ".err",
        child_process::env_changes{}));
    procs_.push_back({children_.back().get(), clock_type::now(), -1, -1, 0});
    say("started " + name + " (pid " + std::to_string(children_.back()->pid()) + ") in "
        + lab_->ns(static_cast<std::size_t>(i)));
    return procs_.size() - 1;
  }

  child_process& coordinator() { return *procs_[nodes_[0]].child; }
  child_process& node(int i) { return *procs_[nodes_[static_cast<std::size_t>(i)]].child; }

  void sample_rss(bool training) {
    for (auto& p : procs_) {
      if (!p.child->running())
        continue;
      const long rss = rss_of(p.child->pid());
      if (rss < 0)
        continue;
      // The baseline: once training runs and the process is past its start
      // (data set loaded, actors spawned).
      if (p.rss_base < 0) {
        if (training && seconds_between(p.started, clock_type::now()) >= 3)
          p.rss_base = p.rss_max = rss;
        continue;
      }
      // Each step of 10 MB above the baseline is logged, with its moment,
      // so a growth can be told apart from the faults that came before it.
      if (rss - p.rss_base >= (p.rss_logged + 1) * 10'000'000L) {
        p.rss_logged = (rss - p.rss_base) / 10'000'000L;
        say(p.child->name() + ": RSS " + fmt("%.1f", static_cast<double>(rss) / 1e6) + " MB, "
            + fmt("%.1f", static_cast<double>(rss - p.rss_base) / 1e6) + " MB above its baseline");
      }
      p.rss_max = std::max(p.rss_max, rss);
    }
  }

  static long rss_of(pid_t pid) {
    std::ifstream f("/proc/" + std::to_string(pid) + "/status");
    for (std::string line; std::getline(f, line);)
      if (line.rfind("VmRSS:", 0) == 0)
        return std::stol(line.substr(6)) * 1024;
    return -1;
  }

  /// Starts fault `f` (true if it was applied).
  bool begin(const fault& f) {
    const auto i = static_cast<std::size_t>(std::max(f.node, 0));
    switch (f.kind) {
    case fault_kind::kill:
    case fault_kind::stop: {
      child_process& c = node(f.node);
      if (!c.running()) {
        say("skipped " + nemesis::describe(f) + ": " + c.name() + " is not running (" + c.describe()
            + ")");
        return false;
      }
      ::kill(c.pid(), f.kind == fault_kind::kill ? SIGKILL : SIGSTOP);
      if (f.kind == fault_kind::kill)
        c.wait_until(clock_type::now() + 5s);
      break;
    }
    case fault_kind::link:
      lab_->set_link(i, false);
      break;
    case fault_kind::rate:
      lab_->limit_rate(i, "1mbit");
      break;
    case fault_kind::cpu: {
      std::vector<std::string> argv{"/usr/bin/stress-ng", "--cpu", "2", "--quiet"};
      if (::access(argv[0].c_str(), X_OK) != 0)
        argv = {"/bin/sh", "-c", "while :; do :; done & while :; do :; done"};
      const std::string base = dir_ + "/cpu-hog-" + std::to_string(children_.size());
      children_.push_back(std::make_unique<child_process>(
          "cpu hog", argv, dir_, base + ".out", base + ".out", child_process::env_changes{}));
      hog_ = children_.back().get();
      break;
    }
    }
    say("begin " + nemesis::describe(f));
    return true;
  }

  /// Ends fault `f`.
  void end(const fault& f) {
    const auto i = static_cast<std::size_t>(std::max(f.node, 0));
    switch (f.kind) {
    case fault_kind::kill:
      if (!f.restart)
        return;
      nodes_[i] = start_node(f.node, "n" + std::to_string(f.node) + "-restart-"
                                         + std::to_string(++restarts_));
      break;
    case fault_kind::stop:
      ::kill(node(f.node).pid(), SIGCONT);
      break;
    case fault_kind::link:
      lab_->set_link(i, true);
      break;
    case fault_kind::rate:
      lab_->unlimit_rate(i);
      break;
    case fault_kind::cpu:
      if (hog_ != nullptr)
        hog_->kill_all();
      hog_ = nullptr;
      break;
    }
    say("end " + std::string{nemesis::name_of(f.kind)} + " on "
        + (f.node == nemesis::machine ? std::string{"all"} : "n" + std::to_string(f.node)));
  }

  void drive(run_outcome& r, const std::vector<fault>& faults, clock_type::time_point launched) {
    // Training starts when the coordinator prints its first progress line.
    const auto start_deadline = launched + 90s;
    std::optional<clock_type::time_point> t0;
    while (!t0) {
      if (coordinator().out().find("\nepoch ") != std::string::npos
          || coordinator().out().rfind("epoch ", 0) == 0)
        t0 = clock_type::now();
      else if (!coordinator().running()) {
        r.failures.push_back("the coordinator's node ended before training started ("
                             + coordinator().describe() + ")");
        return;
      } else if (clock_type::now() > start_deadline) {
        r.failures.push_back("no progress line from the coordinator within 90 s of the start");
        return;
      } else {
        sample_rss(false);
        std::this_thread::sleep_for(50ms);
      }
    }
    say("training under way (first progress line)");
    double fault_time = 0;
    for (const auto& f : faults)
      fault_time += static_cast<double>(f.duration_ms) / 1e3;
    const auto deadline =
        *t0
        + std::chrono::duration_cast<clock_type::duration>(std::chrono::duration<double>(
            120 + opts_.window + 2 * fault_time + 5.0 * opts_.epochs));
    const auto at = [&](std::int64_t ms) { return *t0 + std::chrono::milliseconds(ms); };
    std::vector<int> state(faults.size(), 0); // 0 pending, 1 on, 2 done
    auto last_rss = clock_type::now();
    std::optional<clock_type::time_point> last_fault;
    std::size_t recovered_lines = 0;
    for (;;) {
      const auto now = clock_type::now();
      for (std::size_t k = 0; k < faults.size(); ++k) {
        if (state[k] == 0 && now >= at(faults[k].at_ms)) {
          state[k] = begin(faults[k]) ? 1 : 2;
          if (state[k] == 1) {
            ++r.applied[faults[k].kind];
            last_fault = now;
          }
        }
        if (state[k] == 1 && now >= at(faults[k].end_ms())) {
          end(faults[k]);
          state[k] = 2;
        }
      }
      if (now - last_rss >= 250ms) {
        sample_rss(true);
        last_rss = now;
        const std::string out = coordinator().out();
        std::size_t n = 0;
        for (auto p = out.find("coordinator: recovered in "); p != std::string::npos;
             p = out.find("coordinator: recovered in ", p + 1))
          ++n;
        for (; recovered_lines < n; ++recovered_lines)
          if (last_fault)
            r.fault_to_recovered.push_back(seconds_between(*last_fault, now));
      }
      if (!coordinator().running())
        break;
      if (now > deadline) {
        r.failures.push_back("the run did not complete within "
                             + fmt("%.0f", seconds_between(*t0, deadline))
                             + " s of training start");
        break;
      }
      std::this_thread::sleep_for(20ms);
    }
    // Whatever is still on ends now; what has not begun never does.
    for (std::size_t k = 0; k < faults.size(); ++k) {
      if (state[k] == 1 && !(faults[k].kind == fault_kind::kill && faults[k].restart))
        end(faults[k]);
      if (state[k] == 0)
        say("not reached (the run ended first): " + nemesis::describe(faults[k]));
    }
    r.seconds = seconds_between(launched, clock_type::now());
    say("the coordinator's node ended: " + coordinator().describe());
  }

  /// Waits for every node, checks exits, memory, leftovers; tears the lab down.
  void finish(run_outcome& r) {
    const std::string out = coordinator().out();
    r.report = read_coordinator(out);
    if (coordinator().exited() && !coordinator().exited_ok())
      r.failures.push_back("the coordinator's node n0 failed: " + coordinator().describe());
    if (coordinator().exited() && !r.report.summary)
      r.failures.push_back("the coordinator printed no summary (done: ..., test: accuracy ...)");
    if (!coordinator().exited()) {
      const std::regex progress{R"(\nepoch [0-9]+/[0-9]+  samples ([0-9]+))"};
      std::size_t lines = 0;
      std::string first, last_samples;
      for (auto it = std::sregex_iterator(out.begin(), out.end(), progress);
           it != std::sregex_iterator(); ++it, ++lines) {
        if (lines == 0)
          first = (*it)[1];
        last_samples = (*it)[1];
      }
      const auto lost = out.rfind("; recovering");
      const auto recovered = out.rfind("coordinator: recovered in ");
      const bool in_recovery =
          lost != std::string::npos && (recovered == std::string::npos || recovered < lost);
      r.failures.push_back(
          std::string{"the coordinator hangs"}
          + (in_recovery ? " in a recovery (a loss without its recovered line)" : "") + "; "
          + std::to_string(lines) + " progress lines, samples " + first + " in the first, "
          + last_samples + " in the last" + (first == last_samples ? " (no progress at all)" : "")
          + "; its last lines:\n" + tail(out, 12));
    }
    // The other nodes of a finished run end too; faulted ones may end with
    // an error (they were dropped), never hang. A node restarted as the run
    // ends looks for the coordinator as long as registration lasts (each
    // attempt up to 5 s), then gives up with an error: that is its bound.
    const auto grace_s = rs_.registration_timeout + 15;
    const auto grace = clock_type::now() + std::chrono::seconds(grace_s);
    for (auto& p : procs_) {
      if (p.child->name() == "cpu hog")
        continue;
      if (!p.child->wait_until(grace) && coordinator().exited())
        r.failures.push_back(p.child->name() + " still runs " + std::to_string(grace_s)
                             + " s after the coordinator's node ended (registration_timeout "
                             + std::to_string(rs_.registration_timeout) + " s + 15 s)");
    }
    for (auto& p : procs_) {
      const std::string& n = p.child->name();
      if (n == "cpu hog" || n == "n0")
        continue;
      say(n + ": " + p.child->describe());
      // A node no fault touched must finish cleanly.
      if (untouched(n) && coordinator().exited_ok() && p.child->exited() && !p.child->exited_ok())
        r.failures.push_back(n + " (no fault on it) failed: " + p.child->describe() + "\n"
                             + tail(p.child->err(), 8));
      else if (p.child->exited() && !p.child->exited_ok()
               && !(WIFSIGNALED(p.child->status()) && WTERMSIG(p.child->status()) == SIGKILL))
        r.notes.push_back(n + " ended with " + p.child->describe() + ": "
                          + tail(p.child->err(), 2));
    }
    for (auto& c : children_)
      c->kill_all();
    for (auto& p : procs_) {
      if (p.rss_base < 0)
        continue;
      const long growth = p.rss_max - p.rss_base;
      say(p.child->name() + ": RSS " + fmt("%.1f", static_cast<double>(p.rss_base) / 1e6)
          + " MB in training, at most " + fmt("%.1f", static_cast<double>(p.rss_max) / 1e6)
          + " MB");
      if (growth > rss_limit_bytes)
        r.failures.push_back(p.child->name() + "'s RSS grew by "
                             + fmt("%.1f", static_cast<double>(growth) / 1e6) + " MB (from "
                             + fmt("%.1f", static_cast<double>(p.rss_base) / 1e6) + " MB)");
    }
    r.model = test_support::read_file(dir_ + "/out/model.ckpt");
    // Leftovers: no process of any child's group, none in the namespaces,
    // then no namespace or link of the lab.
    for (auto& c : children_)
      if (c->group_alive())
        r.failures.push_back("a process of " + c->name() + "'s group is left behind");
    for (std::size_t i = 0; i < 3; ++i)
      if (const std::string pids = lab_->pids_in(i); !pids.empty())
        r.failures.push_back("processes left in " + lab_->ns(i) + ": " + pids);
    const std::string tag = lab_->tag();
    lab_.reset();
    std::string list;
    integration::shell(integration::ip_binary() + " netns list", &list);
    if (list.find(lab_prefix.ns + tag) != std::string::npos)
      r.failures.push_back("a namespace of lab " + tag + " is left behind:\n" + list);
    integration::shell(integration::ip_binary() + " -o link show", &list);
    for (const auto& l : {lab_prefix.link + "v" + tag, lab_prefix.link + "b" + tag})
      if (list.find(l) != std::string::npos)
        r.failures.push_back("a link of lab " + tag + " (" + l + "...) is left behind");
    // Samples redone: at most one sync interval plus the batches in flight
    // per rolled-back replica.
    if (r.report.redone >= 0) {
      const long per = rs_.sync_every + rs_.max_in_flight * rs_.batch_size;
      if (r.report.redone > r.report.rolled_back * per)
        r.failures.push_back(std::to_string(r.report.redone) + " samples redone for "
                             + std::to_string(r.report.rolled_back)
                             + " rolled-back replicas: more than " + std::to_string(per)
                             + " (sync_every + max_in_flight x batch_size) each");
    } else if (r.report.summary) {
      r.failures.push_back("the summary has no failures: line");
    }
  }

  bool untouched(const std::string& name) const {
    for (const auto& n : touched_)
      if (name.rfind(n, 0) == 0)
        return false;
    return true;
  }

public:
  /// Names of nodes (n1, n2) a schedule faults: they may be dropped.
  std::vector<std::string> touched_;

private:
  const options& opts_;
  std::string config_dir_;
  std::string dir_;
  run_settings rs_;
  std::string cli_;
  std::ofstream log_;
  clock_type::time_point epoch_ = clock_type::now();
  std::unique_ptr<network_lab> lab_;
  std::vector<std::unique_ptr<child_process>> children_;
  std::vector<process> procs_;
  std::array<std::size_t, 3> nodes_{};
  child_process* hog_ = nullptr;
  int restarts_ = 0;
};

// --- the whole session -------------------------------------------------------

struct baseline {
  bool ok = false;
  std::vector<double> accuracy;
  std::string model; ///< exact settings: the reference model
  double mean = 0, spread = 0;
};

class session {
public:
  explicit session(options o) : opts_(std::move(o)) {}

  int run() {
    std::vector<schedule> schedules;
    for (std::uint64_t k = 0; k < opts_.schedules; ++k)
      schedules.push_back(
          nemesis::draw(opts_.seed + k, static_cast<std::int64_t>(opts_.window * 1000)));
    for (const auto& s : schedules)
      std::cout << nemesis::describe(s);
    if (opts_.dry_run)
      return 0;
    if (const std::string why = network_lab::unavailable(); !why.empty()) {
      std::cout << "nemesis: skipped: cannot build separate network hosts here: " << why << '\n';
      return exit_skipped;
    }
    const std::string cli = opts_.build_dir + "/bin/nettorrent";
    if (::access(cli.c_str(), X_OK) != 0) {
      std::cerr << "nemesis: " << cli << " is not an executable: build first (scripts/build.sh) "
                << "or pass --build-dir\n";
      return exit_usage;
    }
    if (opts_.out_dir.empty()) {
      char stamp[32];
      const std::time_t t = std::time(nullptr);
      std::strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", std::localtime(&t));
      opts_.out_dir = opts_.build_dir + "/nemesis/" + stamp + "-" + std::to_string(::getpid());
    }
    fs::create_directories(opts_.out_dir);
    opts_.out_dir = fs::canonical(opts_.out_dir).string();
    prepare_config();
    std::cout << "nemesis: logs in " << opts_.out_dir << '\n';
    for (const auto& s : schedules)
      run_schedule(s);
    return report();
  }

private:
  /// config/hosts as shipped, with certificates (scripts/make-certs.sh).
  void prepare_config() {
    config_dir_ = opts_.out_dir + "/config";
    fs::remove_all(config_dir_); // an earlier run into the same --out-dir (ctest run again)
    fs::create_directories(config_dir_);
    const std::string src = std::string{NETTORRENT_SOURCE_DIR} + "/config/hosts/";
    for (const auto* f : {"cluster.ini", "node-0.ini", "node-1.ini", "node-2.ini"})
      fs::copy_file(src + f, config_dir_ + "/" + f, fs::copy_options::overwrite_existing);
    const std::string cmd = std::string{NETTORRENT_SOURCE_DIR} + "/scripts/make-certs.sh "
                            + config_dir_ + "/certs n0 n1 n2 >/dev/null";
    if (std::system(cmd.c_str()) != 0)
      throw std::runtime_error("`" + cmd + "` failed");
    const std::string text = test_support::read_file(config_dir_ + "/cluster.ini");
    shipped_.sync_every = ini_integer(text, "sync_every");
    shipped_.max_in_flight = ini_integer(text, "max_in_flight");
    shipped_.batch_size = ini_integer(text, "batch_size");
    shipped_.registration_timeout = ini_integer(text, "registration_timeout");
  }

  run_settings settings_of(settings mode) const {
    run_settings rs = shipped_;
    rs.mode = mode;
    if (mode == settings::exact)
      rs.max_in_flight = 1;
    return rs;
  }

  /// The fault-free runs of `mode` (once per session).
  baseline& baseline_of(settings mode) {
    auto& b = baselines_[mode];
    if (b)
      return *b;
    b.emplace();
    const int runs = mode == settings::exact ? 1 : opts_.baseline_runs;
    const std::string tag = mode == settings::exact ? "exact" : "shipped";
    std::cout << "fault-free " << tag << " runs: " << runs << '\n';
    b->ok = true;
    for (int k = 0; k < runs; ++k) {
      cluster_run c{opts_, config_dir_,
                    opts_.out_dir + "/fault-free-" + tag + "-" + std::to_string(k),
                    settings_of(mode)};
      run_outcome r = c.run("fault-free " + tag + " " + std::to_string(k), {});
      if (r.model.empty() && r.failures.empty())
        r.failures.push_back("no model.ckpt written");
      std::cout << "  fault-free " << tag << " " << k << ": " << fmt("%.1f", r.seconds)
                << " s, test accuracy " << r.report.accuracy << '\n';
      b->ok = b->ok && r.failures.empty();
      b->accuracy.push_back(r.report.accuracy);
      if (k == 0)
        b->model = r.model;
      outcomes_.push_back(std::move(r));
    }
    const auto [lo, hi] = std::minmax_element(b->accuracy.begin(), b->accuracy.end());
    b->spread = *hi - *lo;
    double sum = 0;
    for (double a : b->accuracy)
      sum += a;
    b->mean = sum / static_cast<double>(b->accuracy.size());
    return *b;
  }

  void run_schedule(const schedule& s) {
    std::cout << "\n=== " << nemesis::describe(s);
    baseline& b = baseline_of(s.mode);
    cluster_run c{opts_, config_dir_, opts_.out_dir + "/seed-" + std::to_string(s.seed),
                  settings_of(s.mode)};
    for (const auto& f : s.faults)
      if (f.node != nemesis::machine)
        c.touched_.push_back("n" + std::to_string(f.node));
    {
      std::ofstream os(opts_.out_dir + "/seed-" + std::to_string(s.seed) + "/schedule.txt");
      os << nemesis::describe(s);
    }
    run_outcome r = c.run("seed " + std::to_string(s.seed), s.faults);
    if (!b.ok)
      r.failures.push_back("the fault-free runs of these settings failed: no reference");
    if (r.report.summary && b.ok) {
      if (s.mode == settings::exact) {
        if (r.model.empty())
          r.failures.push_back("no model.ckpt written");
        else if (r.model != b.model)
          r.failures.push_back("model.ckpt differs from the fault-free run's ("
                               + std::to_string(r.model.size()) + " vs "
                               + std::to_string(b.model.size()) + " bytes)");
      } else {
        const double allowed = accuracy_margin + b.spread;
        const double off = std::abs(r.report.accuracy - b.mean);
        if (off > allowed)
          r.failures.push_back("test accuracy " + fmt("%.4f", r.report.accuracy) + " is "
                               + fmt("%.2f", off * 100) + " pp from the fault-free mean "
                               + fmt("%.4f", b.mean) + "; allowed " + fmt("%.2f", allowed * 100)
                               + " pp (0.5 + spread " + fmt("%.2f", b.spread * 100) + ")");
      }
    }
    if (!r.failures.empty()) {
      std::cout << "FAILED seed " << s.seed << " (logs in " << r.dir << "):\n";
      for (const auto& f : r.failures)
        std::cout << "  - " << f << '\n';
    } else {
      std::cout << "passed seed " << s.seed << " in " << fmt("%.1f", r.seconds) << " s\n";
    }
    outcomes_.push_back(std::move(r));
  }

  int report() {
    std::ostringstream t;
    t << "\n" << std::string(100, '-') << "\n";
    char line[256];
    // recov: recoveries; worst s: the longest "recovered in" (loss noticed
    // to training again); fault->s: the longest time from the latest fault's
    // start to a "recovered in" line (detection included).
    std::snprintf(line, sizeof line, "%-22s %-8s %5s %5s %5s %5s %5s %8s %6s %8s %8s %8s %7s  %s\n",
                  "run", "settings", "kill", "stop", "link", "rate", "cpu", "time s", "recov",
                  "worst s", "fault->s", "redone", "acc", "result");
    t << line;
    std::map<fault_kind, int> kinds;
    int failures = 0, schedules = 0;
    double worst = -1, worst_from_fault = -1;
    long long redone = 0;
    for (const auto& r : outcomes_) {
      double w = -1;
      for (double x : r.report.recovery_seconds)
        w = std::max(w, x);
      double wf = -1;
      for (double x : r.fault_to_recovered)
        wf = std::max(wf, x);
      const bool is_schedule = r.name.rfind("seed ", 0) == 0;
      if (is_schedule) {
        ++schedules;
        for (const auto& [k, n] : r.applied)
          kinds[k] += n;
        worst = std::max(worst, w);
        worst_from_fault = std::max(worst_from_fault, wf);
        redone += std::max(0LL, r.report.redone);
      }
      failures += r.failures.empty() ? 0 : 1;
      auto n = [&](fault_kind k) {
        const auto it = r.applied.find(k);
        return it == r.applied.end() ? 0 : it->second;
      };
      std::snprintf(
          line, sizeof line, "%-22s %-8s %5d %5d %5d %5d %5d %8.1f %6lld %8s %8s %8lld %7.4f  %s\n",
          r.name.c_str(), r.mode == settings::exact ? "exact" : "shipped", n(fault_kind::kill),
          n(fault_kind::stop), n(fault_kind::link), n(fault_kind::rate), n(fault_kind::cpu),
          r.seconds, std::max(0LL, r.report.recoveries), w < 0 ? "-" : fmt("%.1f", w).c_str(),
          wf < 0 ? "-" : fmt("%.1f", wf).c_str(), std::max(0LL, r.report.redone), r.report.accuracy,
          r.failures.empty() ? "ok" : "FAILED");
      t << line;
    }
    t << std::string(100, '-') << "\n";
    t << "schedules " << schedules << "; events: kill " << kinds[fault_kind::kill] << ", stop "
      << kinds[fault_kind::stop] << ", link-down " << kinds[fault_kind::link] << ", rate-1mbit "
      << kinds[fault_kind::rate] << ", cpu-hog " << kinds[fault_kind::cpu] << "; failed runs "
      << failures << "; worst recovery " << (worst < 0 ? std::string{"-"} : fmt("%.1f s", worst))
      << " (" << (worst_from_fault < 0 ? std::string{"-"} : fmt("%.1f s", worst_from_fault))
      << " from the fault); samples redone " << redone << "\n";
    for (const auto& r : outcomes_)
      for (const auto& f : r.failures)
        t << "FAILED " << r.name << ": " << f << "\n";
    for (const auto& r : outcomes_)
      for (const auto& n : r.notes)
        t << "note " << r.name << ": " << n << "\n";
    std::cout << t.str();
    std::ofstream(opts_.out_dir + "/table.txt") << t.str();
    std::cout << "table in " << opts_.out_dir << "/table.txt\n";
    return failures == 0 ? 0 : exit_failed;
  }

  options opts_;
  std::string config_dir_;
  run_settings shipped_;
  std::map<settings, std::optional<baseline>> baselines_;
  std::vector<run_outcome> outcomes_;
};

} // namespace

int main(int argc, char** argv) {
  options o;
  try {
    o = parse_flags(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "nemesis: " << e.what() << "\n" << usage;
    return exit_usage;
  }
  try {
    return session{o}.run();
  } catch (const std::exception& e) {
    std::cerr << "nemesis: " << e.what() << '\n';
    return exit_failed;
  }
}
