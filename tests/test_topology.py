"""`meshgate topology` draws the running super-cluster from the monitoring endpoints."""

from __future__ import annotations

import xml.etree.ElementTree as ET

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
