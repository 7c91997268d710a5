"""The trio shell around the sans-IO node core (private): a node composed of parts.

============================  ==============================================================
``_gateway.py``               :class:`Gateway`, :func:`open_gateway`: the node; tasks,
                              listeners, one reader per connection; composes the parts below
``_driver.py``                ``CoreDriver``: the one place that acts on the core's effects
                              (no trio: the test harness and the simulator use it too)
``_writer.py``                ``Writer`` and ``ConnHandle``: write scheduling, coalescing,
                              writer tasks, back-pressure, stalled and stuck links
``_dialers.py``               ``Dialers``: routes, outbound gateways, the backbone (given a
                              ``serve`` callable and a topology view; no core)
``_topology.py``              ``Topology``: what is connected, and a wake-up on each change
``_observer.py``              ``Observer``: counters and monitoring snapshots
============================  ==============================================================
"""

from __future__ import annotations

from ._dialers import DialState as DialState
from ._gateway import Gateway as Gateway
from ._gateway import open_gateway as open_gateway

__all__ = ["DialState", "Gateway", "open_gateway"]
