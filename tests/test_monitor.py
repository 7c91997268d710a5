"""The monitoring endpoint: JSON paths, Prometheus text, bad requests, unknown paths."""

from __future__ import annotations

import json

import pytest
import trio

import meshgate
from meshgate.transports import split_url

from .helpers import timeless
from .supercluster import settle, supercluster


async def http(url: str, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send a raw request to the monitor; parse the status, headers and body."""
    _, host, port = split_url("tcp://" + url.removeprefix("http://"))
    stream = await trio.open_tcp_stream(host, port)
    async with stream:
        await stream.send_all(raw)
        data = b""
        while chunk := await stream.receive_some(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return status, {k.lower(): v for k, v in headers.items()}, body


async def get(url: str, path: str) -> tuple[int, bytes]:
    status, _, body = await http(url, f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    return status, body


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text exposition, by name and sorted labels (parsed
    by prometheus-client's own parser)."""
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def varz_after(gw: meshgate.Gateway) -> dict[str, int]:
    st = gw.statistics()
    return {"in_bytes": st.payload_bytes_in}


async def test_json_paths_and_metrics() -> None:
    def extra(cluster: str, i: int) -> dict[str, object]:
        return {"monitor_listen": "127.0.0.1:0"}

    with trio.fail_after(30):
        async with supercluster({"A": 2, "B": 1}, extra=extra) as sc:
            gw = sc["A"][0]
            assert gw.monitor_url
            assert gw.monitor_url.startswith("http://127.0.0.1:")
            async with meshgate.connect(gw.client_url) as c, c.subscribe("x.>"):  # type: ignore[arg-type]
                await c.publish("x.1", b"hi")
                await settle([g for gs in sc.values() for g in gs], [c])
                status, body = await get(gw.monitor_url, "/varz")
                varz = json.loads(body)
                assert status == 200
                assert varz["server_name"] == "a0"
                assert varz["core"] == meshgate.CORE
                assert varz["connections"] == 1
                assert varz["routes"] == 1
                assert varz["remotes"] == 1
                assert varz["in_msgs"] >= 1
                assert varz["subscriptions"] == 1
                connz = json.loads((await get(gw.monitor_url, "/connz?limit=5"))[1])
                assert connz["num_connections"] == 1
                assert connz["connections"][0]["subscriptions"] == 1
                routez = json.loads((await get(gw.monitor_url, "/routez"))[1])
                assert [r["remote_name"] for r in routez["routes"]] == ["a1"]
                gatewayz = json.loads((await get(gw.monitor_url, "/gatewayz"))[1])
                assert timeless(gatewayz) == timeless(json.loads(json.dumps(gw.gatewayz())))
                assert list(gatewayz["outbound_gateways"]) == ["B"]
                subsz = json.loads((await get(gw.monitor_url, "/subsz"))[1])
                assert subsz["num_subscriptions"] == 1
                assert json.loads((await get(gw.monitor_url, "/healthz"))[1]) == {"status": "ok"}
                status, _, metrics = await http(
                    gw.monitor_url, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
                )
                text = metrics.decode()
                assert status == 200
                got = samples(text)
                assert got["meshgate_connections", (("cluster", "A"), ("server", "a0"))] == 1
                assert "# TYPE meshgate_messages_in_total counter" in text
                # per route, per gateway, per account, and the process and build
                a0 = (("cluster", "A"), ("server", "a0"))
                assert (
                    got["meshgate_route_messages_in_total", (*a0[:1], ("peer", "a1"), a0[1])] >= 0
                )
                outbound = [k for k in got if k[0] == "meshgate_gateway_messages_out_total"]
                assert ("direction", "outbound") in outbound[0][1]
                assert ("remote_cluster", "B") in outbound[0][1]
                assert got["meshgate_account_connections", (("account", "$G"), *a0)] == 1
                assert got["meshgate_ready", a0] == 1
                assert any(k[0] == "process_cpu_seconds_total" for k in got)
                assert any(k[0] == "meshgate_build_info" for k in got)
                # payload bytes, as /varz in_bytes; the wire under its own name
                assert got["meshgate_bytes_in_total", a0] == varz_after(gw)["in_bytes"]


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n", 404),
        (b"POST /varz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 405),
        (b"this is not http\r\n\r\n", 400),
        (b"GET /connz?limit=abc HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\n" + b"X-Long: " + b"a" * 20000 + b"\r\n\r\n", 400),
    ],
    ids=["unknown-path", "wrong-method", "garbage", "bad-query", "oversized"],
)
async def test_bad_requests(raw: bytes, status: int) -> None:
    cfg = meshgate.GatewayConfig(listen="memory://", monitor_listen="127.0.0.1:0")
    with trio.fail_after(20):
        async with meshgate.open_gateway(cfg) as gw:
            assert gw.monitor_url
            got, _, _ = await http(gw.monitor_url, raw)
            assert got == status
            # the node and the endpoint carry on
            status2, body = await get(gw.monitor_url, "/healthz")
            assert status2 == 200
            assert json.loads(body) == {"status": "ok"}
