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
def test_a_node_name_cannot_break_the_prometheus_scrape(name: str) -> None:
    import re

    from meshgate.monitor import render_metrics

    text = render_metrics(meshgate.Gateway(meshgate.GatewayConfig(name=name)))
    label = r'"(?:[^"\\\n]|\\[\\"n])*"'
    sample = re.compile(rf"^[a-z_]+\{{server={label},cluster={label}\}} [0-9.e+-]+$")
    samples = [line for line in text.splitlines() if not line.startswith("#")]
    assert samples
    assert all(sample.match(line) for line in samples), samples[0]
