// Graceful stop and status dumps for the long-running commands (train,
// centralised, node): SIGINT and SIGTERM ask the run to stop at its next
// sync round, write a run checkpoint and its outputs; a second one exits at
// once. SIGUSR1 prints what every actor waits for.
//
// The signals are blocked in every thread and taken by one thread of this
// module with sigwait, so the actions run as ordinary code (they may lock,
// allocate and send messages), never inside a signal handler.
#pragma once

#include <functional>
#include <string>

namespace nettorrent {

/// Blocks SIGINT, SIGTERM and SIGUSR1 in the calling thread, and so in every
/// thread it starts afterwards, and starts the thread that takes them. A
/// signal the process was started with ignored (SIGINT of a script's
/// background job) stays ignored. Call
/// it first in main, before any other thread exists. `program` prefixes the
/// lines it prints (e.g. "nettorrent train").
void watch_signals(const std::string& program);

/// The actions of the signals while it lives (it drops them when it goes,
/// before what they refer to does). `stop`: what the first SIGINT or
/// SIGTERM does, called on the signal thread with the signal's name;
/// without one, or after a second signal, the process exits at once with
/// status 128 + the signal's number. `dump`: what SIGUSR1 does; without
/// one it is ignored. `stopping` is what the first stop signal's line says
/// it does.
class signal_actions {
public:
  signal_actions(std::function<void(const char* name)> stop, std::function<void()> dump,
                 std::string stopping = "stopping; the run writes a run checkpoint and its "
                                        "outputs, then exits");
  ~signal_actions();
  signal_actions(const signal_actions&) = delete;
  signal_actions& operator=(const signal_actions&) = delete;
};

/// The name of the signal that asked the run to stop ("" if none did).
std::string stop_signal_name();

} // namespace nettorrent
