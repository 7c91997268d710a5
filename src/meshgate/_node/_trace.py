"""Message tracing (nats-server 2.11's ``Nats-Trace-Dest``), decided in the core.

A message whose header block names ``Nats-Trace-Dest`` makes every node it crosses
publish one *trace event* to that subject: a JSON document shaped like nats-server's
``MsgTraceEvent`` (``server``, ``request`` with the message's headers and size,
``hops``, and ``events``: one ingress, ``"in"``, then one egress, ``"eg"``, per copy
sent on: to a client, a route, a gateway or the backbone).  Copies sent to other nodes
carry ``Nats-Trace-Hop`` (``"1"``, ``"2"``, then ``"1.1"`` one node further...), so
that a collector can put the events of one message in hop order.  With
``Nats-Trace-Only: true`` nothing is delivered to clients; the message still travels
so that every node on its way reports.

Only messages with headers are looked at (:class:`~meshgate.protocol.Headered`), and
only those with the trace header take this path: the fan-out's hot path pays one type
check per message.  The event is an ordinary publish to the trace subject in the
message's account, from the node; the client that asked must be allowed to publish to
it (else its message is refused, as nats-server refuses it).

No clock here: timestamps are the core's time (``Settings.now``) plus a wall-clock
offset the shell sets (:attr:`Tracer.wall_offset`).
"""

from __future__ import annotations

__all__ = [
    "KIND_CLIENT",
    "KIND_GATEWAY",
    "KIND_LEAF",
    "KIND_ROUTER",
    "TRACE_DEST",
    "TRACE_HOP",
    "TRACE_ONLY",
    "Trace",
    "Tracer",
    "set_header",
]

import datetime
import json
from collections.abc import Callable
from typing import Any

from .._version import __version__
from ..protocol import Headered

#: the header naming the subject trace events go to
TRACE_DEST = "Nats-Trace-Dest"
#: the header a copy to another node carries: where it is in the trace's tree of hops
TRACE_HOP = "Nats-Trace-Hop"
#: the header asking for a trace without delivery to clients
TRACE_ONLY = "Nats-Trace-Only"
#: the value that turns tracing off (not a valid subject, as nats-server's)
_DISABLED = "trace disabled"
_DEST_BYTES = TRACE_DEST.encode()
_TRACEPARENT = b"traceparent"

#: connection kinds in trace events (nats-server's numbering)
KIND_CLIENT = 0
KIND_ROUTER = 1
KIND_GATEWAY = 2
KIND_LEAF = 4

_MAX_EVENTS = 1024  # egress events kept per trace (a fan-out to more is summarised)


def _parse(block: bytes) -> dict[str, list[str]] | None:
    """The header block's fields (names as written), or None if it is malformed."""
    if not block.startswith(b"NATS/1.0"):
        return None
    try:
        lines = block.decode("utf-8", "strict").split("\r\n")
    except UnicodeDecodeError:
        return None
    fields: dict[str, list[str]] = {}
    for line in lines[1:]:
        if not line:
            continue
        key, sep, value = line.partition(":")
        key = key.strip()
        value = value.strip()
        if sep and key and value:
            fields.setdefault(key, []).append(value)
    return fields


def set_header(block: bytes, name: str, value: str) -> bytes:
    """``block`` with header ``name`` set to ``value`` (replacing any earlier value)."""
    lines = block.split(b"\r\n")
    key = name.encode()
    kept = [lines[0]]
    kept.extend(x for x in lines[1:] if x and x.partition(b":")[0].strip() != key)
    kept.append(key + b": " + value.encode())
    return b"\r\n".join(kept) + b"\r\n\r\n"


class Trace:
    """One traced message crossing this node: the event being built."""

    __slots__ = ("account", "dest", "events", "headers", "hop", "hops", "next_hop", "only", "size")

    def __init__(
        self,
        dest: str,
        account: str,
        headers: dict[str, list[str]],
        size: int,
        hop: str,
        only: bool,
    ) -> None:
        self.dest = dest
        self.account = account
        self.headers = headers
        self.size = size
        #: this node's place in the tree of hops ("" at the ingress node)
        self.hop = hop
        #: copies sent on to other nodes so far
        self.hops = 0
        #: the hop of the copy being sent (for its egress event)
        self.next_hop = ""
        #: deliver to no client (``Nats-Trace-Only``)
        self.only = only
        self.events: list[dict[str, Any]] = []


class Tracer:
    """Starts traces for messages that ask for one and renders their events."""

    def __init__(self, name: str, cluster: str) -> None:
        self.name = name
        self.cluster = cluster
        #: wall-clock seconds minus the core's time (set by the shell; 0 in a simulation)
        self.wall_offset = 0.0
        #: called with every finished trace event (the shell records OpenTelemetry spans)
        self.on_event: Callable[[dict[str, Any]], None] | None = None
        #: trace events published, and traces refused (destination not permitted)
        self.events_sent = 0
        self.refused = 0
        self._seq = 0

    @staticmethod
    def wanted(headers: bytes) -> bool:
        """Cheap test on a header block: a trace destination (or, while spans are
        recorded, a ``traceparent``) may be in it."""
        return _DEST_BYTES in headers

    def wanted_otel(self, headers: bytes) -> bool:
        """With a span recorder attached, a W3C ``traceparent`` also starts a trace
        (its events go to the recorder only, unless a destination is named too)."""
        return self.on_event is not None and _TRACEPARENT in headers.lower()

    def start(
        self,
        payload: Headered,
        now: float,
        kind: int,
        cid: int,
        name: str,
        account: str,
        subject: str,
    ) -> Trace | None:
        """A trace for a message entering on a connection of ``kind``, or None (no
        valid destination and no span recorder)."""
        fields = _parse(payload.headers)
        if fields is None:
            return None
        dest = fields.get(TRACE_DEST, [""])[0]
        if dest == _DISABLED:
            return None
        if not dest and self.on_event is None:
            return None
        only = fields.get(TRACE_ONLY, [""])[0].lower() in ("1", "true", "on")
        hop = fields.get(TRACE_HOP, [""])[0] if kind != KIND_CLIENT else ""
        t = Trace(dest, account, fields, len(payload), hop, only)
        ingress: dict[str, Any] = {
            "type": "in",
            "ts": self._ts(now),
            "kind": kind,
            "cid": cid,
            "acc": account,
            "subj": subject,
        }
        if name:
            ingress["name"] = name
        t.events.append(ingress)
        return t

    def hop_payload(self, t: Trace, payload: Headered) -> Headered:
        """The copy of ``payload`` for the next node: its ``Nats-Trace-Hop`` set (a
        trace for spans only, with no destination, leaves the headers as they were)."""
        if not t.dest:
            return payload
        t.hops += 1
        t.next_hop = f"{t.hop}.{t.hops}" if t.hop else str(t.hops)
        return Headered(bytes(payload), set_header(payload.headers, TRACE_HOP, t.next_hop))

    def egress(
        self,
        t: Trace,
        now: float,
        kind: int,
        cid: int,
        name: str,
        sub: str | None = None,
        queue: str | None = None,
        error: str | None = None,
    ) -> None:
        """A copy went out (or, with ``error``, did not) on a connection of ``kind``."""
        if len(t.events) > _MAX_EVENTS:
            return
        e: dict[str, Any] = {"type": "eg", "ts": self._ts(now), "kind": kind, "cid": cid}
        if name:
            e["name"] = name
        if kind != KIND_CLIENT and t.next_hop:
            e["hop"] = t.next_hop
            t.next_hop = ""
        if sub is not None:
            e["sub"] = sub
        if queue is not None:
            e["queue"] = queue
        if error is not None:
            e["error"] = error
        t.events.append(e)

    def finish(self, t: Trace, now: float) -> bytes | None:
        """The trace event as JSON (None if only a span recorder wanted it)."""
        self._seq += 1
        ts = self._ts(now)
        event: dict[str, Any] = {
            "server": {
                "name": self.name,
                "host": "",
                "id": f"meshgate-{self.name}",
                "cluster": self.cluster,
                "ver": __version__,
                "seq": self._seq,
                "time": ts,
            },
            "request": {"header": t.headers, "msgsize": t.size},
            "events": t.events,
        }
        if t.hops:
            event["hops"] = t.hops
        if self.on_event is not None:
            self.on_event(event)
        if not t.dest:
            return None
        self.events_sent += 1
        return json.dumps(event, separators=(",", ":")).encode()

    def _ts(self, now: float) -> str:
        when = datetime.datetime.fromtimestamp(now + self.wall_offset, datetime.UTC)
        return when.isoformat().replace("+00:00", "Z")
