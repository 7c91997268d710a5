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

import trio

#: stroke colour of a gateway arrow per interest mode
MODE_COLOURS = {"Optimistic": "#2b8a3e", "Transitioning": "#e67700", "Interest-Only": "#1864ab"}


async def fetch_json(url: str, path: str) -> Any:
    """GET ``path`` from a monitoring URL (``http://host:port``) and decode the JSON."""
    host, port = url.removeprefix("http://").rstrip("/").rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        data = b""
        while chunk := await stream.receive_some(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        status = head.split(b"\r\n")[0].decode(errors="replace")
        raise OSError(f"{url}{path}: {status}")
    return json.loads(body)


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


def render_svg(snapshots: list[dict[str, Any]]) -> str:
    """Draw the snapshots as a standalone SVG document."""
    clusters: dict[str, list[str]] = {}
    for s in snapshots:
        clusters.setdefault(s["varz"]["cluster"]["name"], []).append(s["varz"]["server_name"])
    names = sorted(clusters)
    width = height = 760
    cx0, cy0 = width / 2, height / 2 + 20
    ring = 250 if len(names) > 1 else 0
    pos: dict[str, tuple[float, float]] = {}
    centre: dict[str, tuple[float, float]] = {}
    parts: list[str] = []
    for i, c in enumerate(names):
        angle = 2 * math.pi * i / max(1, len(names)) - math.pi / 2
        x, y = cx0 + ring * math.cos(angle), cy0 + ring * math.sin(angle)
        centre[c] = (x, y)
        nodes = sorted(clusters[c])
        r = 55 if len(nodes) > 1 else 0
        for j, n in enumerate(nodes):
            a = 2 * math.pi * j / max(1, len(nodes))
            pos[n] = (x + r * math.cos(a), y + r * math.sin(a))
        parts.append(
            f'<rect class="cluster" x="{x - 110:.1f}" y="{y - 100:.1f}" width="220" height="200" '
            f'rx="24" fill="#f1f3f5" stroke="#868e96"/>'
            f'<text x="{x:.1f}" y="{y - 78:.1f}" text-anchor="middle" font-weight="bold">'
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
            f'<circle class="node" cx="{x:.1f}" cy="{y:.1f}" r="20" fill="#fff" '
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
