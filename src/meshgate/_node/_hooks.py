"""The small interface between the core and a layer plugged into it (the game layer).

A :class:`Layer` sees four things the core does and nothing else; it acts only
through the :class:`Host` the core gives it.  Every hook is called from inside a
core call, synchronously; what a layer publishes with :meth:`Host.inject` is routed
like a client's publish, and internal subscription handlers run after the batch of
input that matched them (never in the middle of a fan-out).

Hook costs on the hot path: the core calls :meth:`Layer.on_dollar_publish` only for
client publishes whose subject starts with ``$``, and :meth:`Layer.on_dollar_reply`
only for deliveries whose reply starts with ``$``; with no layer each costs one
``None`` test behind a one-character test.
"""

from __future__ import annotations

__all__ = ["Host", "Layer"]

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .._errors import ErrorCode
    from ..config import GatewayConfig
    from ..protocol import Encoder
    from ._conn import ClientConnection, InternalHandler, LocalSubscription, RemoteInterest


class Host(Protocol):
    """What the core offers a layer."""

    @property
    def config(self) -> GatewayConfig:
        """The node's configuration."""

    @property
    def encoder(self) -> Encoder:
        """The node's encoder (a reused packer for payloads)."""

    @property
    def now(self) -> float:
        """When the data being handled arrived (the shell's clock, in seconds)."""

    def inject(self, account: str, subject: str, payload: bytes, reply: str | None = None) -> None:
        """Publish from the node itself: routed like a client's publish."""

    def subscribe_internal(self, account: str, pattern: str, handler: InternalHandler) -> None:
        """Subscribe the node to ``pattern`` in ``account``; ``handler(subject, reply,
        payload)`` runs for every message it matches, after the current batch."""

    def notify(self, conn_id: int, sid: int, subject: str, reply: str | None, data: bytes) -> bool:
        """Send one MSG to a local connection if it is still open; False if not."""

    def error(self, conn: ClientConnection, code: ErrorCode, reason: str) -> None:
        """Send an error frame to ``conn``; it stays open."""

    def deny(self, conn: ClientConnection, reason: str) -> None:
        """A permission violation by ``conn``: counted, an error frame, it stays open."""

    def local_patterns(self, account: str) -> list[str]:
        """Plain (non-queue) patterns some local connection of ``account`` subscribes to."""


class Layer(Protocol):
    """What a layer is told by the core."""

    def on_dollar_publish(
        self, conn: ClientConnection, account: str, subject: str, reply: str | None, payload: bytes
    ) -> bool:
        """A client published on a ``$`` subject or with a ``$`` reply (after validation
        and permissions).  Return True if the layer consumed or refused it (it is not
        routed as is)."""

    def dollar_account(self, conn: ClientConnection, account: str, pattern: str) -> str | None:
        """Where a subscription of ``conn`` to a ``$`` pattern is indexed: ``account``, a
        control namespace, or None to refuse it."""

    def on_dollar_reply(
        self, reply: str, subject: str, plain: Sequence[LocalSubscription | RemoteInterest]
    ) -> None:
        """A message with a ``$`` reply was delivered to ``plain`` (local entries have a
        ``prefix``; entries with ``prefix`` None are route peers)."""

    def on_local_key(
        self, account: str, pattern: str, queue: str | None, count: int, added: bool
    ) -> None:
        """The number of local subscriptions of a (pattern, queue) key went up (``added``)
        or down to ``count``."""

    def on_client_lost(self, conn: ClientConnection) -> None:
        """An open client connection (role client or replicant) went away."""
