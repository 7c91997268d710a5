"""meshgate: a trio-based, embeddable routing library for the gateway layer of game server meshing."""

from __future__ import annotations

from . import interest as interest
from . import protocol as protocol
from . import subjects as subjects
from ._errors import ErrorCode as ErrorCode
from ._errors import InvalidSubjectError as InvalidSubjectError
from ._errors import LocalProtocolError as LocalProtocolError
from ._errors import MeshgateError as MeshgateError
from ._errors import ProtocolError as ProtocolError
from ._errors import RemoteProtocolError as RemoteProtocolError
from ._version import __version__ as __version__

__all__ = [
    "ErrorCode",
    "InvalidSubjectError",
    "LocalProtocolError",
    "MeshgateError",
    "ProtocolError",
    "RemoteProtocolError",
    "__version__",
    "interest",
    "protocol",
    "subjects",
]
