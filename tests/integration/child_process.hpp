// Real child processes for integration tests: each in a process group of
// its own with its output in files, killed (the whole group) and reaped when
// the guard goes out of scope, also when an assertion fails, so no test
// leaves a process behind. Plus free loopback ports and a minimal HTTP GET.
#pragma once

#include "test_support.hpp"

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

extern char** environ;

namespace integration {

using test_support::read_file;

/// The whole content of a file ("" if unreadable).
/// "exit status 3", "killed by signal 9 (Killed)".
inline std::string describe_status(int status) {
  if (WIFEXITED(status))
    return "exit status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status))
    return std::string{"killed by signal "} + std::to_string(WTERMSIG(status)) + " ("
           + ::strsignal(WTERMSIG(status)) + ")";
  return "status " + std::to_string(status);
}

/// One child process in a process group of its own (so it and anything it
/// starts can be killed together), stdout and stderr in files. The
/// destructor kills the whole group with SIGKILL and reaps the child.
class child_process {
public:
  using env_changes = std::map<std::string, std::optional<std::string>>; ///< nullopt: unset

  child_process(std::string name, std::vector<std::string> argv, const std::string& cwd,
                std::string out_path, std::string err_path, const env_changes& env)
      : name_(std::move(name)), out_path_(std::move(out_path)), err_path_(std::move(err_path)) {
    // Everything the child needs is built before fork: after it, only
    // async-signal-safe calls.
    std::vector<std::string> env_strings;
    for (char** e = environ; *e != nullptr; ++e) {
      const std::string kv = *e;
      if (env.count(kv.substr(0, kv.find('='))) == 0)
        env_strings.push_back(kv);
    }
    for (const auto& [k, v] : env)
      if (v)
        env_strings.push_back(k + "=" + *v);
    std::vector<char*> args;
    for (auto& a : argv)
      args.push_back(a.data());
    args.push_back(nullptr);
    std::vector<char*> envp;
    for (auto& e : env_strings)
      envp.push_back(e.data());
    envp.push_back(nullptr);
    const bool merged = out_path_ == err_path_;
    const int out_fd = ::open(out_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    const int err_fd =
        merged ? out_fd : ::open(err_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    const int in_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (out_fd < 0 || err_fd < 0 || in_fd < 0)
      throw std::runtime_error("cannot open the output files of " + name_);
    pid_ = ::fork();
    if (pid_ == 0) {
      ::setpgid(0, 0);
      // Default dispositions and no blocked signals, whatever the test
      // runner inherited (a script cannot trap a signal ignored on entry).
      struct sigaction sa {};
      sa.sa_handler = SIG_DFL;
      for (int sig : {SIGINT, SIGQUIT, SIGTERM, SIGHUP, SIGPIPE, SIGCHLD})
        ::sigaction(sig, &sa, nullptr);
      sigset_t none;
      sigemptyset(&none);
      ::sigprocmask(SIG_SETMASK, &none, nullptr);
      if (::chdir(cwd.c_str()) != 0 || ::dup2(in_fd, 0) < 0 || ::dup2(out_fd, 1) < 0
          || ::dup2(err_fd, 2) < 0)
        ::_exit(126);
      ::execve(args[0], args.data(), envp.data());
      const char msg[] = "child_process: execve failed\n";
      [[maybe_unused]] auto n = ::write(2, msg, sizeof msg - 1);
      ::_exit(127);
    }
    ::close(in_fd);
    ::close(out_fd);
    if (!merged)
      ::close(err_fd);
    if (pid_ < 0)
      throw std::runtime_error("fork failed for " + name_);
    ::setpgid(pid_, pid_); // both sides, so no signal can race the child's own call
  }

  child_process(const child_process&) = delete;
  child_process& operator=(const child_process&) = delete;

  ~child_process() { kill_all(); }

  /// SIGKILL to the whole group (SIGCONT too, for a stopped one), then reap.
  void kill_all() {
    if (pid_ <= 0)
      return;
    ::kill(-pid_, SIGKILL);
    ::kill(-pid_, SIGCONT);
    if (!status_) {
      int st = 0;
      while (::waitpid(pid_, &st, 0) < 0 && errno == EINTR) {
      }
      status_ = st;
    }
    pid_ = -1;
  }

  const std::string& name() const { return name_; }
  pid_t pid() const { return pid_; }

  /// Reaps the child if it has exited; true while it runs.
  bool running() {
    if (status_ || pid_ <= 0)
      return false;
    int st = 0;
    const pid_t r = ::waitpid(pid_, &st, WNOHANG);
    if (r == pid_) {
      status_ = st;
      return false;
    }
    return true;
  }

  /// Waits until the child exits or `deadline` passes; true if it exited.
  bool wait_until(std::chrono::steady_clock::time_point deadline) {
    while (running()) {
      if (std::chrono::steady_clock::now() >= deadline)
        return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return true;
  }

  /// The raw wait status (valid once exited).
  int status() const { return status_.value_or(-1); }
  bool exited() const { return status_.has_value(); }
  bool exited_ok() const { return status_ && WIFEXITED(*status_) && WEXITSTATUS(*status_) == 0; }
  std::string describe() const { return status_ ? describe_status(*status_) : "still running"; }

  /// Sends `sig` to the child alone (not its group).
  void signal(int sig) { ASSERT_EQ(::kill(pid_, sig), 0) << name_ << ": " << std::strerror(errno); }

  /// True if any process of the child's group is still alive (a zombie the
  /// child did not reap counts as alive).
  bool group_alive() const { return pid_ > 0 && (::kill(-pid_, 0) == 0 || errno != ESRCH); }

  std::string out() const { return read_file(out_path_); }
  std::string err() const { return out_path_ == err_path_ ? std::string{} : read_file(err_path_); }
  /// Both, labelled, for failure messages.
  std::string log() const {
    std::string s = "--- " + name_ + " (" + describe() + ") stdout:\n" + out();
    if (out_path_ != err_path_)
      s += "--- " + name_ + " stderr:\n" + err();
    return s;
  }

private:
  std::string name_;
  std::string out_path_;
  std::string err_path_;
  pid_t pid_ = -1;
  std::optional<int> status_;
};

/// `n` distinct TCP ports on 127.0.0.1 that were free a moment ago. They
/// are drawn from 20000-32767, below Linux's ephemeral range (32768-60999):
/// ports the kernel hands out for outgoing connections — Prometheus scrapes,
/// CAF links, other tests — would otherwise take a picked port before the
/// process under test binds it. Each candidate is bound (all at once, so they
/// differ) and released.
/// A port is handed out at most once per test process: a process of an
/// earlier step that still holds it cannot steal it from a later one.
inline std::vector<std::uint16_t> free_ports(std::size_t n) {
  static unsigned state = static_cast<unsigned>(::getpid()) * 2654435761u;
  static std::set<std::uint16_t> handed_out;
  std::vector<int> fds;
  std::vector<std::uint16_t> ports;
  for (int attempts = 0; ports.size() < n && attempts < 1000; ++attempts) {
    state = state * 1664525u + 1013904223u;
    const auto port = static_cast<std::uint16_t>(20000 + (state >> 8) % 12768);
    if (handed_out.count(port) != 0)
      continue;
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
      break;
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(port);
    if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      ::close(fd);
      continue;
    }
    fds.push_back(fd);
    ports.push_back(port);
  }
  for (int fd : fds)
    ::close(fd);
  handed_out.insert(ports.begin(), ports.end());
  return ports;
}

/// One free port (see free_ports).
inline std::uint16_t free_port() {
  const auto p = free_ports(1);
  return p.empty() ? 0 : p[0];
}

/// HTTP/1.0 GET on 127.0.0.1:port; returns the body ("" on failure).
inline std::string http_get(std::uint16_t port, const std::string& target) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(port);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return {};
  }
  const std::string req = "GET " + target + " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
  if (::send(fd, req.data(), req.size(), 0) < 0) {
    ::close(fd);
    return {};
  }
  std::string resp;
  char buf[65536];
  for (ssize_t n; (n = ::recv(fd, buf, sizeof buf, 0)) > 0;)
    resp.append(buf, static_cast<std::size_t>(n));
  ::close(fd);
  const auto body = resp.find("\r\n\r\n");
  return body == std::string::npos ? std::string{} : resp.substr(body + 4);
}

/// Percent-encodes a query parameter.
inline std::string url_encode(const std::string& s) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) != 0 || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

} // namespace integration
