"""`meshgate topology` draws the running super-cluster from the monitoring endpoints."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
import trio

from meshgate.topology import collect, render_svg

from .supercluster import settle, supercluster

SVG = "{http://www.w3.org/2000/svg}"


async def test_svg_shows_clusters_nodes_routes_and_directed_gateways() -> None:
    def extra(cluster: str, i: int) -> dict[str, object]:
        return {"monitor_listen": "127.0.0.1:0"}

    with trio.fail_after(30):
        async with supercluster({"A": 2, "B": 1, "C": 1}, extra=extra) as sc:
            gws = [g for gs in sc.values() for g in gs]
            await settle(gws)
            urls = [g.monitor_url for g in gws]
            assert all(urls)
            snapshots = await collect(urls)  # type: ignore[arg-type]
    svg = render_svg(snapshots)
    root = ET.fromstring(svg)  # well-formed XML
    classes = [el.get("class") for el in root.iter() if el.get("class")]
    assert classes.count("cluster") == 3
    assert classes.count("node") == 4
    assert classes.count("route") == 1  # a0 - a1
    gateways = [el for el in root.iter(f"{SVG}path") if el.get("class") == "gateway"]
    # every node has one outbound to each other cluster: 2*2 + 1*2 + 1*2
    assert len(gateways) == 8
    assert {(g.get("data-from"), g.get("data-to")) for g in gateways} >= {("a0", "B"), ("b0", "A")}
    assert all(
        g.get("data-mode") in ("Optimistic", "Transitioning", "Interest-Only") for g in gateways
    )
    texts = "".join(root.itertext())
    for name in ("a0", "a1", "b0", "c0", "cluster A", "cluster B", "cluster C"):
        assert name in texts


@pytest.mark.parametrize(("clusters", "nodes"), [(1, 1), (2, 2), (3, 30), (30, 1), (10, 10)])
def test_larger_super_clusters_are_laid_out_without_overlaps(clusters: int, nodes: int) -> None:
    import itertools
    import math
    import re

    snapshots = [
        {
            "varz": {"server_name": f"c{c}n{n}", "cluster": {"name": f"c{c}"}},
            "routez": {"routes": []},
            "gatewayz": {"outbound_gateways": {}},
        }
        for c in range(clusters)
        for n in range(nodes)
    ]
    svg = render_svg(snapshots)
    width, height = (
        float(v) for v in re.search(r'width="([\d.]+)" height="([\d.]+)"', svg).groups()
    )  # type: ignore[union-attr]
    circles = [
        tuple(map(float, m))
        for m in re.findall(r'<circle class="node" cx="([\d.-]+)" cy="([\d.-]+)" r="([\d.]+)"', svg)
    ]
    boxes = [
        tuple(map(float, m))
        for m in re.findall(
            r'<rect class="cluster" x="([\d.-]+)" y="([\d.-]+)" width="([\d.]+)" height="([\d.]+)"',
            svg,
        )
    ]
    assert len(circles) == clusters * nodes
    assert len(boxes) == clusters
    for (x1, y1, r1), (x2, y2, r2) in itertools.combinations(circles, 2):
        assert math.hypot(x1 - x2, y1 - y2) >= r1 + r2, "two nodes overlap"
    for (ax, ay, aw, ah), (bx, by, bw, bh) in itertools.combinations(boxes, 2):
        apart = ax + aw <= bx or bx + bw <= ax or ay + ah <= by or by + bh <= ay
        assert apart, "two clusters overlap"
    for x, y, w, h in boxes:
        assert 0 <= x <= width - w, "a cluster is cut off"
        assert 0 <= y <= height - h, "a cluster is cut off"
        inside = [c for c in circles if x <= c[0] - c[2] and c[0] + c[2] <= x + w]
        assert len(inside) >= nodes
