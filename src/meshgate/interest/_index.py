"""A token trie of subscriptions with queue groups, reference counts and a match cache.

Pure synchronous code: no trio, no clock, no I/O.
"""

from __future__ import annotations

__all__ = ["InterestGraph", "Match", "SubscriptionIndex"]

from collections.abc import Hashable, Iterator
from typing import Generic, TypeVar

from ..subjects import is_literal, tokens_match

S = TypeVar("S", bound=Hashable)

#: Default bound on the number of cached match results per index.
DEFAULT_CACHE_SIZE = 4096
_SCAN_LIMIT = 256


class Match(Generic[S]):
    """The subscriptions matching one literal subject.

    ``plain`` holds every matching non-queue subscription; ``queues`` holds one
    ``(queue_name, members)`` pair per matching queue group, members of the same
    queue name under different patterns forming one group (NATS semantics).
    Instances are shared through the match cache: treat them as immutable.
    """

    __slots__ = ("plain", "queues")

    def __init__(self, plain: tuple[S, ...], queues: tuple[tuple[str, tuple[S, ...]], ...]) -> None:
        self.plain = plain
        self.queues = queues

    def __bool__(self) -> bool:
        return bool(self.plain or self.queues)

    def __repr__(self) -> str:
        return f"Match(plain={self.plain!r}, queues={self.queues!r})"


class _Node(Generic[S]):
    __slots__ = ("children", "fwc", "plain", "pwc", "queues")

    def __init__(self) -> None:
        self.children: dict[str, _Node[S]] = {}
        self.pwc: _Node[S] | None = None  # the '*' child
        self.fwc: _Node[S] | None = None  # the '>' child (always a leaf)
        self.plain: dict[S, None] = {}  # ordered set of subscriptions ending here
        self.queues: dict[str, dict[S, None]] = {}

    def is_empty(self) -> bool:
        return not (self.children or self.pwc or self.fwc or self.plain or self.queues)


class SubscriptionIndex(Generic[S]):
    """The subscriptions of one account, keyed by pattern and optional queue group.

    A subscription is any hashable value chosen by the caller (a ``(connection,
    sid)`` pair, an object).  Many identical subscriptions — same pattern, same
    queue — are one *key* for interest propagation: :meth:`add` and
    :meth:`remove` return ``True`` exactly on that key's 0→1 and 1→0
    transitions.

    :meth:`match` answers which subscriptions match a literal subject.  Results
    are cached (at most ``cache_size`` subjects, oldest evicted first); every
    insert and remove invalidates precisely the cached subjects it affects.
    """

    def __init__(self, *, cache_size: int = DEFAULT_CACHE_SIZE) -> None:
        if cache_size < 0:
            raise ValueError("cache_size must be >= 0")
        self._root: _Node[S] = _Node()
        self._counts: dict[tuple[str, str | None], int] = {}
        self._cache: dict[str, Match[S]] = {}
        self._cache_size = cache_size
        self._size = 0
        self.cache_hits = 0
        self.cache_misses = 0

    # -- mutation -------------------------------------------------------------------------------

    def add(self, pattern: str, sub: S, queue: str | None = None) -> bool:
        """Add ``sub`` on ``pattern`` (in ``queue``); True if the key went 0→1.

        Adding the same subscription twice under the same key is a no-op.
        """
        node = self._root
        for tok in pattern.split("."):
            if tok == "*":
                if node.pwc is None:
                    node.pwc = _Node()
                node = node.pwc
            elif tok == ">":
                if node.fwc is None:
                    node.fwc = _Node()
                node = node.fwc
            else:
                child = node.children.get(tok)
                if child is None:
                    child = node.children[tok] = _Node()
                node = child
        if queue is None:
            bucket = node.plain
        else:
            bucket = node.queues.get(queue) or node.queues.setdefault(queue, {})
        if sub in bucket:
            return False
        bucket[sub] = None
        self._size += 1
        key = (pattern, queue)
        n = self._counts.get(key, 0) + 1
        self._counts[key] = n
        self._invalidate(pattern)
        return n == 1

    def remove(self, pattern: str, sub: S, queue: str | None = None) -> bool:
        """Remove ``sub`` from ``pattern`` (in ``queue``); True if the key went 1→0.

        Removing a subscription that is not there is a no-op returning False.
        """
        path: list[tuple[_Node[S], str]] = []
        node: _Node[S] = self._root
        for tok in pattern.split("."):
            path.append((node, tok))
            if tok == "*":
                nxt = node.pwc
            elif tok == ">":
                nxt = node.fwc
            else:
                nxt = node.children.get(tok)
            if nxt is None:
                return False
            node = nxt
        if queue is None:
            if sub not in node.plain:
                return False
            del node.plain[sub]
        else:
            members = node.queues.get(queue)
            if members is None or sub not in members:
                return False
            del members[sub]
            if not members:
                del node.queues[queue]
        self._size -= 1
        key = (pattern, queue)
        n = self._counts[key] - 1
        if n:
            self._counts[key] = n
        else:
            del self._counts[key]
        # prune empty nodes so memory follows the live subscriptions
        child = node
        for parent, tok in reversed(path):
            if not child.is_empty():
                break
            if tok == "*":
                parent.pwc = None
            elif tok == ">":
                parent.fwc = None
            else:
                del parent.children[tok]
            child = parent
        self._invalidate(pattern)
        return n == 0

    def _invalidate(self, pattern: str) -> None:
        cache = self._cache
        if not cache:
            return
        if is_literal(pattern):
            cache.pop(pattern, None)
            return
        if len(cache) > _SCAN_LIMIT:
            # scanning a big cache per wildcard change costs more than refilling it
            cache.clear()
            return
        ptoks = pattern.split(".")
        stale = [s for s in cache if tokens_match(ptoks, s.split("."))]
        for s in stale:
            del cache[s]

    # -- queries --------------------------------------------------------------------------------

    def match(self, subject: str) -> Match[S]:
        """Every subscription matching the literal ``subject``, grouped by queue."""
        hit = self._cache.get(subject)
        if hit is not None:
            self.cache_hits += 1
            return hit
        self.cache_misses += 1
        result = self._match_uncached(subject)
        cache = self._cache
        if self._cache_size:
            if len(cache) >= self._cache_size:
                del cache[next(iter(cache))]
            cache[subject] = result
        return result

    def _match_uncached(self, subject: str) -> Match[S]:
        plain: list[S] = []
        queues: dict[str, list[S]] = {}
        toks = subject.split(".")
        n = len(toks)

        def collect(node: _Node[S]) -> None:
            plain.extend(node.plain)
            for q, members in node.queues.items():
                lst = queues.get(q)
                if lst is None:
                    queues[q] = list(members)
                else:
                    lst.extend(members)

        def walk(node: _Node[S], i: int) -> None:
            if i == n:
                collect(node)
                return
            if node.fwc is not None:
                collect(node.fwc)
            if node.pwc is not None:
                walk(node.pwc, i + 1)
            child = node.children.get(toks[i])
            if child is not None:
                walk(child, i + 1)

        walk(self._root, 0)
        return Match(tuple(plain), tuple((q, tuple(m)) for q, m in queues.items()))

    def has_plain_interest(self, subject: str) -> bool:
        """True if at least one non-queue subscription matches ``subject``."""
        return bool(self.match(subject).plain)

    def count(self, pattern: str, queue: str | None = None) -> int:
        """How many subscriptions share the key ``(pattern, queue)``."""
        return self._counts.get((pattern, queue), 0)

    def keys(self) -> Iterator[tuple[str, str | None]]:
        """Each distinct ``(pattern, queue)`` key with at least one subscription."""
        return iter(list(self._counts))

    def plain_patterns(self) -> list[str]:
        """Each distinct pattern with at least one non-queue subscription."""
        return [p for (p, q) in self._counts if q is None]

    def queue_keys(self) -> list[tuple[str, str]]:
        """Each distinct ``(pattern, queue)`` of queue subscriptions."""
        return [(p, q) for (p, q) in self._counts if q is not None]

    @property
    def num_keys(self) -> int:
        """Number of distinct ``(pattern, queue)`` keys."""
        return len(self._counts)

    @property
    def num_nodes(self) -> int:
        """Trie nodes held, the root included (1 when empty: removals prune the rest)."""
        count = 0
        stack = [self._root]
        while stack:
            node = stack.pop()
            count += 1
            stack.extend(node.children.values())
            stack.extend(n for n in (node.pwc, node.fwc) if n is not None)
        return count

    @property
    def cache_len(self) -> int:
        """Number of subjects currently cached."""
        return len(self._cache)

    def __len__(self) -> int:
        """Number of subscriptions (not keys)."""
        return self._size


class InterestGraph(Generic[S]):
    """One :class:`SubscriptionIndex` per account; nothing is shared across accounts.

    Accounts are created on first use and forgotten when their last
    subscription goes, so memory follows the live subscriptions.
    """

    def __init__(self, *, cache_size: int = DEFAULT_CACHE_SIZE) -> None:
        self._accounts: dict[str, SubscriptionIndex[S]] = {}
        self._cache_size = cache_size

    def add(self, account: str, pattern: str, sub: S, queue: str | None = None) -> bool:
        """Add a subscription; True on the 0→1 transition of ``(account, pattern, queue)``."""
        index = self._accounts.get(account)
        if index is None:
            index = self._accounts[account] = SubscriptionIndex(cache_size=self._cache_size)
        return index.add(pattern, sub, queue)

    def remove(self, account: str, pattern: str, sub: S, queue: str | None = None) -> bool:
        """Remove a subscription; True on the 1→0 transition of ``(account, pattern, queue)``."""
        index = self._accounts.get(account)
        if index is None:
            return False
        went = index.remove(pattern, sub, queue)
        if not len(index):
            del self._accounts[account]
        return went

    def match(self, account: str, subject: str) -> Match[S] | None:
        """The matches of ``subject`` in ``account``, or None if the account has no subscriptions."""
        index = self._accounts.get(account)
        return None if index is None else index.match(subject)

    def index(self, account: str) -> SubscriptionIndex[S] | None:
        """The account's index, or None if it has no subscriptions."""
        return self._accounts.get(account)

    def has_plain_interest(self, account: str, subject: str) -> bool:
        """True if a non-queue subscription of ``account`` matches ``subject``."""
        index = self._accounts.get(account)
        return index is not None and bool(index.match(subject).plain)

    def accounts(self) -> list[str]:
        """Accounts that have at least one subscription."""
        return list(self._accounts)

    def __len__(self) -> int:
        """Total subscriptions across accounts."""
        return sum(len(i) for i in self._accounts.values())
