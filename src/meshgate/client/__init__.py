"""The client library: connect to a node, publish, subscribe, request, flush.

Every call is trio-native; there are no ``timeout=`` parameters — wrap calls in
:func:`trio.fail_after` / :func:`trio.move_on_after`.

Underneath, :class:`ClientProtocol` is the client side of the protocol without I/O
(bytes in, events out, bytes to send; handshake, keepalive, session key, resume after
a reconnect): :class:`Client` runs it over trio streams, and a client over another
transport can run it the same way.
"""

from __future__ import annotations

from ._client import DEFAULT_SUBSCRIPTION_BUFFER as DEFAULT_SUBSCRIPTION_BUFFER
from ._client import Client as Client
from ._client import ConnectionEvent as ConnectionEvent
from ._client import Subscription as Subscription
from ._client import connect as connect
from ._client import connect_with_stream as connect_with_stream
from ._protocol import RECENT_INPUTS as RECENT_INPUTS
from ._protocol import ClientEvent as ClientEvent
from ._protocol import ClientProtocol as ClientProtocol
from ._protocol import ClientState as ClientState
from ._protocol import Connected as Connected
from ._protocol import ConnectionClosedError as ConnectionClosedError
from ._protocol import ConnectionLost as ConnectionLost
from ._protocol import Message as Message
from ._protocol import MessageReceived as MessageReceived
from ._protocol import NoGameLayerError as NoGameLayerError
from ._protocol import NoRespondersError as NoRespondersError
from ._protocol import NoticeReceived as NoticeReceived
from ._protocol import PayloadTooLargeError as PayloadTooLargeError
from ._protocol import PermissionDeniedError as PermissionDeniedError
from ._protocol import PongReceived as PongReceived
from ._protocol import Resumed as Resumed
from ._protocol import ServerError as ServerError
from ._protocol import ServerErrorReceived as ServerErrorReceived
from ._protocol import SubscriptionEnded as SubscriptionEnded

__all__ = [
    "DEFAULT_SUBSCRIPTION_BUFFER",
    "RECENT_INPUTS",
    "Client",
    "ClientEvent",
    "ClientProtocol",
    "ClientState",
    "Connected",
    "ConnectionClosedError",
    "ConnectionEvent",
    "ConnectionLost",
    "Message",
    "MessageReceived",
    "NoGameLayerError",
    "NoRespondersError",
    "NoticeReceived",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "PongReceived",
    "Resumed",
    "ServerError",
    "ServerErrorReceived",
    "Subscription",
    "SubscriptionEnded",
    "connect",
    "connect_with_stream",
]
