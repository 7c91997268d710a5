"""The live dashboard the monitoring port serves at ``/``.

Static files (``index.html``, ``app.js``, ``style.css``) ship in this package: no build
step, nothing fetched from elsewhere, so the page works offline.  The page polls one
JSON document, ``/dashboard.json``, built here by :class:`Aggregator`: the serving node
discovers the super-cluster from itself with :func:`meshgate.topology.discover` (peers
fetched over HTTP with h11 and trio, each with a deadline, a bounded number at once),
so the browser talks to one origin only.  Nodes seen once and unreachable since stay in
the picture, grey with their last error, for ``FORGET_AFTER`` seconds (at most
``MAX_NODES`` remembered, the longest unseen forgotten first).
"""

from __future__ import annotations

__all__ = ["FORGET_AFTER", "STATIC_FILES", "Aggregator", "static_file"]

import re
from importlib import resources
from typing import Any

import trio

from ..topology import MAX_NODES, build_graph, discover, render_svg

#: files served from this package: path -> content type
STATIC_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/dashboard/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/dashboard/style.css": ("style.css", "text/css; charset=utf-8"),
}

#: an unreachable node is forgotten after this many seconds
FORGET_AFTER = 600.0
#: a dashboard document younger than this is served again instead of rebuilt
_FRESH = 0.5
#: entities listed at most (the counts cover all)
_ENTITIES_SHOWN = 300
#: client subscriptions read per node for the cell map
_CONNZ = "/connz?subs=1&limit=2000"
_CELL = re.compile(r"^([^.]+)\.(-?\d+)\.(-?\d+)\.>$")


def static_file(path: str) -> tuple[bytes, str] | None:
    """The body and content type of the static file served at ``path``, or None."""
    entry = STATIC_FILES.get(path)
    if entry is None:
        return None
    name, ctype = entry
    return resources.files(__name__).joinpath(name).read_bytes(), ctype


class Aggregator:
    """Builds ``/dashboard.json`` for the node whose monitoring endpoint is ``self_url``:
    one discovery at a time, the last document reused for ``_FRESH`` seconds, rates
    from the previous document."""

    def __init__(self, self_url: str, *, deadline: float = 1.5) -> None:
        self.self_url = self_url.rstrip("/")
        self.deadline = deadline
        self._lock = trio.Lock()
        self._previous: dict[str, Any] | None = None
        self._document: dict[str, Any] | None = None
        #: url -> (name, cluster, last time it answered)
        self._known: dict[str, tuple[str, str, float]] = {}

    async def document(self, *, refresh: bool = False) -> dict[str, Any]:
        """The dashboard document (topology graph and SVG, node table, game layer);
        ``refresh``: build a new one even if the last is fresh."""
        async with self._lock:
            now = trio.current_time()
            last = self._document
            if not refresh and last is not None and now - last["graph"]["at"] < _FRESH:
                return last
            known = self._known
            for url, (_, _, seen) in list(known.items()):
                if now - seen > FORGET_AFTER:
                    del known[url]
            hints = {u: (n, c) for u, (n, c, _) in known.items()}
            snaps = await discover(
                [self.self_url, *known],
                deadline=self.deadline,
                extra=("/gamez", _CONNZ),
                hints=hints,
                max_nodes=MAX_NODES,
            )
            now = trio.current_time()
            for s in snaps:
                if s["url"] and s["error"] is None:
                    known.pop(s["url"], None)  # the most recently seen last
                    known[s["url"]] = (s["name"], s["cluster"], now)
            while len(known) > MAX_NODES:  # bounded: the longest unseen go first
                del known[min(known, key=lambda u: known[u][2])]
            graph = build_graph(snaps, at=now, previous=self._previous)
            self._previous = graph
            self._document = {
                "graph": graph,
                "svg": render_svg(graph),
                "game": _game(snaps, graph, last),
            }
            return self._document


def _game(
    snaps: list[dict[str, Any]], graph: dict[str, Any], before: dict[str, Any] | None
) -> dict[str, Any]:
    """The game layer across the nodes: owners, hand-overs, held inputs, verdicts (each
    node counts those of the provisional updates it delivered), relay latency (where a
    node reports ``relay_latency_ms``) and client interest per cell."""
    entities: dict[tuple[str, str], dict[str, Any]] = {}
    per_node = []
    cells: dict[str, int] = {}
    totals = {
        "held": 0,
        "retained": 0,
        "provisional": 0,
        "confirms": 0,
        "corrections": 0,
        "handovers": 0,
        "inputs_refused": 0,
        "verdict_seconds": 0.0,
    }
    latencies: list[tuple[float, int]] = []
    for s in snaps:
        game = (s.get("/gamez") or {}).get("game")
        if game:
            held = sum(e.get("held", 0) for e in game.get("entities", []))
            row = {
                "name": s["name"],
                "held": held,
                "provisional": game.get("provisional", 0),
                "confirms": game.get("confirmed", 0),
                "corrections": game.get("corrected", 0),
                "handovers": game.get("handovers", 0),
                "relay_latency_ms": game.get("relay_latency_ms"),
            }
            per_node.append(row)
            totals["held"] += held
            totals["retained"] += sum(e.get("retained", 0) for e in game.get("entities", []))
            for key, field in (
                ("provisional", "provisional"),
                ("confirms", "confirmed"),
                ("corrections", "corrected"),
                ("handovers", "handovers"),
                ("inputs_refused", "inputs_refused"),
                ("verdict_seconds", "relay_latency_sum"),
            ):
                totals[key] += game.get(field, 0)
            lat = game.get("relay_latency_ms")
            if lat is not None:
                latencies.append((lat, game.get("relays_timed", 1)))
            for e in game.get("entities", []):
                ident = (e["account"], e["entity"])
                seen = entities.get(ident)
                # the highest epoch is the freshest view of the owner
                if seen is None or e.get("epoch", 0) > seen.get("epoch", 0):
                    entities[ident] = dict(e)
        connz = s.get(_CONNZ) or {}
        for conn in connz.get("connections", []):
            for pattern in conn.get("subscriptions_list") or ():
                m = _CELL.match(pattern)
                if m:
                    cell = f"{m.group(2)},{m.group(3)}"
                    cells[cell] = cells.get(cell, 0) + 1
    owners: dict[str, int] = {}
    for e in entities.values():
        owner = e.get("owner") or "(none: inputs held)"
        owners[owner] = owners.get(owner, 0) + 1
    answered = totals["confirms"] + totals["corrections"]
    # the owner's verdict: mean time from delivering a provisional update to its
    # confirm or correction, over the last interval (else since the start)
    verdict_ms = None
    old = before["game"]["totals"] if before else None
    if old is not None and answered > old["confirms"] + old["corrections"]:
        done = answered - old["confirms"] - old["corrections"]
        verdict_ms = 1000 * (totals["verdict_seconds"] - old["verdict_seconds"]) / done
    if (verdict_ms is None or verdict_ms < 0) and answered:  # a node came or went
        verdict_ms = 1000 * totals["verdict_seconds"] / answered
    weight = sum(w for _, w in latencies)
    shown = sorted(entities.values(), key=lambda e: (e["account"], e["entity"]))[:_ENTITIES_SHOWN]
    return {
        "nodes": per_node,
        "totals": totals,
        "entities": len(entities),
        # every node sees every claim of its accounts: the most any node counted
        "handovers": max((n["handovers"] for n in per_node), default=0),
        "entity_list": shown,
        "owners": dict(sorted(owners.items())),
        "confirm_ratio": totals["confirms"] / answered if answered else None,
        "relay_latency_ms": (sum(v * w for v, w in latencies) / weight if weight else None),
        "cells": cells,
        "enabled": bool(per_node),
        "reachable": sum(1 for n in graph["nodes"] if n["reachable"]),
        "verdict_ms": verdict_ms,
    }
