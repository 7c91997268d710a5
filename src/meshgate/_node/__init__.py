"""The sans-IO node core (private): a file per concern.

============================  ==============================================================
``_conn.py``                  connection kinds (one class each) and subscriptions
``_effects.py``               :class:`Effects`: what the shell must do after each call
``_outbox.py``                :class:`Outbox` (the output API of every part), ``Settings``
``_bus.py``                   :class:`Bus` (events between parts), ``Directory`` (URLs)
``_delivery.py``              :class:`Delivery`: to local subscriptions; slow-consumer policy
``_fanout.py``                :class:`FanOut`: the one fan-out (hot path) and its entry points
``_clients.py``               :class:`ClientPort`: client handshake, auth, subscriptions
``_natsport.py``              :class:`NatsPort`: clients speaking the NATS text protocol
``_natstext.py``              keepalive and errors in NATS text
``_routes.py``                :class:`RouteMesh`: routes within a cluster
``_gateways.py``              :class:`GatewayMesh`: gateways between clusters
``_backbone.py``              :class:`Backbone`: a leafnode link to a nats-server hub
``_input.py``                 :class:`FrameInput`: receive loops per kind, legality table
``_core.py``                  :class:`NodeCore`: the parts composed; connection life,
                              dispatch by kind, timers, the layer host, ``drain``
``_hooks.py``                 :class:`Layer` / :class:`Host`: how the game layer plugs in
``_views.py``                 typed snapshots for monitoring
============================  ==============================================================

Reserved subjects are in ``meshgate/_reserved.py``; the game layer in ``meshgate/_game.py``.
"""

from __future__ import annotations

from ._clients import ClientPort as ClientPort
from ._conn import ClientConnection as ClientConnection
from ._conn import Connection as Connection
from ._conn import ConnState as ConnState
from ._conn import InboundGateway as InboundGateway
from ._conn import InternalHandler as InternalHandler
from ._conn import LocalSubscription as LocalSubscription
from ._conn import NatsClientConnection as NatsClientConnection
from ._conn import OutboundGateway as OutboundGateway
from ._conn import PeerConnection as PeerConnection
from ._conn import RemoteInterest as RemoteInterest
from ._conn import RouteConnection as RouteConnection
from ._core import NodeCore as NodeCore
from ._delivery import Relevance as Relevance
from ._deltas import KeyedDeltas as KeyedDeltas
from ._effects import Effects as Effects
from ._gateways import GatewayMesh as GatewayMesh
from ._hooks import Host as Host
from ._hooks import Layer as Layer
from ._routes import RouteMesh as RouteMesh
from ._scheduler import FULL_POLICY as FULL_POLICY
from ._scheduler import Scheduler as Scheduler
from ._trace import Tracer as Tracer

__all__ = [
    "FULL_POLICY",
    "KeyedDeltas",
    "Relevance",
    "Scheduler",
    "ClientConnection",
    "ClientPort",
    "ConnState",
    "Connection",
    "Effects",
    "GatewayMesh",
    "Host",
    "InboundGateway",
    "InternalHandler",
    "Layer",
    "LocalSubscription",
    "NatsClientConnection",
    "NodeCore",
    "OutboundGateway",
    "PeerConnection",
    "RemoteInterest",
    "RouteConnection",
    "RouteMesh",
    "Tracer",
]
