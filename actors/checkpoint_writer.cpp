#include "checkpoint_writer.hpp"

#include <caf/all.hpp>

#include "nettorrent/error.hpp"
#include "nettorrent/session.hpp"

namespace nettorrent {

checkpoint_writer_actor::behavior_type
checkpoint_writer(checkpoint_writer_actor::stateful_pointer<checkpoint_writer_state> self,
                  run_config cfg) {
  self->state.cfg = std::move(cfg);
  return {
      [=](atom::save, const run_state_ref& s) {
        if (!s.ptr)
          return;
        try {
          const std::string path = save_run_state(self->state.cfg, *s.ptr);
          caf::aout(self) << "checkpoint: wrote " << path << " (round " << s.ptr->round << ")"
                          << std::endl;
        } catch (const error& e) {
          // A failed periodic checkpoint does not stop training; the last
          // good one stays in place (atomic writes).
          caf::aout(self) << "checkpoint: error: " << e.what() << std::endl;
        }
      },
      [=](atom::stop) { self->quit(); },
  };
}

} // namespace nettorrent
