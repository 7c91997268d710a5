"""Helpers for testing code built on meshgate.

* :class:`SimulatedSuperCluster` — whole super-clusters of sans-IO node cores
  joined by a simulated network that you drive step by step (deliver, drop,
  heal, quiesce): deterministic, no trio, no sockets; made for hypothesis
  state machines over your own subject schemes.
* :class:`CoreHarness` — one node core whose connections' far ends the test plays
  (:class:`CorePeer`): send frames, read what the core answered, move time.
* :class:`CoreDriver` — the one driver of a node core (the shell, the harness and the
  simulator all use it): after each call into the core, hand its effects to an
  :class:`EffectSink` of your own.
* :class:`ShipState` — the ship record ``meshgate demo`` publishes as each ship's
  keyed state (a fixed 28-byte layout, positions quantised to 1/1024 unit), for
  benchmarks and tests of keyed state and deltas on the demo's real traffic.
* :class:`Scheduler` — the sans-IO per-client send scheduler of the node core (budget,
  accumulated priority, rate caps), for property tests over it alone.
* :mod:`meshgate.testing.strategies` — hypothesis strategies for subjects and
  patterns (import it only where hypothesis is installed).
* :mod:`meshgate.testing.chaos` — nodes as OS processes to kill, stop and signal, a
  fault-injecting TCP proxy (stall, slow, cut, reset one link), and a ledger that counts
  what numbered streams lost, duplicated and reordered.
* The ``memory://`` transport (:class:`meshgate.transports.MemoryTransport`)
  runs real gateways in-process without sockets.
"""

from __future__ import annotations

import sys

from .._compiled import restore_class_docs
from .._shell._driver import CoreDriver as CoreDriver
from .._shell._driver import EffectSink as EffectSink
from .._shipstate import ShipState as ShipState
from ._harness import CoreHarness as CoreHarness
from ._harness import CorePeer as CorePeer
from ._harness import Scheduler as Scheduler
from ._sim import SimClient as SimClient
from ._sim import SimLink as SimLink
from ._sim import SimulatedSuperCluster as SimulatedSuperCluster

__all__ = [
    "CoreDriver",
    "CoreHarness",
    "CorePeer",
    "EffectSink",
    "Scheduler",
    "ShipState",
    "SimClient",
    "SimLink",
    "SimulatedSuperCluster",
]

# a compiled core (mypyc) drops class docstrings: put Scheduler's back from its source
restore_class_docs(sys.modules[Scheduler.__module__])
