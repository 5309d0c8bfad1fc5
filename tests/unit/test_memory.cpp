// The malloc arena cap of the long-running commands (nettorrent/memory.hpp).
// Its own binary: the cap is process-wide and the test counts arenas.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <thread>
#include <vector>

#include "nettorrent/memory.hpp"

namespace nt = nettorrent;

namespace {

// Starts `n` threads that each allocate and hold the block until all of
// them hold one (a thread that exits hands its arena to the next one), and
// joins them.
void allocate_in_threads(int n) {
  std::atomic<int> holding{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < n; ++i)
    threads.emplace_back([&holding, n] {
      void* p = std::malloc(1 << 16);
      volatile char* c = static_cast<char*>(p);
      c[0] = 1;
      holding.fetch_add(1);
      while (holding.load() < n)
        std::this_thread::yield();
      std::free(p);
    });
  for (auto& t : threads)
    t.join();
}

} // namespace

TEST(MallocArenas, TheCapStopsNewThreadsFromMakingArenasOfTheirOwn) {
  if (std::getenv("MALLOC_ARENA_MAX") != nullptr) {
    // The environment's cap holds: the commands leave it alone.
    EXPECT_EQ(nt::limit_malloc_arenas(), 0);
    return;
  }
  if (nt::malloc_arenas_in_use() < 0)
    GTEST_SKIP() << "this C library does not report its arenas";
  // Uncapped, threads that allocate at once get arenas of their own (the
  // count is real, not a constant).
  const int before = nt::malloc_arenas_in_use();
  allocate_in_threads(4);
  const int uncapped = nt::malloc_arenas_in_use();
  EXPECT_GT(uncapped, before);
  EXPECT_GT(uncapped, nt::default_malloc_arenas);
  // Capped below what exists, new threads share the arenas there are.
  EXPECT_EQ(nt::limit_malloc_arenas(), nt::default_malloc_arenas);
  allocate_in_threads(8);
  EXPECT_EQ(nt::malloc_arenas_in_use(), uncapped);
}

TEST(MallocArenas, ANonsenseCapIsNotSet) {
  EXPECT_EQ(nt::limit_malloc_arenas(0), 0);
  EXPECT_EQ(nt::limit_malloc_arenas(-3), 0);
}
