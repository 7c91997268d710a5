"""The meshgate wire protocol: frames, legality rules and a sans-IO codec.

See ``docs/protocol.md`` for every opcode, its fields and where it is legal.  The game
layer's payloads (inputs, authority, interest, speculation) are typed messages of
:mod:`meshgate.protocol.game`; the NATS text protocol is :mod:`meshgate.protocol.nats`.
"""

from __future__ import annotations

from .._compiled import restore_class_docs
from .._errors import ErrorCode as ErrorCode
from .._errors import LocalProtocolError as LocalProtocolError
from .._errors import RemoteProtocolError as RemoteProtocolError
from . import _codec, game
from ._codec import DEFAULT_MAX_FRAME_BYTES as DEFAULT_MAX_FRAME_BYTES
from ._codec import Decoder as Decoder
from ._codec import Encoder as Encoder
from ._codec import UnpackerPool as UnpackerPool
from ._codec import to_frame as to_frame
from ._delta import ACK_STRIDE as ACK_STRIDE
from ._delta import DELTA_FEATURE as DELTA_FEATURE
from ._delta import DELTA_WINDOW as DELTA_WINDOW
from ._delta import KEY_SLOTS as KEY_SLOTS
from ._delta import KEY_SLOTS_FEATURE as KEY_SLOTS_FEATURE
from ._delta import DeltaCodec as DeltaCodec
from ._delta import DeltaError as DeltaError
from ._delta import XorDelta as XorDelta
from ._frames import FRAME_TYPES as FRAME_TYPES
from ._frames import LEGAL_RECEIVE as LEGAL_RECEIVE
from ._frames import MAX_PRIORITY as MAX_PRIORITY
from ._frames import MIN_PRIORITY as MIN_PRIORITY
from ._frames import PROTOCOL_VERSION as PROTOCOL_VERSION
from ._frames import RELAY_KEYS_FEATURE as RELAY_KEYS_FEATURE
from ._frames import AccountInterest as AccountInterest
from ._frames import AccountNoInterest as AccountNoInterest
from ._frames import ConnectionKind as ConnectionKind
from ._frames import Error as Error
from ._frames import Frame as Frame
from ._frames import GatewayMessage as GatewayMessage
from ._frames import GatewaySub as GatewaySub
from ._frames import GatewayUnsub as GatewayUnsub
from ._frames import Hello as Hello
from ._frames import Info as Info
from ._frames import InterestModeEnd as InterestModeEnd
from ._frames import InterestModeStart as InterestModeStart
from ._frames import KeyAck as KeyAck
from ._frames import Message as Message
from ._frames import NoInterest as NoInterest
from ._frames import Opcode as Opcode
from ._frames import Ping as Ping
from ._frames import Pong as Pong
from ._frames import Publish as Publish
from ._frames import Role as Role
from ._frames import RouteMessage as RouteMessage
from ._frames import RouteSub as RouteSub
from ._frames import RouteUnsub as RouteUnsub
from ._frames import Subscribe as Subscribe
from ._frames import Unsubscribe as Unsubscribe
from ._headers import HEADERS_EXT as HEADERS_EXT
from ._headers import Headered as Headered
from ._headers import to_ext as to_ext

__all__ = [
    "DEFAULT_MAX_FRAME_BYTES",
    "DELTA_FEATURE",
    "ACK_STRIDE",
    "DELTA_WINDOW",
    "KEY_SLOTS",
    "KEY_SLOTS_FEATURE",
    "DeltaCodec",
    "DeltaError",
    "XorDelta",
    "KeyAck",
    "FRAME_TYPES",
    "HEADERS_EXT",
    "LEGAL_RECEIVE",
    "MAX_PRIORITY",
    "MIN_PRIORITY",
    "PROTOCOL_VERSION",
    "RELAY_KEYS_FEATURE",
    "AccountInterest",
    "AccountNoInterest",
    "ConnectionKind",
    "Decoder",
    "Encoder",
    "Error",
    "ErrorCode",
    "Frame",
    "GatewayMessage",
    "GatewaySub",
    "GatewayUnsub",
    "Headered",
    "Hello",
    "Info",
    "InterestModeEnd",
    "InterestModeStart",
    "LocalProtocolError",
    "Message",
    "NoInterest",
    "Opcode",
    "Ping",
    "Pong",
    "Publish",
    "RemoteProtocolError",
    "Role",
    "RouteMessage",
    "RouteSub",
    "RouteUnsub",
    "Subscribe",
    "Unsubscribe",
    "UnpackerPool",
    "game",
    "to_ext",
    "to_frame",
]

restore_class_docs(_codec)
