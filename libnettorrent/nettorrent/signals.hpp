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

/// What the first SIGINT or SIGTERM does (called on the signal thread with
/// the signal's name). Without an action, or after a second signal, the
/// process exits at once with status 128 + the signal's number.
void on_stop_signal(std::function<void(const char* name)> action);

/// What SIGUSR1 does (called on the signal thread); without one it is ignored.
void on_dump_signal(std::function<void()> action);

/// Drops both actions (before what they refer to goes away).
void clear_signal_actions();

/// The name of the signal that asked the run to stop ("" if none did).
std::string stop_signal_name();

} // namespace nettorrent
