"""Monitoring that NATS tools read correctly: where a /varz, /connz, /routez or
/gatewayz field has nats-server's name, it has nats-server's JSON type (and so its unit:
durations in nanoseconds or as duration strings), compared with a real nats-server."""

from __future__ import annotations

import socket
from typing import Any

import pytest
import trio

import meshgate
from meshgate.topology import fetch_json

from ._nats import free_port, run_nats
from .helpers import tcp_node


def kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object"
    return "null"


def mismatches(ours: Any, theirs: Any, where: str = "") -> list[str]:
    """Fields both have whose JSON types differ (recursing into objects and into the
    first element of lists of objects); a null on either side says nothing."""
    out: list[str] = []
    if isinstance(ours, dict) and isinstance(theirs, dict):
        for key in ours.keys() & theirs.keys():
            a, b = ours[key], theirs[key]
            if a is None or b is None:
                continue
            if kind(a) != kind(b):
                out.append(
                    f"{where}{key}: ours {kind(a)} {a!r:.40}, nats-server {kind(b)} {b!r:.40}"
                )
            else:
                out += mismatches(a, b, f"{where}{key}.")
    elif isinstance(ours, list) and isinstance(theirs, list) and ours and theirs:
        out += mismatches(ours[0], theirs[0], f"{where}[0].")
    return out


def nats_client(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port))
    s.recv(4096)
    s.sendall(
        b'CONNECT {"name":"probe","lang":"python","version":"1"}\r\nSUB probe.> 1\r\nPING\r\n'
    )
    buf = b""
    while b"PONG" not in buf:
        buf += s.recv(4096)
    return s


PATHS = ["/varz", "/connz?subs=1", "/routez", "/gatewayz"]


async def test_monitoring_fields_have_nats_server_types() -> None:
    http, cluster_a, cluster_b = free_port(), free_port(), free_port()
    with (
        run_nats(
            f"http: 127.0.0.1:{http}\nserver_name: n0\n"
            f"cluster {{ name: C, listen: 127.0.0.1:{cluster_a}, routes: [nats://127.0.0.1:{cluster_b}] }}"
        ) as port,
        run_nats(
            f"server_name: n1\ncluster {{ name: C, listen: 127.0.0.1:{cluster_b}, "
            f"routes: [nats://127.0.0.1:{cluster_a}] }}"
        ),
    ):
        probe = nats_client(port)
        with trio.fail_after(20):
            theirs = {}
            for path in PATHS:
                while True:  # until the route is up: each try is an HTTP round trip
                    theirs[path] = await fetch_json(f"http://127.0.0.1:{http}", path)
                    if path != "/routez" or theirs[path]["routes"]:
                        break
        probe.close()

    def node(name: str, seeds: tuple[str, ...] = ()) -> meshgate.GatewayConfig:
        return tcp_node(name, seeds, monitor_listen="127.0.0.1:0")

    with trio.fail_after(20):
        async with meshgate.open_gateway(node("m1")) as m1:
            assert m1.cluster_url
            async with (
                meshgate.open_gateway(node("m0", (m1.cluster_url,))) as m0,
                meshgate.connect(m0.client_url or "", name="probe") as c,
                c.subscribe("probe.>"),
            ):
                await m0.wait_routes(1)
                await c.flush()
                assert m0.monitor_url
                ours = {p: await fetch_json(m0.monitor_url, p) for p in PATHS}
    problems = [m for p in PATHS for m in mismatches(ours[p], theirs[p], f"{p} ")]
    assert not problems, "\n".join(problems)
    # the fields NATS tools rely on are there
    conn = ours["/connz?subs=1"]["connections"][0]
    for key in (
        "cid",
        "ip",
        "port",
        "start",
        "last_activity",
        "rtt",
        "uptime",
        "idle",
        "subscriptions_list",
    ):
        assert key in conn, key
    assert conn["subscriptions_list"] == ["probe.>"]
    assert ours["/varz"]["remotes"] == 1  # route peers, as nats-server counts them
    assert ours["/varz"]["ping_interval"] == int(m0.config.ping_interval * 1e9)


def test_mismatches_catches_a_type_difference() -> None:
    assert mismatches({"a": 1, "b": {"c": "1s"}}, {"a": 1, "b": {"c": 1000}}) == [
        "b.c: ours string '1s', nats-server number 1000"
    ]


@pytest.mark.parametrize("name", ['a"b', "a\\b", 'x\\"}y'])
@pytest.mark.parametrize("library", [True, False], ids=["prometheus-client", "by-hand"])
def test_a_node_name_cannot_break_the_prometheus_scrape(
    name: str, library: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    from prometheus_client.parser import text_string_to_metric_families

    from meshgate.monitor import render_metrics

    if not library:  # as without the metrics extra: the hand-written exposition
        monkeypatch.setitem(sys.modules, "prometheus_client", None)
    text = render_metrics(meshgate.Gateway(meshgate.GatewayConfig(name=name)))
    monkeypatch.undo()
    if not library:
        assert "# HELP process_cpu_seconds_total" in text
    families = list(text_string_to_metric_families(text))
    assert len(families) > 20
    servers = {s.labels["server"] for f in families for s in f.samples if "server" in s.labels}
    assert servers == {name}


GATEWAY_PATHS = ["/varz", "/routez", "/gatewayz?accs=1", "/healthz"]


def _gateways_up(body: dict[str, Any]) -> bool:
    # n2 lands its inbound on n0 or n1 (gossip): only n0's outbound is certain
    return bool(body.get("outbound_gateways"))


async def test_gateways_and_routes_have_nats_server_fields_and_types() -> None:
    """Both sides run a cluster of two nodes with routes and a second cluster joined by
    gateways: the /gatewayz, /routez and /varz fields both have share names and JSON
    types, and the nats-server-only gateway fields are there."""
    http = free_port()
    ra, ga0, ga1, gb = free_port(), free_port(), free_port(), free_port()
    gw_b = f"gateways: [{{name: B, url: nats://127.0.0.1:{gb}}}]"
    with (
        run_nats(
            f"http: 127.0.0.1:{http}\nserver_name: n0\n"
            f"cluster {{ name: A, listen: 127.0.0.1:{ra} }}\n"
            f"gateway {{ name: A, listen: 127.0.0.1:{ga0}, {gw_b} }}"
        ),
        run_nats(
            f"server_name: n1\ncluster {{ name: A, listen: 127.0.0.1:{free_port()}, "
            f"routes: [nats://127.0.0.1:{ra}] }}\n"
            f"gateway {{ name: A, listen: 127.0.0.1:{ga1}, {gw_b} }}"
        ),
        run_nats(
            f"server_name: n2\ngateway {{ name: B, listen: 127.0.0.1:{gb}, "
            f"gateways: [{{name: A, url: nats://127.0.0.1:{ga0}}}] }}"
        ),
    ):
        theirs = {}
        with trio.fail_after(30):
            while True:  # until routes and gateways are up: each try is an HTTP round trip
                theirs = {p: await fetch_json(f"http://127.0.0.1:{http}", p) for p in GATEWAY_PATHS}
                if theirs["/routez"]["routes"] and _gateways_up(theirs["/gatewayz?accs=1"]):
                    break
                await trio.sleep(0.1)  # polling a foreign process: nothing to wait on

    dead = free_port()  # a configured remote cluster nobody serves
    with trio.fail_after(30):
        async with meshgate.open_gateway(
            meshgate.GatewayConfig(
                name="b0", cluster="B", listen="127.0.0.1:0", gateway_listen="127.0.0.1:0"
            )
        ) as b0:
            assert b0.gateway_url
            async with meshgate.open_gateway(
                meshgate.GatewayConfig(
                    name="a0",
                    cluster="A",
                    listen="127.0.0.1:0",
                    cluster_listen="127.0.0.1:0",
                    gateway_listen="127.0.0.1:0",
                    gateways={"B": [b0.gateway_url], "Z": [f"127.0.0.1:{dead}"]},
                    reconnect_wait=0.05,
                    monitor_listen="127.0.0.1:0",
                )
            ) as a0:
                assert a0.cluster_url
                assert a0.monitor_url
                async with meshgate.open_gateway(
                    meshgate.GatewayConfig(
                        name="a1",
                        cluster="A",
                        listen="127.0.0.1:0",
                        cluster_listen="127.0.0.1:0",
                        routes=(a0.cluster_url,),
                        gateway_listen="127.0.0.1:0",
                    )
                ) as a1:
                    await a0.wait_routes(1)
                    await a0.wait_gateways(1, 1)
                    await a1.wait_gateways(1)
                    await b0.wait_gateways(1, 2)
                    while not any(d.last_error for d in a0.dial_states() if d.target == "Z"):
                        await a0.wait_dial_failure()
                    ours = {p: await fetch_json(a0.monitor_url, p) for p in GATEWAY_PATHS[:3]}
                    status, health = await http_status(a0.monitor_url, "/healthz?ready=1")

    problems = [m for p in GATEWAY_PATHS[:3] for m in mismatches(ours[p], theirs[p], f"{p} ")]
    assert not problems, "\n".join(problems)
    gz, ngz = ours["/gatewayz?accs=1"], theirs["/gatewayz?accs=1"]
    # every field nats-server gives at the top, per remote and per connection is ours too
    assert set(ngz) <= set(gz), set(ngz) - set(gz)
    assert gz["name"] == "A"
    assert gz["port"] == int(a0.gateway_url.rpartition(":")[2])
    out_b, n_out_b = gz["outbound_gateways"]["B"], ngz["outbound_gateways"]["B"]
    assert set(n_out_b) <= set(out_b), set(n_out_b) - set(out_b)
    assert out_b["configured"] is True
    missing = set(n_out_b["connection"]) - set(out_b["connection"])
    assert not missing, missing
    route, n_route = ours["/routez"]["routes"][0], theirs["/routez"]["routes"][0]
    assert not set(n_route) - set(route), set(n_route) - set(route)
    assert route["is_configured"] is False  # a1 dialed a0, not the other way
    varz = ours["/varz"]
    for key in ("mem", "cpu", "cores", "total_connections", "config_load_time", "http_port"):
        assert key in theirs["/varz"], key
        assert key in varz, key
    assert varz["mem"] > 0
    assert varz["cores"] >= 1
    assert varz["http_port"] == int(a0.monitor_url.rpartition(":")[2])  # type: ignore[union-attr]
    assert out_b["connection"]["rtt"].endswith("s")  # a duration string, as /routez
    inbound = gz["inbound_gateways"]["B"][0]
    for n_inbound in ngz["inbound_gateways"].get("B", [])[:1]:
        assert set(n_inbound) <= set(inbound)
    # a configured remote that is down: its dial state and last error
    z = gz["dials"]["Z"]
    assert z["configured"]
    assert z["state"] in ("dialing", "backoff")
    assert z["last_error"]
    assert gz["dials"]["B"]["state"] == "connected"
    # not ready while Z is down, saying why
    assert status == 503, health
    assert "gateway Z" in health["error"], health
    assert theirs["/healthz"] == {"status": "ok"}


async def http_status(url: str, path: str) -> tuple[int, dict[str, Any]]:
    """GET ``path``: the status and the JSON body."""
    import json

    host, _, port = url.removeprefix("http://").rpartition(":")
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        data = b""
        while chunk := await stream.receive_some(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)
