// The checkpoint writer: an actor of its own that writes the run checkpoints
// the coordinator hands it (every training.checkpoint_every sync rounds), so
// file writing and fsync never run in the coordinator's handlers.
#pragma once

#include "actors.hpp"
#include "nettorrent/config.hpp"

namespace nettorrent {

struct checkpoint_writer_state {
  static inline const char* name = "checkpoint_writer";
  run_config cfg;
};

checkpoint_writer_actor::behavior_type
checkpoint_writer(checkpoint_writer_actor::stateful_pointer<checkpoint_writer_state> self,
                  run_config cfg);

} // namespace nettorrent
