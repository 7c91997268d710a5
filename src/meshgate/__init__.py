"""meshgate: a trio-based, embeddable routing library for the gateway layer of game server meshing.

Glossary: a *node* is one running :class:`Gateway` (it accepts clients and routes
messages); a *route* joins two nodes of one cluster; a *gateway connection* joins
nodes of two clusters (a super-cluster); an *account* isolates subjects and interest;
a *replicant* is an entity-state service attached to a node; the *shell* is the trio
side of a node, around its sans-IO core.
"""

from __future__ import annotations

# first: MESHGATE_PURE=1 must take effect before any compiled module is imported
from . import _compiled  # noqa: F401  # isort: skip
from . import authority as authority
from . import client as client
from . import config as config
from . import interest as interest
from . import protocol as protocol
from . import replicant as replicant
from . import spatial as spatial
from . import subjects as subjects
from . import topology as topology
from . import transports as transports
from . import workers as workers
from ._compiled import COMPILED as COMPILED
from ._compiled import CORE as CORE
from ._errors import ErrorCode as ErrorCode
from ._errors import InvalidSubjectError as InvalidSubjectError
from ._errors import LocalProtocolError as LocalProtocolError
from ._errors import MeshgateError as MeshgateError
from ._errors import ProtocolError as ProtocolError
from ._errors import RemoteProtocolError as RemoteProtocolError
from ._game import EntityInfo as EntityInfo
from ._game import GameInfo as GameInfo
from ._shell import DialState as DialState
from ._shell import Gateway as Gateway
from ._shell import open_gateway as open_gateway
from ._stats import AccountInfo as AccountInfo
from ._stats import AccountStatistics as AccountStatistics
from ._stats import ConnectionInfo as ConnectionInfo
from ._stats import RouteInfo as RouteInfo
from ._stats import ServerInfo as ServerInfo
from ._stats import Statistics as Statistics
from ._stats import SubscriptionsInfo as SubscriptionsInfo
from ._version import __version__ as __version__
from .client import Client as Client
from .client import ConnectionClosedError as ConnectionClosedError
from .client import Message as Message
from .client import NoGameLayerError as NoGameLayerError
from .client import NoRespondersError as NoRespondersError
from .client import PayloadTooLargeError as PayloadTooLargeError
from .client import PermissionDeniedError as PermissionDeniedError
from .client import ServerError as ServerError
from .client import Subscription as Subscription
from .client import connect as connect
from .config import ConfigError as ConfigError
from .config import GatewayConfig as GatewayConfig
from .config import Permissions as Permissions
from .config import User as User
from .replicant import ReplicantAdapter as ReplicantAdapter
from .replicant import ReplicantLink as ReplicantLink
from .workers import open_workers as open_workers

__all__ = [
    "COMPILED",
    "CORE",
    "AccountInfo",
    "AccountStatistics",
    "ConnectionInfo",
    "EntityInfo",
    "GameInfo",
    "RouteInfo",
    "ServerInfo",
    "DialState",
    "SubscriptionsInfo",
    "Client",
    "ConfigError",
    "ConnectionClosedError",
    "ErrorCode",
    "Gateway",
    "GatewayConfig",
    "Message",
    "NoGameLayerError",
    "NoRespondersError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "Permissions",
    "ReplicantAdapter",
    "ReplicantLink",
    "ServerError",
    "Statistics",
    "Subscription",
    "User",
    "connect",
    "open_gateway",
    "open_workers",
    "InvalidSubjectError",
    "LocalProtocolError",
    "MeshgateError",
    "ProtocolError",
    "RemoteProtocolError",
    "__version__",
    "authority",
    "client",
    "config",
    "interest",
    "protocol",
    "replicant",
    "spatial",
    "subjects",
    "topology",
    "transports",
]
