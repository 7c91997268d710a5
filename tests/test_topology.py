"""`meshgate topology` discovers the running super-cluster from one monitoring URL and
draws it: unreachable nodes grey instead of failing, edges labelled with round trip and
rate, nothing overlapping at 9 clusters x 6 nodes."""

from __future__ import annotations

import itertools
import re
import socket
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import trio

from meshgate.topology import build_graph, collect, discover, render_svg, topology_main

from .supercluster import settle, supercluster

SVG = "{http://www.w3.org/2000/svg}"


def monitored(cluster: str, i: int) -> dict[str, object]:
    return {"monitor_listen": "127.0.0.1:0"}


def dead_url() -> str:
    """A loopback URL nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


async def test_discovers_everything_from_one_url_and_draws_it() -> None:
    with trio.fail_after(30):
        async with supercluster({"A": 2, "B": 1, "C": 1}, extra=monitored) as sc:
            gws = [g for gs in sc.values() for g in gs]
            await settle(gws)
            snapshots = await discover([sc["B"][0].monitor_url])  # type: ignore[list-item]
            assert {s["name"] for s in snapshots} == {"a0", "a1", "b0", "c0"}
            assert all(s["error"] is None for s in snapshots)
            first = build_graph(snapshots, at=0.0)
            again = await discover([sc["B"][0].monitor_url])  # type: ignore[list-item]
    graph = build_graph(again, at=2.0, previous=first)
    svg = render_svg(graph)
    root = ET.fromstring(svg)  # well-formed XML
    classes = [c for el in root.iter() for c in (el.get("class") or "").split()]
    assert classes.count("cluster") == 3
    assert classes.count("node") == 4
    assert classes.count("unreachable") == 0
    assert classes.count("route") == 1  # a0 - a1
    gateways = [el for el in root.iter(f"{SVG}line") if el.get("class") == "gateway"]
    # one arrow per direction between two clusters; A -> B sums a0's and a1's links
    assert {(g.get("data-from"), g.get("data-to")) for g in gateways} == {
        (x, y) for x in "ABC" for y in "ABC" if x != y
    }
    assert next(g for g in gateways if g.get("data-from") == "A").get("data-connections") == "2"
    assert all(g.get("data-mode") in ("Optimistic", "Interest-Only", "mixed") for g in gateways)
    edges = {e["id"]: e for e in graph["edges"]}
    assert edges["gateway:A:B"]["rtt"] is not None  # measured at once on gateways
    assert edges["route:a0:a1"]["rate"] is not None  # two samples: a rate
    assert edges["gateway:A:B"]["label"]
    texts = "".join(root.itertext())
    for name in ("a0", "a1", "b0", "c0", "cluster A", "cluster B", "cluster C"):
        assert name in texts


async def test_an_unreachable_node_is_drawn_not_fatal(tmp_path: Path) -> None:
    dead = dead_url()
    with trio.fail_after(30):
        async with supercluster({"A": 1, "B": 1}, extra=monitored) as sc:
            url = sc["A"][0].monitor_url
            assert url
            snapshots = await collect([url, dead])
            assert [s["error"] is None for s in snapshots] == [True, False]
            out = tmp_path / "t.svg"
            # the CLI draws what it can, says what it cannot, exits 0 (one node answered)
            status = await trio.to_thread.run_sync(
                lambda: topology_main([url, dead], str(out), interval=0)
            )
            assert status == 0
    svg = out.read_text()
    root = ET.fromstring(svg)
    down = [g for g in root.iter(f"{SVG}g") if "unreachable" in (g.get("class") or "")]
    assert [g.get("data-name") for g in down] == [dead]
    assert "b0" in svg  # discovered through a0
    errors = [t for t in root.iter(f"{SVG}text") if t.get("class") == "error"]
    assert len(errors) == 1
    assert dead in "".join(errors[0].itertext())
    # nothing at all reachable: exit status 1, still a picture
    nothing = tmp_path / "nothing.svg"
    status = await trio.to_thread.run_sync(lambda: topology_main([dead], str(nothing), interval=0))
    assert status == 1
    assert "unreachable" in nothing.read_text()


def synthetic(clusters: int, nodes: int) -> list[dict[str, Any]]:
    """Snapshots of a full mesh: every route and every gateway link, all busy."""
    names = [f"cluster{c}" for c in range(clusters)]
    snaps = []
    for c, cluster in enumerate(names):
        for n in range(nodes):
            snaps.append(  # noqa: PERF401 - clearer as a loop
                {
                    "url": f"http://10.0.{c}.{n}:8222",
                    "name": f"node-{c}-{n}",
                    "cluster": cluster,
                    "error": None if (c, n) != (3, 2) else "connection refused",
                    "varz": {"connections": 10, "in_msgs": 1000, "out_msgs": 1000},
                    "routez": {
                        "routes": [
                            {"remote_name": f"node-{c}-{m}", "rtt": "1.25ms", "out_msgs": 5000}
                            for m in range(nodes)
                            if m != n
                        ]
                    },
                    "gatewayz": {
                        "outbound_gateways": {
                            other: {
                                "connection": {
                                    "name": f"node-{o}-0",
                                    "rtt": 0.0423,
                                    "out_msgs": 12345,
                                },
                                "accounts": [{"name": "$G", "interest_mode": "Interest-Only"}],
                            }
                            for o, other in enumerate(names)
                            if o != c
                        }
                    },
                }
            )
    return snaps


def boxes(root: ET.Element, cls: str) -> list[tuple[float, float, float, float]]:
    out = []
    for g in root.iter(f"{SVG}g"):
        if cls in (g.get("class") or "").split():
            rect = g.find(f"{SVG}rect")
            assert rect is not None
            out.append(tuple(float(rect.get(k)) for k in ("x", "y", "width", "height")))  # type: ignore[arg-type]
    return out  # type: ignore[return-value]


def overlap(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    return not (ax + aw <= bx or bx + bw <= ax or ay + ah <= by or by + bh <= ay)


def crosses(line: tuple[float, float, float, float], box: tuple[float, ...]) -> bool:
    """The segment enters the rectangle's interior (Liang-Barsky clipping)."""
    x1, y1, x2, y2 = line
    bx, by, bw, bh = box
    eps = 1e-6
    dx, dy = x2 - x1, y2 - y1
    lo, hi = 0.0, 1.0
    for p, q in ((-dx, x1 - bx), (dx, bx + bw - x1), (-dy, y1 - by), (dy, by + bh - y1)):
        if p == 0:
            if q <= eps:
                return False
            continue
        t = q / p
        if p < 0:
            lo = max(lo, t)
        else:
            hi = min(hi, t)
    return hi - lo > eps


@pytest.mark.parametrize(
    ("clusters", "nodes"), [(1, 1), (2, 2), (3, 30), (30, 1), (9, 6), (10, 10)]
)
def test_laid_out_without_overlaps(clusters: int, nodes: int) -> None:
    first = build_graph(synthetic(clusters, nodes), at=0.0)
    svg = render_svg(build_graph(synthetic(clusters, nodes), at=1.0, previous=first))
    root = ET.fromstring(svg)
    width, height = float(root.get("width")), float(root.get("height"))  # type: ignore[arg-type]
    nodes_ = boxes(root, "node")
    labels = boxes(root, "edge-label")
    clusters_ = [
        tuple(float(r.get(k)) for k in ("x", "y", "width", "height"))  # type: ignore[arg-type]
        for r in root.iter(f"{SVG}rect")
        if r.get("class") == "cluster"
    ]
    assert len(nodes_) == clusters * nodes
    assert len(clusters_) == clusters
    for a, b in itertools.combinations(nodes_ + labels, 2):
        assert not overlap(a, b), "two node boxes or labels overlap"
    for a, b in itertools.combinations(clusters_, 2):
        assert not overlap(a, b), "two clusters overlap"
    for x, y, w, h in clusters_ + nodes_ + labels:
        assert x >= 0, "cut off"
        assert y >= 0, "cut off"
        assert x + w <= width, "cut off"
        assert y + h <= height, "cut off"
    # cluster labels: the strip at the top of each box, where the name is written
    cluster_labels = []
    for t in root.iter(f"{SVG}text"):
        if t.get("class") == "cluster-label":
            text = "".join(t.itertext())
            w = len(text) * 7.2
            x, y = float(t.get("x")), float(t.get("y"))  # type: ignore[arg-type]
            cluster_labels.append((x - w / 2, y - 13, w, 16))
    assert len(cluster_labels) == clusters
    arrows = [
        tuple(float(el.get(k)) for k in ("x1", "y1", "x2", "y2"))  # type: ignore[arg-type]
        for el in root.iter(f"{SVG}line")
        if el.get("class") == "gateway"
    ]
    assert len(arrows) == (clusters * (clusters - 1) if clusters > 1 else 0)
    for arrow in arrows:
        for box in cluster_labels + clusters_:
            assert not crosses(arrow, box), "a gateway arrow crosses a cluster or its label"  # type: ignore[arg-type]
    for label in labels:
        for box in cluster_labels:
            assert not overlap(label, box), "an edge label covers a cluster label"
    if clusters == 9:
        # the unreachable node is drawn grey and listed with its error
        assert 'data-name="node-3-2"' in svg
        assert re.search(r'class="node unreachable" data-name="node-3-2"', svg)
        assert "node-3-2: connection refused" in svg
        # every gateway arrow carries its label (a route's may be left to its tooltip)
        assert len(labels) >= clusters * (clusters - 1)
