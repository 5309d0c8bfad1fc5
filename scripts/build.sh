#!/usr/bin/env bash
# Configures and builds NetTorrent (Release, tuned for this CPU) into build/.
# Extra arguments go to the CMake configure step, e.g. -DNETTORRENT_ASAN=ON.
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DNETTORRENT_NATIVE=ON "$@"
cmake --build build
