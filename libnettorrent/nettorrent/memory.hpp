// The process's heap. glibc's malloc gives every thread that allocates its
// own arena (up to 8 per core) and keeps what is freed in it for the next
// allocation of that thread. In a node the transient buffers of a recovery
// or of the end of a run are freed again, but each of a dozen threads keeps
// its share: the resident size climbed by 35-55 MB under faults and CPU
// contention, while the live heap grew by under 10 MB. The training's hot
// path does not allocate, so a few arenas cost no contention.
#pragma once

namespace nettorrent {

/// The arenas the long-running commands allow, unless the user sets
/// MALLOC_ARENA_MAX (which glibc reads at start and this leaves alone).
inline constexpr int default_malloc_arenas = 2;

/// Caps the malloc arenas at `arenas` (glibc's M_ARENA_MAX) unless the
/// environment sets MALLOC_ARENA_MAX. Returns the cap it set, or 0 if it set
/// none (the environment's holds, or the C library is not glibc). Call it
/// before the process starts threads: arenas that exist stay.
int limit_malloc_arenas(int arenas = default_malloc_arenas);

/// The number of malloc arenas the process has created (from malloc_info),
/// or -1 where the C library cannot tell.
int malloc_arenas_in_use();

} // namespace nettorrent
