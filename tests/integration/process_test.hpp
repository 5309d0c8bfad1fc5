// The base of the integration tests that start real processes: a fresh
// temp directory per test (test_support::temp_dir_test), children started in process groups of
// their own with their output in files, waits bounded by the test's budget, and every child killed
// (SIGKILL) and reaped in TearDown, whatever failed. The logs and files of a failed test are kept.
#pragma once

#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "child_process.hpp"
#include "cluster_files.hpp"
#include "test_support.hpp"

namespace integration {

using clock_type = std::chrono::steady_clock;
using namespace std::chrono_literals;

inline double seconds_since(clock_type::time_point t0) {
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}

class process_test : public test_support::temp_dir_test {
protected:
  /// No test may take longer than this (unless it moves deadline_); every
  /// child is killed after it.
  static constexpr auto test_budget = 120s;

  void SetUp() override {
    temp_dir_test::SetUp();
    t0_ = clock_type::now();
    deadline_ = t0_ + test_budget;
  }

  void TearDown() override {
    for (auto& c : children_)
      c->kill_all();
    if (HasFailure()) {
      // Keep the files and logs of a failed test.
      std::cerr << "test files and logs kept in " << dir_.string() << '\n';
      for (const auto& c : children_)
        std::cerr << c->log() << '\n';
    } else {
      temp_dir_test::TearDown();
    }
    children_.clear();
  }

  /// Starts a child with stdout and stderr in <name>.out / <name>.err
  /// (one file, <name>.log, if `merged`).
  child_process& start(const std::string& name, std::vector<std::string> argv,
                       const child_process::env_changes& env = {}, bool merged = false) {
    const std::string out = path(name + (merged ? ".log" : ".out"));
    const std::string err = merged ? out : path(name + ".err");
    children_.push_back(
        std::make_unique<child_process>(name, std::move(argv), dir_.string(), out, err, env));
    return *children_.back();
  }

  /// The earlier of now + `limit` and the test's budget.
  clock_type::time_point within(std::chrono::duration<double> limit) const {
    return std::min(deadline_,
                    clock_type::now() + std::chrono::duration_cast<clock_type::duration>(limit));
  }

  /// Every 15 s of a wait: one line saying what is awaited and the last
  /// line each running child printed, so a log shows whether a run moved.
  void report_wait(const std::string& what, clock_type::time_point since,
                   clock_type::time_point& next) {
    if (clock_type::now() < next)
      return;
    next += 15s;
    std::cout << "[" << static_cast<int>(seconds_since(since)) << " s waiting for " << what << "]";
    for (const auto& c : children_)
      if (c->running())
        std::cout << "\n    " << c->name() << ": " << last_line(c->out() + c->err());
    std::cout << std::endl;
  }

  static std::string last_line(const std::string& text) {
    auto end = text.find_last_not_of('\n');
    if (end == std::string::npos)
      return "(nothing printed)";
    const auto begin = text.rfind('\n', end);
    return text.substr(begin == std::string::npos ? 0 : begin + 1,
                       end - (begin == std::string::npos ? 0 : begin + 1) + 1);
  }

  /// A wait failed: its step failed, so every child still running is
  /// stopped (with its log printed by TearDown) before a next step could
  /// start, and none keeps its ports.
  void stop_children_of_failed_step() {
    for (auto& c : children_)
      if (c->running()) {
        std::cout << "stopping " << c->name() << " (its step failed)" << std::endl;
        c->kill_all();
      }
  }

  /// Waits for `c` to exit within `limit`; a timeout is a test failure.
  ::testing::AssertionResult exits_within(child_process& c, std::chrono::duration<double> limit) {
    const auto t = clock_type::now();
    const auto until = within(limit);
    auto next = t + 15s;
    while (!c.wait_until(std::min(until, next))) {
      if (clock_type::now() >= until) {
        auto failure = ::testing::AssertionFailure()
                       << c.name() << " still runs after " << seconds_since(t) << " s\n"
                       << c.log();
        stop_children_of_failed_step();
        return failure;
      }
      report_wait(c.name() + " to exit", t, next);
    }
    return ::testing::AssertionSuccess();
  }

  /// Waits until `c`'s stdout (`from_err`: stderr) contains `needle`.
  ::testing::AssertionResult prints_within(child_process& c, const std::string& needle,
                                           std::chrono::duration<double> limit,
                                           bool from_err = false) {
    const auto until = within(limit);
    const auto t = clock_type::now();
    auto next = t + 15s;
    for (;;) {
      report_wait(c.name() + " to print \"" + needle + "\"", t, next);
      const bool was_running = c.running();
      if ((from_err ? c.err() : c.out()).find(needle) != std::string::npos)
        return ::testing::AssertionSuccess();
      if (!was_running)
        return ::testing::AssertionFailure()
               << c.name() << " ended without printing \"" << needle << "\"\n"
               << c.log();
      if (clock_type::now() >= until) {
        auto failure = ::testing::AssertionFailure()
                       << c.name() << " did not print \"" << needle << "\" in time\n"
                       << c.log();
        stop_children_of_failed_step();
        return failure;
      }
      std::this_thread::sleep_for(20ms);
    }
  }

  /// `nettorrent train` on `spec`'s run sections, into `out`; must succeed.
  /// With `stdout_text`, its output goes there.
  void run_embedded(const run_spec& spec, const std::string& out,
                    std::string* stdout_text = nullptr) {
    ASSERT_NO_FATAL_FAILURE(test_support::write_file(path("run.ini"), spec.run_sections(out)));
    child_process& embedded = start("embedded", {cli, "train", "--config-file=" + path("run.ini")});
    ASSERT_TRUE(exits_within(embedded, 60s));
    ASSERT_TRUE(embedded.exited_ok()) << embedded.log();
    if (stdout_text != nullptr)
      *stdout_text = embedded.out();
  }

  const std::string cli = NETTORRENT_CLI;
  const std::string source_dir = NETTORRENT_SOURCE_DIR;
  clock_type::time_point t0_;
  clock_type::time_point deadline_;
  std::vector<std::unique_ptr<child_process>> children_;
};

} // namespace integration
