// Real child processes for integration tests: spawned with their output in
// files, killed and reaped when the guard goes out of scope (also when an
// assertion fails), so no test leaves a process behind.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <unistd.h>

#include <cctype>
#include <chrono>
#include <cstdint>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace integration {

class child_process {
public:
  /// Starts `argv` with stdout and stderr appended to `log_path`.
  child_process(std::vector<std::string> argv, std::string log_path)
    : log_(std::move(log_path)) {
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, log_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    std::vector<char*> args;
    for (auto& a : argv)
      args.push_back(a.data());
    args.push_back(nullptr);
    const int rc = posix_spawnp(&pid_, args[0], &fa, nullptr, args.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0)
      throw std::runtime_error("cannot start " + argv[0] + ": " + std::to_string(rc));
  }
  child_process(const child_process&) = delete;
  child_process& operator=(const child_process&) = delete;
  ~child_process() { kill(); }

  /// Waits up to `timeout` for the process to exit; returns its exit code,
  /// or -1 on timeout (the process keeps running).
  int wait_for(std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!exited_) {
      int status = 0;
      const pid_t r = ::waitpid(pid_, &status, WNOHANG);
      if (r == pid_) {
        exited_ = true;
        code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        break;
      }
      if (std::chrono::steady_clock::now() >= deadline)
        return -1;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return code_;
  }

  /// SIGKILL and reap (no-op once exited).
  void kill() {
    if (exited_ || pid_ <= 0)
      return;
    ::kill(pid_, SIGKILL);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    exited_ = true;
    code_ = 128 + SIGKILL;
  }

  std::string output() const {
    std::ifstream in{log_};
    std::ostringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }

  /// Waits until the output contains `text` (true) or the timeout passes or
  /// the process exits without it (false).
  bool wait_for_output(const std::string& text, std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      if (output().find(text) != std::string::npos)
        return true;
      if (wait_for(std::chrono::milliseconds(0)) >= 0)
        return output().find(text) != std::string::npos;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return false;
  }

  pid_t pid() const noexcept { return pid_; }

private:
  std::string log_;
  pid_t pid_ = -1;
  bool exited_ = false;
  int code_ = -1;
};

/// `n` distinct TCP ports on 127.0.0.1 that were free a moment ago. They
/// are drawn from 20000-32767, below Linux's ephemeral range (32768-60999):
/// ports the kernel hands out for outgoing connections — Prometheus scrapes,
/// CAF links, other tests — would otherwise take a picked port before the
/// process under test binds it. Each candidate is bound (all at once, so they
/// differ) and released.
inline std::vector<std::uint16_t> free_ports(std::size_t n) {
  static unsigned state = static_cast<unsigned>(::getpid()) * 2654435761u;
  std::vector<int> fds;
  std::vector<std::uint16_t> ports;
  for (int attempts = 0; ports.size() < n && attempts < 1000; ++attempts) {
    state = state * 1664525u + 1013904223u;
    const auto port = static_cast<std::uint16_t>(20000 + (state >> 8) % 12768);
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
