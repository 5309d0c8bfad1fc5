// Every atom of the NetTorrent protocol (CAF 0.17 atoms: at most 10 chars).
#pragma once

#include <caf/atom.hpp>

namespace nettorrent::atom {

// Training traffic.
using forward = caf::atom_constant<caf::atom("fwd")>;   ///< activations into a swarm
using block = caf::atom_constant<caf::atom("block")>;   ///< a slice's output columns
using labels = caf::atom_constant<caf::atom("labels")>; ///< a batch's labels to the loss relay
using backward = caf::atom_constant<caf::atom("bwd")>;  ///< dLoss/dH columns into a slice
using grad = caf::atom_constant<caf::atom("grad")>;     ///< a slice's partial dX
using ack = caf::atom_constant<caf::atom("ack")>;       ///< swarm-1 slice applied its update
using done = caf::atom_constant<caf::atom("done")>;     ///< a batch left the pipeline
using loss = caf::atom_constant<caf::atom("loss")>;     ///< loss and accuracy of a batch

// Control.
using wire = caf::atom_constant<caf::atom("wire")>;
using reg = caf::atom_constant<caf::atom("register")>;
using run = caf::atom_constant<caf::atom("run")>;
using resume = caf::atom_constant<caf::atom("resume")>;
using barrier = caf::atom_constant<caf::atom("barrier")>;
using validate = caf::atom_constant<caf::atom("validate")>;
using sync = caf::atom_constant<caf::atom("sync")>;
using get_state = caf::atom_constant<caf::atom("getstate")>;
using set_state = caf::atom_constant<caf::atom("setstate")>;
using collect = caf::atom_constant<caf::atom("collect")>;
using round_get = caf::atom_constant<caf::atom("roundget")>; ///< a slice's part of a sync round
using round_set = caf::atom_constant<caf::atom("roundset")>; ///< a sync round's result into a slice
using stats = caf::atom_constant<caf::atom("stats")>;
using deadline = caf::atom_constant<caf::atom("deadline")>;
using ok = caf::atom_constant<caf::atom("ok")>;
using hello = caf::atom_constant<caf::atom("hello")>; ///< a node introduces itself

// Node actors.
using join = caf::atom_constant<caf::atom("join")>;   ///< join a run: hello to its coordinator
using spawn = caf::atom_constant<caf::atom("spawn")>; ///< spawn one actor of the run here
using hosts = caf::atom_constant<caf::atom("hosts")>; ///< the actors this node hosts
using stop = caf::atom_constant<caf::atom("stop")>;   ///< stop the actors this node hosts
using peers = caf::atom_constant<caf::atom("peers")>; ///< which nodes a newcomer links to
using probe = caf::atom_constant<caf::atom("probe")>; ///< a node times its link at start
using placed = caf::atom_constant<caf::atom("placed")>; ///< the placement planned at start
using leave = caf::atom_constant<caf::atom("leave")>;     ///< a node asks to leave gracefully
using released = caf::atom_constant<caf::atom("released")>; ///< a leaving node may go

// Recovery.
using pause = caf::atom_constant<caf::atom("pause")>;     ///< a worker stops feeding
using seek = caf::atom_constant<caf::atom("seek")>;       ///< a worker moves to a position
using restore = caf::atom_constant<caf::atom("restore")>; ///< a leader restores a replica's layer
using settled = caf::atom_constant<caf::atom("settled")>; ///< the losses of a recovery settled
using save = caf::atom_constant<caf::atom("save")>;       ///< write a run checkpoint

// Diagnosis.
using status = caf::atom_constant<caf::atom("status")>; ///< what an actor is waiting for
using watchdog = caf::atom_constant<caf::atom("watchdog")>; ///< the stall watchdog's tick
using dump = caf::atom_constant<caf::atom("dump")>; ///< print every actor's status
using halt = caf::atom_constant<caf::atom("halt")>; ///< stop at the next sync round (SIGTERM)

} // namespace nettorrent::atom
