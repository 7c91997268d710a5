"""``meshgate topology URL...``: discover a running super-cluster and draw it as SVG.

Discovery (:func:`discover`) starts from one or more monitoring URLs and follows the
peers each node names at ``/peerz`` (the route and gateway peers with the monitoring
URL each announced in its handshake), breadth first, a bounded number of nodes, each
request with a deadline.  A node that cannot be reached is kept, with its error, and
drawn grey instead of failing the whole picture.  :func:`build_graph` turns the
snapshots into clusters, nodes, route edges and gateway edges (one per direction
between two clusters, summed over their connections) with round-trip times and, given
an earlier graph, message rates.  :func:`render_svg` lays the graph out without
overlaps: clusters are boxes on a ring, each labelled at its top; nodes are labelled
boxes on a ring inside their cluster; gateway arrows run as chords of a circle inside
every cluster box, so they never cross a box or a label.  The same discovery feeds the
monitoring port's dashboard (``/dashboard.json``).
"""

from __future__ import annotations

__all__ = [
    "MAX_NODES",
    "MODE_COLOURS",
    "build_graph",
    "collect",
    "discover",
    "fetch_json",
    "render_svg",
    "topology_main",
]

import json
import math
import re
from collections.abc import Iterable, Sequence
from typing import Any
from xml.sax.saxutils import escape, quoteattr

import h11
import trio

#: stroke colour of a gateway arrow per interest mode (several modes: "mixed")
MODE_COLOURS = {
    "Optimistic": "#2b8a3e",
    "Transitioning": "#e67700",
    "Interest-Only": "#1864ab",
    "mixed": "#862e9c",
}

#: discovery stops after this many nodes (reachable or not)
MAX_NODES = 512
_CONCURRENCY = 16
_MAX_BODY = 64 * 1024 * 1024


async def fetch_json(url: str, path: str, *, deadline: float = 5.0) -> Any:
    """GET ``path`` from a monitoring URL (``http://host:port``, meshgate's or
    nats-server's) and decode the JSON; OSError on any failure or after ``deadline``
    seconds."""
    host, port = url.removeprefix("http://").rstrip("/").rsplit(":", 1)
    conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=64 * 1024)
    status = 0
    body = bytearray()
    try:
        with trio.fail_after(deadline):
            stream = await trio.open_tcp_stream(host, int(port))
            async with stream:
                request = h11.Request(
                    method="GET",
                    target=path,
                    headers=[
                        ("Host", host),
                        ("Connection", "close"),
                        ("Accept", "application/json"),
                    ],
                )
                await stream.send_all(conn.send(request) + conn.send(h11.EndOfMessage()))
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        conn.receive_data(await stream.receive_some(65536))
                    elif isinstance(event, h11.Response):
                        status = event.status_code
                    elif isinstance(event, h11.Data):
                        body += event.data
                        if len(body) > _MAX_BODY:
                            raise OSError(f"{url}{path}: response larger than {_MAX_BODY} bytes")
                    elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                        break
    except trio.TooSlowError:
        raise OSError(f"{url}{path}: no complete response within {deadline}s") from None
    except h11.ProtocolError as exc:
        raise OSError(f"{url}{path}: bad HTTP response: {exc}") from None
    except ValueError as exc:  # a malformed URL (port)
        raise OSError(f"{url}: {exc}") from None
    if status != 200:
        raise OSError(f"{url}{path}: HTTP status {status}")
    try:
        return json.loads(body)
    except ValueError as exc:
        raise OSError(f"{url}{path}: not JSON: {exc}") from None


async def _snapshot(url: str, extra: Sequence[str], deadline: float) -> dict[str, Any]:
    """One node's monitoring documents; ``error`` set (and the rest missing) when the
    node cannot be read."""
    snap: dict[str, Any] = {"url": url, "error": None}
    try:
        for path in ("/varz", "/routez", "/gatewayz"):
            snap[path.strip("/")] = await fetch_json(url, path, deadline=deadline)
    except OSError as exc:
        snap["error"] = str(exc) or type(exc).__name__
        return snap
    varz = snap["varz"]
    snap["name"] = varz.get("server_name") or url
    snap["cluster"] = (varz.get("cluster") or {}).get("name") or ""
    try:  # older nodes and nats-server have no /peerz: no peers to follow from here
        snap["peers"] = (await fetch_json(url, "/peerz", deadline=deadline)).get("peers", [])
    except OSError:
        snap["peers"] = []
    for path in extra:
        try:
            snap[path] = await fetch_json(url, path, deadline=deadline)
        except OSError:
            snap[path] = None
    return snap


async def discover(
    urls: Iterable[str],
    *,
    max_nodes: int = MAX_NODES,
    deadline: float = 3.0,
    extra: Sequence[str] = (),
    hints: dict[str, tuple[str, str]] | None = None,
) -> list[dict[str, Any]]:
    """Snapshots of every node reachable from ``urls`` by following ``/peerz``.

    Each snapshot has ``url``, ``name``, ``cluster`` and ``error`` (None, or why the
    node could not be read: it is kept and drawn grey), and for a node that answered its
    ``varz``, ``routez``, ``gatewayz``, ``peers`` and each path of ``extra`` (None where
    that one failed).  A peer named by a node but announcing no monitoring URL appears
    with an error saying so.  At most ``max_nodes`` nodes, at most 16 requests at once,
    each within ``deadline`` seconds, each node within twice that.  ``hints`` maps a URL to the ``(name, cluster)``
    it was last known as (an unreachable node keeps its name)."""
    names = dict(hints or {})
    seen: dict[str, None] = {}
    frontier = [u.rstrip("/") for u in urls]
    snaps: list[dict[str, Any]] = []
    limiter = trio.CapacityLimiter(_CONCURRENCY)
    named: dict[str, tuple[str, str | None]] = {}  # peers without a monitoring URL
    while frontier and len(seen) < max_nodes:
        batch = []
        for u in frontier:
            if u not in seen and len(seen) < max_nodes:
                seen[u] = None
                batch.append(u)
        frontier = []
        results: list[dict[str, Any]] = []

        async def one(u: str, results: list[dict[str, Any]] = results) -> None:
            async with limiter:
                # a slow node costs at most twice the deadline, however many paths
                with trio.move_on_after(2 * deadline) as scope:
                    results.append(await _snapshot(u, extra, deadline))
                if scope.cancelled_caught:
                    results.append({"url": u, "error": f"no answer within {2 * deadline}s"})

        async with trio.open_nursery() as nursery:
            for u in batch:
                nursery.start_soon(one, u)
        for s in sorted(results, key=lambda s: s["url"]):
            if s["error"] is not None:
                s["name"], s["cluster"] = names.get(s["url"], (s["url"], ""))
            else:
                names[s["url"]] = (s["name"], s["cluster"])
                for p in s["peers"]:
                    url = p.get("monitor_url")
                    if url:
                        names.setdefault(url.rstrip("/"), (p["name"], p.get("cluster") or ""))
                        frontier.append(url.rstrip("/"))
                    elif p.get("name"):
                        named.setdefault(p["name"], (p.get("cluster"), s["name"]))
            snaps.append(s)
    # one entry per node: the same node reached at two URLs counts once
    out: dict[str, dict[str, Any]] = {}
    for s in snaps:
        if s["name"] not in out or out[s["name"]]["error"] is not None:
            out[s["name"]] = s
    for name, (cluster, via) in sorted(named.items()):
        if name not in out and len(out) < max_nodes:
            out[name] = {
                "url": None,
                "name": name,
                "cluster": cluster or "",
                "error": f"no monitoring URL announced (a peer of {via})",
            }
    return sorted(out.values(), key=lambda s: (s["cluster"], s["name"]))


async def collect(urls: list[str]) -> list[dict[str, Any]]:
    """One snapshot per node named in ``urls`` (no discovery); unreachable nodes are
    kept with their error."""
    return [await _snapshot(u.rstrip("/"), (), 5.0) for u in urls]


def _rtt_seconds(value: Any) -> float | None:
    """A round-trip time as ``/routez`` (Go's ``"1.2ms"``) or seconds (a number)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, str) or not _GO_DURATION.fullmatch(value):
        return None
    parts: list[tuple[str, str]] = _GO_PART.findall(value)
    return float(sum(float(n) * _GO_UNITS[u] for n, u in parts))


_GO_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "\u00b5s": 1e-6, "ns": 1e-9}
_GO_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|us|\u00b5s|ns|h|m|s)")
_GO_DURATION = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|us|\u00b5s|ns|h|m|s))+")


def _rtt_text(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f}\u00b5s"
    if seconds < 1:
        return f"{seconds * 1e3:.1f}ms"
    return f"{seconds:.2f}s"


def _rate_text(rate: float | None) -> str:
    if rate is None:
        return ""
    if rate >= 10_000:
        return f"{rate / 1000:.0f}k/s"
    if rate >= 1000:
        return f"{rate / 1000:.1f}k/s"
    return f"{rate:.0f}/s"


def build_graph(
    snapshots: Sequence[dict[str, Any]],
    *,
    at: float = 0.0,
    previous: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Clusters, nodes, routes and gateway edges of the snapshots (JSON-ready).

    ``at`` is when the snapshots were taken (seconds, any clock); with ``previous`` (a
    graph built earlier from the same clock) node and edge message rates are the
    counters' growth per second, else None."""
    dt = at - previous["at"] if previous is not None else 0.0
    before_nodes = {n["name"]: n for n in previous["nodes"]} if previous and dt > 0 else {}
    before_edges = {e["id"]: e for e in previous["edges"]} if previous and dt > 0 else {}

    def rate(now: float, old: dict[str, Any] | None, key: str) -> float | None:
        if old is None or old.get(key) is None:
            return None
        return max(0.0, (now - float(old[key])) / dt)

    nodes = []
    clusters: dict[str, list[str]] = {}
    for s in snapshots:
        clusters.setdefault(s["cluster"], []).append(s["name"])
        v = s.get("varz") or {}
        node: dict[str, Any] = {
            "name": s["name"],
            "cluster": s["cluster"],
            "url": s["url"],
            "error": s["error"],
            "reachable": s["error"] is None,
        }
        if s["error"] is None:
            node.update(
                clients=v.get("connections", 0),
                routes=v.get("routes", 0),
                outbound_gateways=v.get("outbound_gateways", 0),
                inbound_gateways=v.get("inbound_gateways", 0),
                subscriptions=v.get("subscriptions", 0),
                in_msgs=v.get("in_msgs", 0),
                out_msgs=v.get("out_msgs", 0),
                slow_consumers=v.get("slow_consumers", 0),
                resyncs=v.get("resyncs", 0),
                dropped_msgs=v.get("dropped_msgs", 0),
                uptime=v.get("uptime", ""),
            )
            old = before_nodes.get(s["name"])
            node["in_msgs_rate"] = rate(node["in_msgs"], old, "in_msgs")
            node["out_msgs_rate"] = rate(node["out_msgs"], old, "out_msgs")
        nodes.append(node)
    edges: list[dict[str, Any]] = []
    routes: dict[str, dict[str, Any]] = {}
    for s in snapshots:
        for r in (s.get("routez") or {}).get("routes", []):
            peer = r.get("remote_name")
            if not peer:
                continue
            a, b = sorted((s["name"], peer))
            edge = routes.get(f"route:{a}:{b}")
            if edge is None:
                edge = routes[f"route:{a}:{b}"] = {
                    "id": f"route:{a}:{b}",
                    "kind": "route",
                    "from": a,
                    "to": b,
                    "cluster": s["cluster"],
                    "rtt": None,
                    "msgs": 0,
                }
                # each side counts what it sent: the sum is the traffic both ways
            edge["msgs"] += r.get("out_msgs", 0)
            rtt = _rtt_seconds(r.get("rtt"))
            if rtt is not None:
                edge["rtt"] = rtt if edge["rtt"] is None else min(edge["rtt"], rtt)
    edges.extend(routes.values())
    gateways: dict[str, dict[str, Any]] = {}
    for s in snapshots:
        out = (s.get("gatewayz") or {}).get("outbound_gateways") or {}
        for remote, gw in sorted(out.items()):
            conn = gw.get("connection") or {}
            key = f"gateway:{s['cluster']}:{remote}"
            edge = gateways.get(key)
            if edge is None:
                edge = gateways[key] = {
                    "id": key,
                    "kind": "gateway",
                    "from": s["cluster"],
                    "to": remote,
                    "rtt": None,
                    "msgs": 0,
                    "connections": [],
                    "modes": {},
                }
            rtt = _rtt_seconds(conn.get("rtt"))
            edge["msgs"] += conn.get("out_msgs", 0)
            edge["connections"].append(
                {
                    "from": s["name"],
                    "to": conn.get("name"),
                    "rtt": rtt,
                    "msgs": conn.get("out_msgs"),
                }
            )
            if rtt is not None:
                edge["rtt"] = rtt if edge["rtt"] is None else max(edge["rtt"], rtt)
            for acc in gw.get("accounts") or []:
                account = acc.get("account") or acc.get("name") or "?"
                modes = edge["modes"].setdefault(account, [])
                if acc.get("interest_mode") not in modes:
                    modes.append(acc.get("interest_mode"))
    for edge in gateways.values():
        found = {m for ms in edge["modes"].values() for m in ms}
        edge["mode"] = found.pop() if len(found) == 1 else ("mixed" if found else "Optimistic")
    edges.extend(gateways.values())
    for edge in edges:
        edge["rate"] = rate(edge["msgs"], before_edges.get(edge["id"]), "msgs")
        edge["label"] = " ".join(t for t in (_rtt_text(edge["rtt"]), _rate_text(edge["rate"])) if t)
    return {
        "at": at,
        "clusters": sorted(clusters),
        "nodes": nodes,
        "edges": edges,
        "unreachable": sum(1 for n in nodes if not n["reachable"]),
    }


# -- layout -----------------------------------------------------------------------------------

_CHAR_W = 7.2  # width of one character at 12px sans-serif, generously
_NODE_H = 24.0
_LABEL_H = 14.0


class _Boxes:
    """Placed rectangles; a new one is accepted only where it overlaps none."""

    def __init__(self) -> None:
        self.boxes: list[tuple[float, float, float, float]] = []

    def free(self, x: float, y: float, w: float, h: float) -> bool:
        m = 1.0  # a pixel apart: the coordinates are written rounded
        return all(
            x + w + m <= bx or bx + bw + m <= x or y + h + m <= by or by + bh + m <= y
            for bx, by, bw, bh in self.boxes
        )

    def add(self, x: float, y: float, w: float, h: float) -> None:
        self.boxes.append((x, y, w, h))


def _text_w(text: str) -> float:
    return len(text) * _CHAR_W + 10


def render_svg(graph_or_snapshots: dict[str, Any] | Sequence[dict[str, Any]]) -> str:
    """Draw a graph (:func:`build_graph`; snapshots are turned into one) as an SVG
    document.  Nothing overlaps: node boxes, cluster labels and edge labels are placed
    apart (an edge label with no free place is left out of the picture and kept in the
    edge's tooltip); gateway arrows never cross a cluster box or its label."""
    graph = (
        graph_or_snapshots
        if isinstance(graph_or_snapshots, dict)
        else build_graph(graph_or_snapshots)
    )
    clusters: dict[str, list[dict[str, Any]]] = {c: [] for c in graph["clusters"]}
    for n in graph["nodes"]:
        clusters.setdefault(n["cluster"], []).append(n)
    names = sorted(clusters)
    widest = max((_text_w(n["name"]) for n in graph["nodes"]), default=40.0)
    node_w = max(40.0, widest)
    largest = max((len(v) for v in clusters.values()), default=1)
    # nodes on a ring inside their cluster box: neighbours a node diagonal apart
    diag = math.hypot(node_w, _NODE_H) + 16
    node_ring = 0.0 if largest == 1 else max(40.0, diag / (2 * math.sin(math.pi / largest)))
    half = node_ring + diag / 2 + 12  # half the side of the node area
    label_h = 26.0
    box_w = max(2 * half, max((_text_w(f"cluster {c}") for c in names), default=0) + 20)
    box_h = 2 * half + label_h
    box_r = math.hypot(box_w, box_h) / 2  # a circle around the whole box
    gap = 56.0
    if len(names) <= 1:
        ring = 0.0
    else:
        ring = max(box_r + 120, (2 * box_r + gap) / (2 * math.sin(math.pi / len(names))))
    # gateway arrows run inside the circle that touches no box: its radius
    inner = max(0.0, ring - box_r - 8)
    header = 24.0 + 18 * (len(MODE_COLOURS) + 2)
    size = 2 * (ring + box_r) + 2 * 30
    unreachable = [n for n in graph["nodes"] if not n["reachable"]]
    width = max(size, 640.0)
    height = header + size + 18 * len(unreachable) + (24 if unreachable else 0)
    cx0, cy0 = width / 2, header + size / 2
    placed = _Boxes()
    pos: dict[str, tuple[float, float]] = {}
    anchor: dict[str, tuple[float, float]] = {}
    parts: list[str] = []
    for i, c in enumerate(names):
        angle = 2 * math.pi * i / max(1, len(names)) - math.pi / 2
        x, y = cx0 + ring * math.cos(angle), cy0 + ring * math.sin(angle)
        bx, by = x - box_w / 2, y - box_h / 2
        placed.add(bx, by, box_w, box_h)  # edge labels stay off every cluster box
        anchor[c] = (cx0 + inner * math.cos(angle), cy0 + inner * math.sin(angle))
        nodes = sorted(clusters[c], key=lambda n: n["name"])
        ncx, ncy = x, by + label_h + half
        r = node_ring if len(nodes) > 1 else 0.0
        for j, n in enumerate(nodes):
            a = 2 * math.pi * j / max(1, len(nodes)) - math.pi / 2
            pos[n["name"]] = (ncx + r * math.cos(a), ncy + r * math.sin(a))
        # the stub joins the box to its arrow anchor, along the ray to the centre
        ex, ey = _box_exit(x, y, box_w / 2, box_h / 2, cx0 - x, cy0 - y)
        parts.append(
            f'<g class="cluster-group" data-cluster={quoteattr(c)}>'
            f'<rect class="cluster" x="{bx:.1f}" y="{by:.1f}" width="{box_w:.1f}" '
            f'height="{box_h:.1f}" rx="16" fill="#f1f3f5" stroke="#868e96"/>'
            f'<text class="cluster-label" x="{x:.1f}" y="{by + 18:.1f}" text-anchor="middle" '
            f'font-weight="bold" font-size="13">cluster {escape(c)}</text>'
            + (
                f'<line class="stub" x1="{ex:.1f}" y1="{ey:.1f}" x2="{anchor[c][0]:.1f}" '
                f'y2="{anchor[c][1]:.1f}" stroke="#adb5bd" stroke-width="1.5"/>'
                if len(names) > 1
                else ""
            )
            + "</g>"
        )
    labels: list[str] = []
    edge_parts: list[str] = []
    node_boxes = [(x - node_w / 2, y - _NODE_H / 2, node_w, _NODE_H) for x, y in pos.values()]
    label_space = _Boxes()
    label_space.boxes.extend(node_boxes)
    # labels of gateway arrows may not sit on cluster boxes; labels of routes must
    # (inside their own box), so they are checked against node boxes and labels only
    gw_space = placed
    gw_space.boxes.extend(node_boxes)
    for e in graph["edges"]:
        if e["kind"] != "route" or e["from"] not in pos or e["to"] not in pos:
            continue
        (x1, y1), (x2, y2) = pos[e["from"]], pos[e["to"]]
        tip = f"route {e['from']} - {e['to']} {e['label']}".strip()
        edge_parts.append(
            f'<line class="route" data-from={quoteattr(e["from"])} data-to={quoteattr(e["to"])} '
            f'x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="#495057" '
            f'stroke-width="1.5"><title>{escape(tip)}</title></line>'
        )
        label = _place_label(e["label"], x1, y1, x2, y2, label_space, None)
        if label:
            labels.append(label)
    drawn_gateways = 0
    for e in graph["edges"]:
        if e["kind"] != "gateway" or e["from"] not in anchor or e["to"] not in anchor:
            continue
        (x1, y1), (x2, y2) = anchor[e["from"]], anchor[e["to"]]
        dx, dy = x2 - x1, y2 - y1
        d = math.hypot(dx, dy) or 1.0
        # the two directions between a pair run side by side, 3px either side
        ox, oy = -dy / d * 3, dx / d * 3
        x1, y1, x2, y2 = x1 + ox, y1 + oy, x2 + ox - dx / d * 4, y2 + oy - dy / d * 4
        mode = e.get("mode", "Optimistic")
        colour = MODE_COLOURS.get(mode, "#000")
        modes = "; ".join(f"{a}: {'/'.join(m)}" for a, m in sorted(e.get("modes", {}).items()))
        tip = f"gateway {e['from']} \u2192 {e['to']} {e['label']} {modes}".strip()
        edge_parts.append(
            f'<line class="gateway" data-from={quoteattr(e["from"])} '
            f"data-to={quoteattr(e['to'])} data-mode={quoteattr(mode)} "
            f'data-connections="{len(e.get("connections", []))}" x1="{x1:.1f}" y1="{y1:.1f}" '
            f'x2="{x2:.1f}" y2="{y2:.1f}" stroke="{colour}" stroke-width="1.5" '
            f'marker-end="url(#head-{_mode_id(mode)})"><title>{escape(tip)}</title></line>'
        )
        drawn_gateways += 1
        # the label near the source end, on the arrow's own side
        label = _place_label(e["label"], x1, y1, x2, y2, gw_space, None, near_start=True)
        if label:
            labels.append(label)
    node_parts = []
    for n in graph["nodes"]:
        x, y = pos[n["name"]]
        down = not n["reachable"]
        tip = n["error"] if down else f"{n['clients']} clients, {n['routes']} routes"
        node_parts.append(
            f'<g class="node{" unreachable" if down else ""}" data-name={quoteattr(n["name"])}>'
            f"<title>{escape(n['name'] + ': ' + str(tip))}</title>"
            f'<rect class="node-box" x="{x - node_w / 2:.1f}" y="{y - _NODE_H / 2:.1f}" '
            f'width="{node_w:.1f}" height="{_NODE_H:.1f}" rx="5" '
            f'fill="{"#dee2e6" if down else "#fff"}" stroke="{"#adb5bd" if down else "#212529"}"'
            f"{' stroke-dasharray=' + chr(34) + '4 3' + chr(34) if down else ''} "
            f'stroke-width="1.5"/><text class="node-label" x="{x:.1f}" y="{y + 4:.1f}" '
            f'text-anchor="middle" font-size="12" fill="{"#868e96" if down else "#212529"}">'
            f"{escape(n['name'])}</text></g>"
        )
    markers = "".join(
        f'<marker id="head-{_mode_id(m)}" viewBox="0 0 10 10" refX="9" refY="5" '
        f'markerWidth="7" markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z" '
        f'fill="{c}"/></marker>'
        for m, c in MODE_COLOURS.items()
    )
    legend = "".join(
        f'<text x="20" y="{42 + 18 * i}" fill="{c}" font-size="12">&#8594; gateway '
        f"({escape(m)})</text>"
        for i, (m, c) in enumerate(MODE_COLOURS.items())
    )
    k = len(MODE_COLOURS)
    legend += (
        f'<text x="20" y="{42 + 18 * k}" font-size="12" fill="#495057">&#8212; route '
        f"(labels: round trip, messages/s)</text>"
        f'<text x="20" y="{42 + 18 * (k + 1)}" font-size="12" fill="#868e96">'
        f"grey dashed: unreachable</text>"
    )
    foot = ""
    if unreachable:
        y0 = header + size + 6
        foot = (
            f'<text x="20" y="{y0 + 12:.1f}" font-size="12" font-weight="bold">unreachable</text>'
        )
        for i, n in enumerate(unreachable):
            foot += (
                f'<text class="error" x="20" y="{y0 + 30 + 18 * i:.1f}" font-size="12" '
                f'fill="#c92a2a">{escape(n["name"])}: {escape(str(n["error"]))}</text>'
            )
    routes = sum(1 for e in graph["edges"] if e["kind"] == "route")
    title = (
        f"meshgate super-cluster: {len(names)} clusters, {len(pos)} nodes "
        f"({len(unreachable)} unreachable), {routes} routes, {drawn_gateways} gateway links"
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="topology" width="{width:.0f}" '
        f'height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" '
        f'font-family="sans-serif"><title>{escape(title)}</title><defs>{markers}</defs>'
        f'<text x="20" y="20" font-size="14" font-weight="bold">{escape(title)}</text>'
        f"{legend}{''.join(parts)}{''.join(edge_parts)}{''.join(node_parts)}"
        f"{''.join(labels)}{foot}</svg>\n"
    )


def _mode_id(mode: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in mode)


def _box_exit(
    x: float, y: float, hw: float, hh: float, dx: float, dy: float
) -> tuple[float, float]:
    """Where the ray from the box centre ``(x, y)`` along ``(dx, dy)`` leaves the box."""
    if dx == 0 and dy == 0:
        return x, y
    t = min(hw / abs(dx) if dx else math.inf, hh / abs(dy) if dy else math.inf)
    return x + dx * t, y + dy * t


def _place_label(
    text: str,
    x1: float,
    y1: float,
    x2: float,
    y2: float,
    space: _Boxes,
    also: _Boxes | None,
    *,
    near_start: bool = False,
) -> str:
    """A label along the segment where it overlaps nothing placed (then it is placed
    in ``space`` and ``also``); an empty string if there is no such place."""
    if not text:
        return ""
    w, h = _text_w(text), _LABEL_H
    ts = (0.22, 0.3, 0.38, 0.14) if near_start else (0.5, 0.4, 0.6, 0.3, 0.7, 0.2, 0.8)
    for t in ts:
        cx, cy = x1 + (x2 - x1) * t, y1 + (y2 - y1) * t
        for off in (0.0, -h, h):
            bx, by = cx - w / 2, cy - h / 2 + off
            if space.free(bx, by, w, h) and (also is None or also.free(bx, by, w, h)):
                space.add(bx, by, w, h)
                if also is not None:
                    also.add(bx, by, w, h)
                return (
                    f'<g class="edge-label"><rect x="{bx:.1f}" y="{by:.1f}" width="{w:.1f}" '
                    f'height="{h:.1f}" fill="#fff" fill-opacity="0.85"/><text x="{cx:.1f}" '
                    f'y="{by + h - 3:.1f}" text-anchor="middle" font-size="11" fill="#343a40">'
                    f"{escape(text)}</text></g>"
                )
    return ""


def topology_main(urls: list[str], output: str | None, *, interval: float = 1.0) -> int:
    """CLI entry: discover the super-cluster from ``urls``, sample it twice
    ``interval`` seconds apart (for message rates; 0: once, no rates) and write the
    SVG to ``output`` (or standard output).  Unreachable nodes are drawn, not fatal;
    exit status 1 only if no node could be read at all."""
    import sys

    async def run() -> dict[str, Any]:
        snaps = await discover(urls)
        first = build_graph(snaps, at=trio.current_time())
        if interval <= 0 or not any(s["error"] is None for s in snaps):
            return first
        await trio.sleep(interval)
        again = await discover([s["url"] for s in snaps if s["url"]] or urls)
        return build_graph(again, at=trio.current_time(), previous=first)

    graph = trio.run(run)
    for n in graph["nodes"]:
        if not n["reachable"]:
            print(f"meshgate topology: {n['name']}: {n['error']}", file=sys.stderr)
    svg = render_svg(graph)
    if output:
        with open(output, "w") as f:
            f.write(svg)
    else:
        print(svg, end="")
    return 0 if any(n["reachable"] for n in graph["nodes"]) else 1
