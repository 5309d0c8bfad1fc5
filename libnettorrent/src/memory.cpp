#include "nettorrent/memory.hpp"

#include <cstdio>
#include <cstdlib>
#include <string_view>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace nettorrent {

int limit_malloc_arenas(int arenas) {
#if defined(__GLIBC__)
  if (arenas < 1 || std::getenv("MALLOC_ARENA_MAX") != nullptr)
    return 0;
  return mallopt(M_ARENA_MAX, arenas) == 1 ? arenas : 0;
#else
  (void)arenas;
  return 0;
#endif
}

int malloc_arenas_in_use() {
#if defined(__GLIBC__)
  char* text = nullptr;
  std::size_t size = 0;
  FILE* out = open_memstream(&text, &size);
  if (out == nullptr)
    return -1;
  const bool ok = malloc_info(0, out) == 0;
  std::fclose(out);
  int heaps = 0;
  // One <heap nr="N"> element per arena.
  for (std::string_view s{text, size}; ok;) {
    const auto at = s.find("<heap nr=");
    if (at == std::string_view::npos)
      break;
    ++heaps;
    s.remove_prefix(at + 9);
  }
  std::free(text);
  return ok ? heaps : -1;
#else
  return -1;
#endif
}

} // namespace nettorrent
