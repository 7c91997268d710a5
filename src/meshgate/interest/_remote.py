"""Per-remote interest state for gateway connections: both ends of the interest
exchange described in ``docs/concepts.md`` ("Interest between clusters").

Between two clusters, messages flow on the *outbound* connection of the
sender and interest flows back on the same connection, which the receiver
sees as *inbound*.  :class:`InboundInterest` is the receiver's half: it
decides which interest frames to send back.  :class:`OutboundInterest` is the
sender's half: it applies those frames and answers "forward this subject?".

Both are synchronous and I/O-free; frames go out as return values.

The nats-server trap (an account-level no-interest under interest-only mode
silencing the account until reconnect) cannot happen here by construction:
the receiver never emits :class:`~meshgate.protocol.AccountNoInterest` once an
account is interest-only, and the sender never lets an account-level notice
touch an account that is interest-only or transitioning.
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_INTEREST_ONLY_THRESHOLD",
    "InboundInterest",
    "InterestMode",
    "InterestSource",
    "OutboundInterest",
]

import enum
from typing import Any, Protocol

from .._errors import ErrorCode, RemoteProtocolError
from ..protocol._frames import (
    AccountInterest,
    AccountNoInterest,
    Frame,
    GatewaySub,
    GatewayUnsub,
    InterestModeEnd,
    InterestModeStart,
    NoInterest,
)
from ..subjects import is_literal, match
from ._index import SubscriptionIndex

#: Number of no-interest notices per account after which the receiver switches it.
DEFAULT_INTEREST_ONLY_THRESHOLD = 1000


class InterestMode(enum.Enum):
    """How a sender decides what to forward for one (connection, account)."""

    #: forward everything except subjects (or the account) the remote said it does not want
    OPTIMISTIC = "Optimistic"
    #: the remote is dumping its interest; still optimistic, but positive interest is recorded
    TRANSITIONING = "Transitioning"
    #: forward only subjects that match the remote's positive interest
    INTEREST_ONLY = "Interest-Only"


class InterestSource(Protocol):
    """What the receiving side needs to know about its own cluster's interest."""

    def has_plain_interest(self, account: str, subject: str) -> bool:
        """True if a non-queue subscription of ``account`` matches ``subject``."""

    def index(self, account: str) -> SubscriptionIndex[Any] | None:
        """The account's subscription index, or None if it has no subscriptions."""

    def accounts(self) -> list[str]:
        """Accounts with at least one subscription."""


class _In:
    __slots__ = ("account_no_interest", "mode", "no_interest")

    def __init__(self, mode: InterestMode) -> None:
        self.mode = mode
        self.no_interest: set[str] = set()
        self.account_no_interest = False


class InboundInterest:
    """The receiving side of one gateway connection.

    ``source`` is the cluster-wide interest of the receiving node (local and
    route subscriptions).  The owner calls :meth:`on_unwanted` when a message
    arrived with no plain match, and :meth:`on_interest_added` /
    :meth:`on_interest_removed` on the 0→1 / 1→0 transitions of a
    ``(account, pattern, queue)`` key; each returns the frames to send back.
    """

    def __init__(
        self,
        source: InterestSource,
        *,
        threshold: int = DEFAULT_INTEREST_ONLY_THRESHOLD,
        interest_only: bool = False,
    ) -> None:
        if threshold < 1:
            raise ValueError("threshold must be >= 1")
        self._source = source
        self.threshold = threshold
        self.interest_only = interest_only
        self._accounts: dict[str, _In] = {}

    def _state(self, account: str) -> _In:
        st = self._accounts.get(account)
        if st is None:
            mode = InterestMode.INTEREST_ONLY if self.interest_only else InterestMode.OPTIMISTIC
            st = self._accounts[account] = _In(mode)
        return st

    def start(self) -> list[Frame]:
        """Frames to send when the connection opens: all queue interest, and in
        forced interest-only mode all plain interest too."""
        out: list[Frame] = []
        for account in self._source.accounts():
            index = self._source.index(account)
            if index is None:
                continue
            if self.interest_only:
                self._state(account)
                out.extend(GatewaySub(account, p, None) for p in index.plain_patterns())
            out.extend(GatewaySub(account, p, q) for p, q in index.queue_keys())
        return out

    def on_unwanted(self, account: str, subject: str) -> list[Frame]:
        """A message on ``subject`` arrived and no plain subscription wanted it."""
        st = self._state(account)
        if st.mode is not InterestMode.OPTIMISTIC:
            return []  # in flight before the switch; interest-only never says "no"
        if st.account_no_interest or subject in st.no_interest:
            return []  # already said; this one was in flight
        if self._source.index(account) is None:
            st.account_no_interest = True
            return [AccountNoInterest(account)]
        if len(st.no_interest) >= self.threshold:
            return self.switch(account)
        st.no_interest.add(subject)
        return [NoInterest(account, subject)]

    def switch(self, account: str) -> list[Frame]:
        """Switch ``account`` to interest-only: start marker, full dump, end marker."""
        st = self._state(account)
        if st.mode is InterestMode.INTEREST_ONLY:
            return []
        st.mode = InterestMode.INTEREST_ONLY
        st.no_interest = set()
        st.account_no_interest = False
        index = self._source.index(account)
        patterns = index.plain_patterns() if index is not None else []
        return [
            InterestModeStart(account),
            *(GatewaySub(account, p, None) for p in patterns),
            InterestModeEnd(account),
        ]

    def on_interest_added(self, account: str, pattern: str, queue: str | None) -> list[Frame]:
        """The cluster's first subscription on ``(account, pattern, queue)`` appeared."""
        if queue is not None:
            return [GatewaySub(account, pattern, queue)]
        st = self._state(account)
        if st.mode is InterestMode.INTEREST_ONLY:
            return [GatewaySub(account, pattern, None)]
        out: list[Frame] = []
        if st.account_no_interest:
            st.account_no_interest = False
            out.append(AccountInterest(account))
        ni = st.no_interest
        if ni:
            if is_literal(pattern):
                if pattern in ni:
                    ni.discard(pattern)
                    out.append(GatewaySub(account, pattern, None))
            else:
                covered = [s for s in ni if match(pattern, s)]
                if covered:
                    ni.difference_update(covered)
                    out.append(GatewaySub(account, pattern, None))
        return out

    def on_interest_removed(self, account: str, pattern: str, queue: str | None) -> list[Frame]:
        """The cluster's last subscription on ``(account, pattern, queue)`` went away."""
        if queue is not None:
            return [GatewayUnsub(account, pattern, queue)]
        st = self._accounts.get(account)
        mode = st.mode if st is not None else self._default_mode()
        if mode is InterestMode.INTEREST_ONLY:
            return [GatewayUnsub(account, pattern, None)]
        return []

    def _default_mode(self) -> InterestMode:
        return InterestMode.INTEREST_ONLY if self.interest_only else InterestMode.OPTIMISTIC

    def mode(self, account: str) -> InterestMode:
        """The account's mode on this connection."""
        st = self._accounts.get(account)
        return st.mode if st is not None else self._default_mode()

    def no_interest_count(self, account: str) -> int:
        """How many subjects of ``account`` are currently marked no-interest."""
        st = self._accounts.get(account)
        return len(st.no_interest) if st is not None else 0

    def accounts(self) -> list[str]:
        """Accounts this connection has state for."""
        return list(self._accounts)


class _Out:
    __slots__ = ("account_no_interest", "index", "mode", "no_interest")

    def __init__(self, mode: InterestMode, cache_size: int) -> None:
        self.mode = mode
        self.no_interest: set[str] = set()
        self.account_no_interest = False
        self.index: SubscriptionIndex[tuple[str, str | None]] = SubscriptionIndex(
            cache_size=cache_size
        )


class OutboundInterest:
    """The sending side of one gateway connection: what the remote wants.

    Feed it the interest frames that arrive on the connection with
    :meth:`receive`; ask :meth:`should_forward` and :meth:`queue_groups` per
    message.  With ``interest_only=True`` (negotiated in the handshake) every
    account starts interest-only and an account never mentioned is not wanted.
    """

    def __init__(self, *, interest_only: bool = False, cache_size: int = 1024) -> None:
        self.interest_only = interest_only
        self._cache_size = cache_size
        self._accounts: dict[str, _Out] = {}

    def _state(self, account: str) -> _Out:
        st = self._accounts.get(account)
        if st is None:
            mode = InterestMode.INTEREST_ONLY if self.interest_only else InterestMode.OPTIMISTIC
            st = self._accounts[account] = _Out(mode, self._cache_size)
        return st

    def receive(self, frame: Frame) -> None:
        """Apply one interest frame from the remote."""
        if isinstance(frame, GatewaySub):
            st = self._state(frame.account)
            key = (frame.pattern, frame.queue)
            if frame.queue is not None:
                st.index.add(frame.pattern, key, frame.queue)
                return
            if st.mode is not InterestMode.OPTIMISTIC:
                st.index.add(frame.pattern, key)
            if st.mode is not InterestMode.INTEREST_ONLY and st.no_interest:
                if is_literal(frame.pattern):
                    st.no_interest.discard(frame.pattern)
                else:
                    st.no_interest = {s for s in st.no_interest if not match(frame.pattern, s)}
        elif isinstance(frame, GatewayUnsub):
            st = self._state(frame.account)
            st.index.remove(frame.pattern, (frame.pattern, frame.queue), frame.queue)
        elif isinstance(frame, NoInterest):
            st = self._state(frame.account)
            if st.mode is not InterestMode.INTEREST_ONLY:
                st.no_interest.add(frame.subject)
        elif isinstance(frame, AccountNoInterest):
            st = self._state(frame.account)
            # never let an account-level notice silence an interest-only account (§5 trap)
            if st.mode is InterestMode.OPTIMISTIC:
                st.account_no_interest = True
        elif isinstance(frame, AccountInterest):
            st = self._state(frame.account)
            st.account_no_interest = False
        elif isinstance(frame, InterestModeStart):
            st = self._state(frame.account)
            if st.mode is InterestMode.OPTIMISTIC:
                st.mode = InterestMode.TRANSITIONING
        elif isinstance(frame, InterestModeEnd):
            st = self._state(frame.account)
            if st.mode is InterestMode.OPTIMISTIC:
                raise RemoteProtocolError(
                    f"interest-only end marker for account {frame.account!r} without a start",
                    ErrorCode.MALFORMED,
                )
            st.mode = InterestMode.INTEREST_ONLY
            st.no_interest = set()
            st.account_no_interest = False
        else:
            raise RemoteProtocolError(
                f"{type(frame).__name__} is not an interest frame", ErrorCode.ILLEGAL_FOR_ROLE
            )

    def should_forward(self, account: str, subject: str) -> bool:
        """True if a message on ``subject`` should go to the remote for its plain subscribers."""
        st = self._accounts.get(account)
        if st is None:
            return not self.interest_only
        if st.mode is InterestMode.INTEREST_ONLY:
            return bool(st.index.match(subject).plain)
        if st.account_no_interest:
            return False
        return subject not in st.no_interest

    def queue_groups(self, account: str, subject: str) -> tuple[str, ...]:
        """Names of the remote's queue groups that match ``subject``."""
        st = self._accounts.get(account)
        if st is None:
            return ()
        return tuple(q for q, _ in st.index.match(subject).queues)

    def mode(self, account: str) -> InterestMode:
        """The account's mode on this connection."""
        st = self._accounts.get(account)
        if st is None:
            return InterestMode.INTEREST_ONLY if self.interest_only else InterestMode.OPTIMISTIC
        return st.mode

    def no_interest_count(self, account: str) -> int:
        """Subjects of ``account`` currently withheld because the remote said no."""
        st = self._accounts.get(account)
        return len(st.no_interest) if st is not None else 0

    def num_subs(self, account: str) -> int:
        """Distinct remote interest keys recorded for ``account``."""
        st = self._accounts.get(account)
        return st.index.num_keys if st is not None else 0

    def accounts(self) -> list[str]:
        """Accounts this connection has state for."""
        return list(self._accounts)
