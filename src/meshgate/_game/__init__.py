"""The game layer: inputs follow authority, speculative relay, interest for replicants.

It plugs into the node core through the hook interface of ``_node/_hooks.py`` (a
:class:`~meshgate._node.Layer`) and acts only through the core's
:class:`~meshgate._node.Host` methods.  Nodes run it with
``GatewayConfig(replicants=True)``.

* ``_layer.py``: :class:`GameLayer`, the hooks and the handlers of the control subjects;
* ``_speculation.py``: the bounded records of speculative relays;
* ``_info.py``: what it shows (:class:`GameInfo`, :class:`EntityInfo`).

The messages it reads and writes are defined once, in :mod:`meshgate.protocol.game`;
the input router is :mod:`meshgate.authority`.
"""

from __future__ import annotations

__all__ = ["EntityInfo", "GameInfo", "GameLayer", "plug_into"]

from ._info import EntityInfo, GameInfo
from ._layer import GameLayer, plug_into
