// Helpers every test binary shares: substring expectations, catching a
// nettorrent::error's message, whole-file I/O, a per-test temp directory and
// running the nettorrent binary.
#pragma once

#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "nettorrent/centralised.hpp"
#include "nettorrent/policy_state.hpp"
#include "nettorrent/data.hpp"
#include "nettorrent/error.hpp"

/// Expects `haystack` (anything a std::string can be built from) to contain `needle`.
#define EXPECT_CONTAINS(haystack, needle)                                                          \
  EXPECT_NE(std::string{haystack}.find(needle), std::string::npos)                                 \
      << "\"" << (haystack) << "\" does not contain \"" << (needle) << "\""

namespace test_support {

/// Runs `f` and returns the message of the nettorrent::error it throws; a
/// test failure if it throws something else or nothing.
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const nettorrent::error& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected nettorrent::error, got std::exception: " << e.what();
    return {};
  }
  ADD_FAILURE() << "expected nettorrent::error, nothing was thrown";
  return {};
}

/// The whole content of a file ("" if unreadable).
/// Two runs' sync policy states are the same, matrix by matrix, bit for bit.
inline void expect_same_policy_states(const std::vector<nettorrent::policy_state>& a,
                                      const std::vector<nettorrent::policy_state>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (std::size_t l = 0; l < a.size(); ++l) {
    ASSERT_EQ(a[l].parts.size(), b[l].parts.size()) << "layer " << l;
    for (std::size_t k = 0; k < a[l].parts.size(); ++k) {
      const auto& x = a[l].parts[k];
      const auto& y = b[l].parts[k];
      ASSERT_EQ(x.w.rows(), y.w.rows());
      ASSERT_EQ(x.w.cols(), y.w.cols());
      ASSERT_EQ(x.b.size(), y.b.size());
      EXPECT_TRUE(std::equal(x.w.data(), x.w.data() + x.w.size(), y.w.data(),
                             [](float p, float q) { return std::memcmp(&p, &q, 4) == 0; }));
      EXPECT_TRUE(std::equal(x.b.data(), x.b.data() + x.b.size(), y.b.data(),
                             [](float p, float q) { return std::memcmp(&p, &q, 4) == 0; }));
    }
  }
}

inline std::string read_file(const std::string& path) {
  std::ifstream is{path, std::ios::binary};
  return std::string{std::istreambuf_iterator<char>(is), std::istreambuf_iterator<char>()};
}

/// Replaces a file's content with `bytes`; a test failure if it cannot.
inline void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream os{path, std::ios::binary | std::ios::trunc};
  os.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(os.good()) << "cannot write " << path;
}

/// A fresh directory per test, removed afterwards:
/// $TMPDIR/nettorrent-<test>-<pid>-<n>.
class temp_dir_test : public ::testing::Test {
protected:
  void SetUp() override {
    static std::atomic<int> counter{0};
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = std::filesystem::temp_directory_path()
           / ("nettorrent-" + std::string{info->test_suite_name()} + "-" + info->name() + "-"
              + std::to_string(::getpid()) + "-" + std::to_string(counter++));
    std::filesystem::remove_all(dir_);
    ASSERT_TRUE(std::filesystem::create_directories(dir_));
  }
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  /// Paths of everything below the temp dir, relative to it, sorted.
  std::vector<std::string> recursive_listing() const {
    std::vector<std::string> out;
    for (const auto& e : std::filesystem::recursive_directory_iterator(dir_))
      out.push_back(std::filesystem::relative(e.path(), dir_).string());
    std::sort(out.begin(), out.end());
    return out;
  }

  /// Names of the entries of `sub` (the temp dir itself by default), sorted.
  std::vector<std::string> listing(const std::string& sub = "") const {
    std::vector<std::string> out;
    for (const auto& e : std::filesystem::directory_iterator(dir_ / sub))
      out.push_back(e.path().filename().string());
    std::sort(out.begin(), out.end());
    return out;
  }

  std::filesystem::path dir_;
};

/// `s` quoted for the shell.
inline std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s)
    out += c == '\'' ? std::string{"'\\''"} : std::string(1, c);
  return out + "'";
}

struct cli_run {
  int code = -1;      ///< exit status, -1 if the process did not exit normally
  std::string output; ///< stdout and stderr, interleaved
};

/// Runs the nettorrent binary (NETTORRENT_CLI) with `args` in a child
/// process, its output into the file `log`; `env` ("NAME=value ...") is set
/// for the child only.
inline cli_run run_nettorrent(const std::vector<std::string>& args, const std::string& log,
                              const std::string& env = "") {
  std::string cmd = env.empty() ? "" : "env " + env + " ";
  cmd += shell_quote(NETTORRENT_CLI);
  for (const auto& a : args)
    cmd += " " + shell_quote(a);
  cmd += " >" + shell_quote(log) + " 2>&1 </dev/null";
  const int status = std::system(cmd.c_str());
  cli_run r;
  if (status != -1 && WIFEXITED(status))
    r.code = WEXITSTATUS(status);
  r.output = read_file(log);
  return r;
}

/// Trains `trainer` on `batches` consecutive batches of `batch` samples of
/// synthetic data (its model's input and class counts, `noise`, `seed`), so
/// weights and optimizer state are non-trivial.
inline void train_on_synthetic(nettorrent::centralised_trainer& trainer, int batches,
                               std::size_t batch, float noise, std::uint64_t seed) {
  const auto& g = trainer.geometry();
  const nettorrent::image_set set = nettorrent::make_synthetic(
      batch * static_cast<std::size_t>(batches), g.front().fan_in, g.back().fan_out, noise, seed);
  nettorrent::matrix x;
  std::vector<std::uint8_t> labels(batch);
  std::vector<std::uint32_t> idx(batch);
  for (int b = 0; b < batches; ++b) {
    for (std::size_t i = 0; i < batch; ++i)
      idx[i] = static_cast<std::uint32_t>(static_cast<std::size_t>(b) * batch + i);
    nettorrent::gather_batch(set, idx.data(), idx.size(), x, labels.data());
    trainer.train_batch(x, labels.data());
  }
}

/// A run's curve.csv without its seconds column (the third): what a resumed
/// run must reproduce exactly.
inline std::string curve_without_seconds(const std::string& csv) {
  std::istringstream in{read_file(csv)};
  std::string out;
  for (std::string line; std::getline(in, line);) {
    std::vector<std::string> f;
    std::stringstream ss{line};
    for (std::string x; std::getline(ss, x, ',');)
      f.push_back(x);
    if (f.size() != 6)
      return "malformed: " + line;
    f.erase(f.begin() + 2);
    for (const auto& x : f)
      out += x + ",";
    out += "\n";
  }
  return out;
}

/// The line of `text` that starts at the first `start` (or says there is none).
inline std::string line_with(const std::string& text, const std::string& start) {
  const auto pos = text.find(start);
  if (pos == std::string::npos)
    return "(no line starting with " + start + ")";
  return text.substr(pos, text.find('\n', pos) - pos);
}

/// [epoch][sample] -> times trained, from the NETTORRENT_SAMPLE_LOG files in
/// `dir` of replicas 0..replicas-1, added to `times`; with `upto`, only
/// replica r's first upto[r] samples (what it trained up to a kept round).
using sample_counts = std::map<std::uint64_t, std::map<std::uint32_t, int>>;
inline void count_trained_samples(const std::string& dir, std::size_t replicas,
                                  const std::vector<std::uint64_t>* upto, sample_counts& times) {
  for (std::size_t r = 0; r < replicas; ++r) {
    std::ifstream in{dir + "/replica-" + std::to_string(r) + ".txt"};
    ASSERT_TRUE(in) << "no sample log of replica " << r << " in " << dir;
    std::uint64_t epoch = 0, sample = 0, n = 0;
    while ((upto == nullptr || n < (*upto)[r]) && in >> epoch >> sample) {
      ++times[epoch][static_cast<std::uint32_t>(sample)];
      ++n;
    }
  }
}

/// Every sample of `times` was trained once in its epoch.
inline void expect_each_sample_once(const sample_counts& times) {
  for (const auto& [epoch, samples] : times)
    for (const auto& [sample, n] : samples)
      EXPECT_EQ(n, 1) << "sample " << sample << " trained " << n << " times in epoch " << epoch;
}

/// Samples in shard r of `replicas` of n (data.hpp: shard_indices).
inline std::size_t shard_size(std::size_t n, std::size_t replicas, std::size_t r) {
  return n * (r + 1) / replicas - n * r / replicas;
}

} // namespace test_support
