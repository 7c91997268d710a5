"""The dashboard's server side: the page at ``/``, ``/peerz`` and the aggregation
(``/dashboard.json``) a node builds from the whole super-cluster, unreachable nodes kept
with their error."""

from __future__ import annotations

import json
from typing import Any

import trio

import meshgate

from .supercluster import settle, supercluster
from .test_monitor import get


def monitored(cluster: str, i: int) -> dict[str, object]:
    return {"monitor_listen": "127.0.0.1:0"}


async def dashboard(url: str) -> dict[str, Any]:
    status, body = await get(url, "/dashboard.json?refresh=1")
    assert status == 200
    doc: dict[str, Any] = json.loads(body)
    return doc


async def test_page_index_and_static_files() -> None:
    cfg = meshgate.GatewayConfig(listen="memory://", monitor_listen="127.0.0.1:0")
    with trio.fail_after(20):
        async with meshgate.open_gateway(cfg) as gw:
            assert gw.monitor_url
            status, page = await get(gw.monitor_url, "/")
            assert status == 200
            assert b'<script src="/dashboard/app.js">' in page
            assert b"http" not in page.replace(b"http-equiv", b"")  # nothing from elsewhere
            for path in ("/dashboard/app.js", "/dashboard/style.css"):
                status, body = await get(gw.monitor_url, path)
                assert status == 200
                assert body
                assert b"//cdn" not in body
                assert b"https://" not in body
            status, body = await get(gw.monitor_url, "/index.json")
            assert status == 200
            paths = json.loads(body)["paths"]
            assert "/varz" in paths
            assert "/dashboard.json" in paths


async def test_peers_announce_their_monitoring_urls() -> None:
    with trio.fail_after(30):
        async with supercluster({"A": 2, "B": 1}, extra=monitored) as sc:
            a0, a1, b0 = sc["A"][0], sc["A"][1], sc["B"][0]
            status, body = await get(a0.monitor_url, "/peerz")  # type: ignore[arg-type]
            assert status == 200
            peers = json.loads(body)["peers"]
            got = {(p["kind"], p["name"], p["cluster"], p["monitor_url"]) for p in peers}
            assert ("route", "a1", "A", a1.monitor_url) in got
            assert ("gateway", "b0", "B", b0.monitor_url) in got


async def test_aggregation_discovers_all_from_one_node_and_keeps_the_unreachable() -> None:
    with trio.fail_after(60):
        async with supercluster({"A": 2, "B": 1, "C": 1}, extra=monitored) as sc:
            gws = [g for gs in sc.values() for g in gs]
            a0 = sc["A"][0]
            assert a0.monitor_url
            # one more cluster, D, that will go away
            cfg = meshgate.GatewayConfig(
                name="d0",
                cluster="D",
                listen="memory://",
                gateway_listen="127.0.0.1:0",
                gateways={"A": [a0.gateway_url]},  # type: ignore[list-item]
                monitor_listen="127.0.0.1:0",
                reconnect_wait=0.05,
            )
            async with meshgate.open_gateway(cfg) as d0:
                await d0.wait_gateways(3)
                for g in gws:
                    await g.wait_gateways(3)
                await settle([*gws, d0])
                doc = await dashboard(a0.monitor_url)
                graph = doc["graph"]
                names = {n["name"]: n for n in graph["nodes"]}
                assert set(names) == {"a0", "a1", "b0", "c0", "d0"}
                assert all(n["reachable"] for n in names.values())
                # counts match each node's /varz
                for g in [*gws, d0]:
                    varz = json.loads((await get(g.monitor_url, "/varz"))[1])  # type: ignore[arg-type]
                    assert names[g.config.name]["clients"] == varz["connections"]
                    assert names[g.config.name]["routes"] == varz["routes"]
                routes = [e for e in graph["edges"] if e["kind"] == "route"]
                assert [(e["from"], e["to"]) for e in routes] == [("a0", "a1")]
                gateways = {(e["from"], e["to"]) for e in graph["edges"] if e["kind"] == "gateway"}
                clusters = "ABCD"
                assert gateways == {(x, y) for x in clusters for y in clusters if x != y}
                assert doc["svg"].startswith("<svg")
                d0_url = d0.monitor_url
            # d0 is gone: it stays in the picture, grey, with why it cannot be read
            doc = await dashboard(a0.monitor_url)
            names = {n["name"]: n for n in doc["graph"]["nodes"]}
            assert names["d0"]["reachable"] is False
            assert names["d0"]["url"] == d0_url
            assert names["d0"]["error"]
            assert "d0" in names["d0"]["error"] or d0_url.split(":")[-1] in names["d0"]["error"]
            assert all(names[n]["reachable"] for n in ("a0", "a1", "b0", "c0"))
            assert doc["graph"]["unreachable"] == 1
            assert 'class="node unreachable" data-name="d0"' in doc["svg"]
