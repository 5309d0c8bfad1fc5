#include "nettorrent/signals.hpp"

#include <pthread.h>
#include <signal.h>
#include <time.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <iostream>
#include <mutex>
#include <thread>

namespace nettorrent {

namespace {

struct watcher {
  std::mutex mx;
  std::function<void(const char*)> stop;
  std::function<void()> dump;
  std::string stopping; ///< what the first stop signal does, as printed
  std::string program;
  std::string stopped_by;
  int stops = 0;
  std::atomic<bool> quit{false};
  std::thread thread;

  ~watcher() {
    quit = true;
    if (thread.joinable())
      thread.join();
  }
};

watcher& the_watcher() {
  static watcher w;
  return w;
}

/// The signals to take: SIGINT and SIGTERM unless this process was started
/// with them ignored (a background job of a script, nohup: its parent
/// decides how it is stopped), and SIGUSR1.
sigset_t watched() {
  sigset_t s;
  sigemptyset(&s);
  for (int sig : {SIGINT, SIGTERM}) {
    struct sigaction now {};
    if (sigaction(sig, nullptr, &now) == 0 && now.sa_handler == SIG_IGN)
      continue;
    sigaddset(&s, sig);
  }
  sigaddset(&s, SIGUSR1);
  return s;
}

void take(int sig) {
  auto& w = the_watcher();
  const char* name = sig == SIGINT ? "SIGINT" : sig == SIGTERM ? "SIGTERM" : "SIGUSR1";
  std::unique_lock<std::mutex> lock{w.mx};
  if (sig == SIGUSR1) {
    if (w.dump) {
      auto dump = w.dump;
      lock.unlock();
      dump();
    }
    return;
  }
  if (++w.stops > 1 || !w.stop) {
    std::cerr << w.program << ": caught " << name
              << (w.stops > 1 ? " again: exiting at once" : ": exiting") << std::endl;
    std::_Exit(128 + sig);
  }
  w.stopped_by = name;
  auto stop = w.stop;
  const std::string what = w.stopping;
  lock.unlock();
  std::cerr << w.program << ": caught " << name << ": " << what << " (send " << name
            << " again to exit at once)" << std::endl;
  stop(name);
}

} // namespace

void watch_signals(const std::string& program) {
  auto& w = the_watcher();
  if (w.thread.joinable())
    return;
  w.program = program;
  const sigset_t set = watched();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  w.thread = std::thread([set] {
    const auto& watcher = the_watcher();
    const timespec tick{0, 100'000'000}; // looks at `quit` ten times a second
    while (!watcher.quit) {
      siginfo_t info;
      const int sig = sigtimedwait(&set, &info, &tick);
      if (sig > 0)
        take(sig);
    }
  });
}

signal_actions::signal_actions(std::function<void(const char*)> stop,
                               std::function<void()> dump, std::string stopping) {
  auto& w = the_watcher();
  std::lock_guard<std::mutex> lock{w.mx};
  w.stop = std::move(stop);
  w.dump = std::move(dump);
  w.stopping = std::move(stopping);
}

signal_actions::~signal_actions() {
  auto& w = the_watcher();
  std::lock_guard<std::mutex> lock{w.mx};
  w.stop = nullptr;
  w.dump = nullptr;
}

std::string stop_signal_name() {
  auto& w = the_watcher();
  std::lock_guard<std::mutex> lock{w.mx};
  return w.stopped_by;
}

} // namespace nettorrent
