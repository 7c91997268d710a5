"""The interest graph, usable on its own: who wants which subject, and what each remote wants.

* :class:`SubscriptionIndex` — one account's subscriptions in a token trie with
  queue groups, reference-counted keys and a bounded match cache;
  :class:`InterestGraph` — one index per account.
* :class:`InboundInterest` / :class:`OutboundInterest` — the two ends of the
  per-gateway-connection interest state machine (optimistic, transitioning,
  interest-only).

Pure synchronous code: this package never imports trio.
"""

from __future__ import annotations

from .._compiled import restore_class_docs
from . import _index
from ._index import DEFAULT_CACHE_SIZE as DEFAULT_CACHE_SIZE
from ._index import InterestGraph as InterestGraph
from ._index import Match as Match
from ._index import SubscriptionIndex as SubscriptionIndex
from ._remote import DEFAULT_INTEREST_ONLY_THRESHOLD as DEFAULT_INTEREST_ONLY_THRESHOLD
from ._remote import InboundInterest as InboundInterest
from ._remote import InterestMode as InterestMode
from ._remote import InterestSource as InterestSource
from ._remote import OutboundInterest as OutboundInterest

__all__ = [
    "DEFAULT_CACHE_SIZE",
    "DEFAULT_INTEREST_ONLY_THRESHOLD",
    "InboundInterest",
    "InterestGraph",
    "InterestMode",
    "InterestSource",
    "Match",
    "OutboundInterest",
    "SubscriptionIndex",
]

restore_class_docs(_index)
