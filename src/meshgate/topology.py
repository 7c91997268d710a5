"""``meshgate topology URL...``: an SVG picture of a running super-cluster.

Reads ``/varz``, ``/routez`` and ``/gatewayz`` from each node's monitoring endpoint
and draws clusters (grey rounded boxes on a circle), nodes (circles), routes (thin
lines inside a cluster) and gateway connections (arrows from the dialing node to the
cluster it dialed, coloured by the interest mode of the busiest account).
"""

from __future__ import annotations

__all__ = ["MODE_COLOURS", "collect", "fetch_json", "render_svg", "topology_main"]

import json
import math
from typing import Any
from xml.sax.saxutils import escape

import h11
import trio

#: stroke colour of a gateway arrow per interest mode
MODE_COLOURS = {"Optimistic": "#2b8a3e", "Transitioning": "#e67700", "Interest-Only": "#1864ab"}


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
    if status != 200:
        raise OSError(f"{url}{path}: HTTP status {status}")
    try:
        return json.loads(body)
    except ValueError as exc:
        raise OSError(f"{url}{path}: not JSON: {exc}") from None


async def collect(urls: list[str]) -> list[dict[str, Any]]:
    """One snapshot per node: its varz, routez and gatewayz."""
    return [
        {
            "varz": await fetch_json(url, "/varz"),
            "routez": await fetch_json(url, "/routez"),
            "gatewayz": await fetch_json(url, "/gatewayz"),
        }
        for url in urls
    ]


_NODE_R = 20


def render_svg(snapshots: list[dict[str, Any]]) -> str:
    """Draw the snapshots as a standalone SVG document."""
    clusters: dict[str, list[str]] = {}
    for s in snapshots:
        clusters.setdefault(s["varz"]["cluster"]["name"], []).append(s["varz"]["server_name"])
    names = sorted(clusters)
    # sizes grow with the super-cluster so that nothing overlaps: nodes (circles of
    # radius 20) sit on a ring inside their cluster's box, boxes on a ring around the
    # centre, each ring long enough for what it carries
    largest = max((len(v) for v in clusters.values()), default=1)
    node_ring = 0.0 if largest == 1 else max(55.0, largest * (2 * _NODE_R + 10) / (2 * math.pi))
    half = node_ring + _NODE_R + 30  # half the side of a cluster box
    box_gap = 40.0
    if len(names) == 1:
        ring = 0.0
    else:
        # neighbouring box centres at least one box diagonal (plus a gap) apart
        chord = 2 * half * math.sqrt(2) + box_gap
        ring = max(250.0, chord / (2 * math.sin(math.pi / len(names))))
    header = 40 + 18 * (len(MODE_COLOURS) + 1)
    width = height = int(2 * (ring + half * math.sqrt(2)) + 2 * box_gap)
    height += header
    cx0, cy0 = width / 2, header + (height - header) / 2
    pos: dict[str, tuple[float, float]] = {}
    centre: dict[str, tuple[float, float]] = {}
    parts: list[str] = []
    for i, c in enumerate(names):
        angle = 2 * math.pi * i / max(1, len(names)) - math.pi / 2
        x, y = cx0 + ring * math.cos(angle), cy0 + ring * math.sin(angle)
        centre[c] = (x, y)
        nodes = sorted(clusters[c])
        r = node_ring if len(nodes) > 1 else 0.0
        for j, n in enumerate(nodes):
            a = 2 * math.pi * j / max(1, len(nodes))
            pos[n] = (x + r * math.cos(a), y + r * math.sin(a))
        parts.append(
            f'<rect class="cluster" x="{x - half:.1f}" y="{y - half:.1f}" width="{2 * half:.1f}" '
            f'height="{2 * half:.1f}" rx="24" fill="#f1f3f5" stroke="#868e96"/>'
            f'<text x="{x:.1f}" y="{y - half + 18:.1f}" text-anchor="middle" font-weight="bold">'
            f"cluster {escape(c)}</text>"
        )
    drawn_routes: set[frozenset[str]] = set()
    for s in snapshots:
        me = s["varz"]["server_name"]
        for r in s["routez"]["routes"]:
            pair = frozenset((me, r["remote_name"]))
            if pair in drawn_routes or r["remote_name"] not in pos:
                continue
            drawn_routes.add(pair)
            (x1, y1), (x2, y2) = pos[me], pos[r["remote_name"]]
            parts.append(
                f'<line class="route" x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" '
                f'stroke="#495057" stroke-width="2"/>'
            )
    arrows = 0
    for s in snapshots:
        me = s["varz"]["server_name"]
        for remote, gw in sorted(s["gatewayz"]["outbound_gateways"].items()):
            peer = gw["connection"].get("name")
            target = pos.get(peer) or centre.get(remote)
            if target is None:
                continue
            accounts = gw.get("accounts") or []
            mode = (
                max(accounts, key=lambda a: a.get("num_subs", 0))["interest_mode"]
                if accounts
                else "Optimistic"
            )
            (x1, y1), (x2, y2) = pos[me], target
            # shorten the arrow so its head stays outside the target circle, and bend
            # it a little so the two directions between a pair stay apart
            dx, dy = x2 - x1, y2 - y1
            d = math.hypot(dx, dy) or 1.0
            ex, ey = x2 - dx / d * 22, y2 - dy / d * 22
            mx, my = (x1 + ex) / 2 - dy / d * 25, (y1 + ey) / 2 + dx / d * 25
            colour = MODE_COLOURS.get(mode, "#000")
            parts.append(
                f'<path class="gateway" data-from="{escape(me)}" data-to="{escape(remote)}" '
                f'data-mode="{escape(mode)}" d="M{x1:.1f},{y1:.1f} Q{mx:.1f},{my:.1f} '
                f'{ex:.1f},{ey:.1f}" fill="none" stroke="{colour}" stroke-width="1.5" '
                f'marker-end="url(#head-{mode})"/>'
            )
            arrows += 1
    for n, (x, y) in pos.items():
        parts.append(
            f'<circle class="node" cx="{x:.1f}" cy="{y:.1f}" r="{_NODE_R}" fill="#fff" '
            f'stroke="#212529" stroke-width="2"/>'
            f'<text x="{x:.1f}" y="{y + 5:.1f}" text-anchor="middle" font-size="13">'
            f"{escape(n)}</text>"
        )
    markers = "".join(
        f'<marker id="head-{m}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
        f'markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="{c}"/></marker>'
        for m, c in MODE_COLOURS.items()
    )
    legend = "".join(
        f'<text x="20" y="{40 + 18 * i}" fill="{c}" font-size="13">&#8594; gateway '
        f"({escape(m)})</text>"
        for i, (m, c) in enumerate(MODE_COLOURS.items())
    )
    title = (
        f"meshgate super-cluster: {len(names)} clusters, {len(pos)} nodes, "
        f"{len(drawn_routes)} routes, {arrows} gateway connections"
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif"><title>{escape(title)}</title><defs>{markers}</defs>'
        f'<text x="20" y="20" font-size="14" font-weight="bold">{escape(title)}</text>'
        f'{legend}<text x="20" y="{40 + 18 * len(MODE_COLOURS)}" font-size="13" '
        f'fill="#495057">&#8212; route</text>{"".join(parts)}</svg>\n'
    )


def topology_main(urls: list[str], output: str | None) -> int:
    """CLI entry: write the SVG to ``output`` (or standard output)."""
    try:
        snapshots = trio.run(collect, urls)
    except (OSError, ValueError) as exc:
        import sys

        print(f"meshgate topology: {exc}", file=sys.stderr)
        return 1
    svg = render_svg(snapshots)
    if output:
        with open(output, "w") as f:
            f.write(svg)
    else:
        print(svg, end="")
    return 0
