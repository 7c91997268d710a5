"""The NATS port with real, unmodified NATS clients: nats-py (from PyPI, a test
dependency) runs on asyncio in a worker thread while the nodes run on trio."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
import trio

import meshgate

from . import helpers
from .helpers import memory_node
from .supercluster import supercluster

nats = pytest.importorskip("nats", reason="nats-py is not installed (pip install nats-py)")

T = TypeVar("T")
TOKEN = "nats-user-token-0123"


async def on_asyncio(scenario: Callable[[], Awaitable[T]]) -> T:
    """Run an asyncio scenario (a NATS client's) in a worker thread until it ends."""
    return await trio.to_thread.run_sync(lambda: asyncio.run(scenario()))  # type: ignore[arg-type]


def nats_url(gw: meshgate.Gateway) -> str:
    return gw.nats_urls[0].replace("tcp://", "nats://")


def tcp_node(**kw: Any) -> meshgate.GatewayConfig:
    return meshgate.GatewayConfig(**{"listen": "127.0.0.1:0", "nats_listen": "127.0.0.1:0", **kw})


async def test_pubsub_queue_groups_request_reply_headers_and_no_responders() -> None:
    async def scenario(url: str) -> dict[str, Any]:
        nc = await nats.connect(url)
        seen: list[tuple[str, bytes, dict[str, str] | None]] = []
        workers: list[str] = []

        async def record(m: Any) -> None:
            seen.append((m.subject, m.data, m.headers))

        async def worker(name: str) -> Callable[[Any], Awaitable[None]]:
            async def cb(m: Any) -> None:
                workers.append(name)

            return cb

        async def service(m: Any) -> None:
            await m.respond(b"pong:" + m.data)

        await nc.subscribe("game.*.state", cb=record)
        await nc.subscribe("game.>", cb=record)
        await nc.subscribe("jobs", queue="w", cb=await worker("w1"))
        await nc.subscribe("jobs", queue="w", cb=await worker("w2"))
        await nc.subscribe("svc", cb=service)
        await nc.flush()
        await nc.publish("game.1.state", b"s", headers={"Trace-Id": "abc"})
        await nc.publish("game.1.event", b"e")
        for _ in range(10):
            await nc.publish("jobs", b"j")
        reply = await nc.request("svc", b"hi", timeout=5)
        with pytest.raises(nats.errors.NoRespondersError):
            await nc.request("nobody.home", b"", timeout=5)
        await nc.flush()
        await nc.drain()
        return {"seen": seen, "workers": workers, "reply": reply.data}

    with trio.fail_after(30):
        async with meshgate.open_gateway(tcp_node()) as gw:
            out = await on_asyncio(lambda: scenario(nats_url(gw)))
    assert sorted(out["seen"]) == sorted(
        [
            ("game.1.state", b"s", {"Trace-Id": "abc"}),  # two subscriptions match it
            ("game.1.state", b"s", {"Trace-Id": "abc"}),
            ("game.1.event", b"e", None),
        ]
    )
    assert len(out["workers"]) == 10  # each job to exactly one queue member
    assert out["reply"] == b"pong:hi"


async def test_a_nats_client_and_a_meshgate_client_see_each_other_both_ways() -> None:
    async def scenario(url: str, ready: trio.Event, token: trio.lowlevel.TrioToken) -> list[Any]:
        nc = await nats.connect(url)
        sub = await nc.subscribe("to.nats")
        await nc.flush()
        trio.from_thread.run_sync(ready.set, trio_token=token)
        msg = await sub.next_msg(timeout=5)
        await nc.publish("to.meshgate", b"hello meshgate", headers={"Msg-Id": "42"})
        await nc.flush()
        await nc.close()
        return [msg.subject, msg.data, msg.headers]

    with trio.fail_after(30):
        async with (
            meshgate.open_gateway(tcp_node()) as gw,
            meshgate.connect(gw.client_url or "") as mc,
            mc.subscribe("to.meshgate") as inbox,
            trio.open_nursery() as nursery,
        ):
            await mc.flush()
            ready = trio.Event()
            result: list[Any] = []
            token = trio.lowlevel.current_trio_token()

            async def run_nats() -> None:
                result.extend(await on_asyncio(lambda: scenario(nats_url(gw), ready, token)))

            nursery.start_soon(run_nats)
            await ready.wait()
            await mc.publish("to.nats", b"hello nats", headers={"Trace-Id": ["t1", "t2"]})
            got = await inbox.receive()
        assert result == ["to.nats", b"hello nats", {"Trace-Id": "t2"}]  # nats-py keeps the last
        assert (got.subject, got.payload, got.headers) == (
            "to.meshgate",
            b"hello meshgate",
            {"Msg-Id": ["42"]},
        )


async def test_request_reply_and_headers_across_clusters() -> None:
    async def responder(url: str, ready: trio.Event, token: trio.lowlevel.TrioToken) -> None:
        nc = await nats.connect(url)
        sub = await nc.subscribe("svc.echo")
        await nc.flush()
        trio.from_thread.run_sync(ready.set, trio_token=token)
        m = await sub.next_msg(timeout=10)
        await nc.publish(m.reply, m.data[::-1], headers={"Served-By": "B", **(m.headers or {})})
        await nc.flush()
        await nc.close()

    async def requester(url: str) -> tuple[bytes, dict[str, str] | None]:
        nc = await nats.connect(url)
        for _ in range(100):  # interest crosses the gateway asynchronously
            try:
                r = await nc.request("svc.echo", b"abc", timeout=0.5, headers={"Trace-Id": "x"})
                break
            except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
                await asyncio.sleep(0.05)
        await nc.close()
        return r.data, r.headers

    def extra(cluster: str, i: int) -> dict[str, Any]:
        return {"nats_listen": "127.0.0.1:0"}

    with trio.fail_after(60):
        async with (
            supercluster({"A": 1, "B": 1}, scheme="tcp", extra=extra) as sc,
            trio.open_nursery() as n,
        ):
            a, b = sc["A"][0], sc["B"][0]
            ready = trio.Event()
            token = trio.lowlevel.current_trio_token()
            n.start_soon(on_asyncio, lambda: responder(nats_url(b), ready, token))
            await ready.wait()
            data, headers = await on_asyncio(lambda: requester(nats_url(a)))
    assert data == b"cba"
    assert headers == {"Served-By": "B", "Trace-Id": "x"}


async def test_auth_failure_and_permission_errors_use_nats_server_texts() -> None:
    users = (
        meshgate.User(
            TOKEN,
            publish=meshgate.Permissions(allow=("ok.>",)),
            subscribe=meshgate.Permissions(allow=("ok.>", "_INBOX.>")),
        ),
    )

    async def scenario(url: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        errors: list[str] = []

        async def on_error(exc: Exception) -> None:
            errors.append(str(exc))

        nc = await nats.connect(url, token=TOKEN, error_cb=on_error)
        sub = await nc.subscribe("ok.x")
        await nc.publish("secret.x", b"no")
        await nc.subscribe("secret.>")
        await nc.publish("ok.x", b"yes")  # the connection stays open
        out["ok"] = (await sub.next_msg(timeout=5)).data
        await nc.flush()
        out["errors"] = list(errors)
        await nc.close()
        return out

    with trio.fail_after(30):
        async with meshgate.open_gateway(tcp_node(users=users)) as gw:
            out = await on_asyncio(lambda: scenario(nats_url(gw)))
            # a wrong token, on the wire: nats-server's exact text, then the close
            host, port = gw.nats_urls[0].removeprefix("tcp://").rsplit(":", 1)
            async with await trio.open_tcp_stream(host, int(port)) as stream:
                await stream.send_all(b'CONNECT {"auth_token":"wrong-token"}\r\nPING\r\n')
                received = b""
                while chunk := await stream.receive_some():
                    received += chunk
            assert b'"auth_required":true' in received.split(b"\r\n")[0]
            assert received.endswith(b"-ERR 'Authorization Violation'\r\n")
            stats = gw.statistics()
    assert out["ok"] == b"yes"
    errors = [e.lower() for e in out["errors"]]  # nats-py lowercases what the server said
    assert 'nats: permissions violation for publish to "secret.x"' in errors
    assert 'nats: permissions violation for subscription to "secret.>"' in errors
    assert stats.auth_failures == 1
    assert stats.permission_violations == 2


async def test_a_nats_client_fails_over_to_a_node_it_learned_from_connect_urls() -> None:
    async def scenario(url: str, events: trio.MemorySendChannel[str], token: Any) -> list[bytes]:
        reconnected = asyncio.Event()

        async def on_reconnect() -> None:
            reconnected.set()

        nc = await nats.connect(url, reconnect_time_wait=0.05, reconnected_cb=on_reconnect)
        servers = [s.netloc for s in nc.servers]
        trio.from_thread.run_sync(events.send_nowait, json.dumps(servers), trio_token=token)
        sub = await nc.subscribe("news")
        await nc.flush()
        trio.from_thread.run_sync(events.send_nowait, "subscribed", trio_token=token)
        await asyncio.wait_for(reconnected.wait(), 10)
        await nc.flush()
        trio.from_thread.run_sync(events.send_nowait, "reconnected", trio_token=token)
        got = [(await sub.next_msg(timeout=10)).data]
        await nc.close()
        return got

    def node(name: str, seeds: tuple[str, ...] = ()) -> meshgate.GatewayConfig:
        return helpers.tcp_node(name, seeds, nats_listen="127.0.0.1:0")

    with trio.fail_after(60):
        async with meshgate.open_gateway(node("c1")) as c1, trio.open_nursery() as nursery:
            assert c1.cluster_url
            send, receive = trio.open_memory_channel[str](10)
            token = trio.lowlevel.current_trio_token()
            got: list[bytes] = []
            async with trio.open_nursery() as c0_nursery:
                c0 = await c0_nursery.start(meshgate.Gateway(node("c0", (c1.cluster_url,))).run)
                await c1.wait_routes(1)
                await c0.wait_routes(1)

                async def client() -> None:
                    got.extend(await on_asyncio(lambda: scenario(nats_url(c0), send, token)))

                nursery.start_soon(client)
                servers = json.loads(await receive.receive())
                assert await receive.receive() == "subscribed"
                c0_nursery.cancel_scope.cancel()  # the client's node goes away
            assert c1.nats_urls[0].removeprefix("tcp://") in servers  # learned, not given
            assert await receive.receive() == "reconnected"
            async with meshgate.connect(c1.client_url or "") as pub:
                await pub.publish("news", b"still here")
        assert got == [b"still here"]


async def test_bad_input_gets_a_nats_error_and_closes_only_that_connection() -> None:
    cases = [
        (b"BOGUS\r\n", b"-ERR 'Unknown Protocol Operation'\r\n"),
        (b"PUB x 2000000\r\n", b"-ERR 'Maximum Payload Violation'\r\n"),
        (b"SUB " + b"a" * 5000 + b" 1\r\n", b"-ERR 'Maximum Control Line Exceeded'\r\n"),
        (b"PUB a..b 1\r\nx\r\n", b"-ERR 'Invalid Subject'\r\n"),
        (b"PUB x 1\r\nxyz\r\n", b"-ERR 'Parser Error'\r\n"),
    ]
    with trio.fail_after(30):
        async with (
            meshgate.open_gateway(tcp_node()) as gw,
            meshgate.connect(gw.client_url or "") as bystander,
            bystander.subscribe("x") as sub,
        ):
            host, port = gw.nats_urls[0].removeprefix("tcp://").rsplit(":", 1)
            for bad, expected in cases:
                stream = await trio.open_tcp_stream(host, int(port))
                await stream.send_all(b"CONNECT {}\r\n" + bad)
                received = b""
                while chunk := await stream.receive_some():
                    received += chunk
                assert received.startswith(b"INFO ")
                assert received.endswith(expected), (bad, received)
                await stream.aclose()
                await bystander.publish("x", b"fine")
                assert (await sub.receive()).payload == b"fine"
            assert gw.statistics().protocol_errors == len(cases)


async def test_the_nats_port_on_memory_and_websocket_transports() -> None:
    from meshgate.transports import connect_stream

    cfg = memory_node("n0", nats_listen=("memory://n0-nats", "ws://127.0.0.1:0"))
    with trio.fail_after(20):
        async with meshgate.open_gateway(cfg) as gw:
            for url in gw.nats_urls:
                async with connect_stream(url) as stream:
                    await stream.send_all(b"CONNECT {}\r\nSUB a 1\r\nPUB a 2\r\nhi\r\nPING\r\n")
                    received = b""
                    while not received.endswith(b"PONG\r\n"):
                        received += await stream.receive_some()
                    assert b"MSG a 1 2\r\nhi\r\n" in received, url


@pytest.mark.parametrize("transport", ["tcp", "ws"])
async def test_unmodified_nats_js_and_nats_ws_clients(transport: str) -> None:
    """nats.js over TCP and nats.ws over WebSocket (as a browser would), from npm."""
    import os
    from pathlib import Path

    from ._npm import node_modules

    modules = node_modules()
    script = Path(__file__).parent / "js" / "nats_session.cjs"
    cfg = tcp_node(nats_listen=("127.0.0.1:0", "ws://127.0.0.1:0"))
    with trio.fail_after(60):
        async with meshgate.open_gateway(cfg) as gw:
            url = (
                gw.nats_urls[0].replace("tcp://", "nats://")
                if transport == "tcp"
                else gw.nats_urls[1]
            )
            done = await trio.run_process(
                ["node", str(script), transport, url],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
                env={**os.environ, "NODE_PATH": str(modules)},
            )
    assert done.returncode == 0, done.stderr.decode()
    out = json.loads(done.stdout)
    assert sorted(map(str, out["seen"])) == sorted(
        map(
            str,
            [
                ["js.1.state", "s", {"Trace-Id": "js1"}],  # two subscriptions match it
                ["js.1.state", "s", {"Trace-Id": "js1"}],
                ["js.1.event", "e", None],
            ],
        )
    )
    assert out["workers"] == 10
    assert out["reply"] == "pong:hi"
    assert out["noResponders"] == "503"


async def test_the_game_layer_from_plain_nats_clients() -> None:
    """Inputs (headers Meshgate-Seq/-Relay/-Session), an area of interest, provisional
    updates and the owner's confirm and correction, all from unmodified nats-py."""
    from meshgate.replicant import InMemoryReplicant
    from meshgate.spatial import Grid

    def validate(state: bytes, data: bytes) -> bytes | None:
        return b"fixed" if data == b"bad" else None

    async def scenario(url: str) -> dict[str, Any]:
        pilot = await nats.connect(url)
        watcher = await nats.connect(url)
        notices = await pilot.subscribe("$MG.notice")
        area = await watcher.subscribe("cell.0.0.>")  # an area of interest
        await pilot.flush()
        await watcher.flush()
        session = "pilot-session-key-0123456789"
        for seq, data in enumerate([b"good", b"bad"]):
            await pilot.publish(
                "$IN.ship",
                data,
                headers={
                    "Meshgate-Seq": str(seq),
                    "Meshgate-Relay": "cell.0.0.ship",
                    "Meshgate-Session": session,
                },
            )
        await pilot.flush()
        seen = []
        while len(seen) < 4:  # the speculation traffic; state updates carry no reply
            m = await area.next_msg(timeout=5)
            if m.reply.startswith("$"):
                seen.append(m)
        answers = [await notices.next_msg(timeout=5) for _ in range(2)]
        await pilot.close()
        await watcher.close()
        return {
            "area": sorted((m.reply.split(".")[0], m.data) for m in seen),
            "answers": sorted((m.reply.split(".")[0], m.data) for m in answers),
        }

    cfg = tcp_node(replicants=True, speculative=("cell.>",))
    owner = InMemoryReplicant("owner", Grid(10.0), {"ship": (5, 5)}, validate=validate)
    with trio.fail_after(30):
        async with meshgate.open_gateway(cfg) as gw:
            gw.attach_replicant(owner)
            await owner.wait_ready()
            out = await on_asyncio(lambda: scenario(nats_url(gw)))
    assert out["area"] == [
        ("$CONF", b""),
        ("$CORR", b"fixed"),
        ("$PROV", b"bad"),
        ("$PROV", b"good"),
    ]
    assert out["answers"] == [("$CONF", b""), ("$CORR", b"fixed")]
    ((client, _), (_, _)) = owner.log["ship"]
    assert client.startswith("s-")  # the session identity, stable across reconnects
    assert [seq for _, seq in owner.log["ship"]] == [0, 1]


async def test_a_nats_client_over_tls() -> None:
    """A ``tls://`` NATS port does the TLS handshake first (nats-server's
    ``handshake_first``; nats-py ``tls_handshake_first=True``, nats.js
    ``tls: {handshakeFirst: true}``), with the node's ``tls`` context."""
    import ssl

    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server)
    client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ca.configure_trust(client)

    async def scenario(url: str) -> bytes:
        nc = await nats.connect(url, tls=client, tls_handshake_first=True)
        sub = await nc.subscribe("secure")
        await nc.publish("secure", b"over tls")
        got = (await sub.next_msg(timeout=5)).data
        await nc.close()
        return got

    cfg = tcp_node(nats_listen="tls://127.0.0.1:0", tls=server)
    with trio.fail_after(30):
        async with meshgate.open_gateway(cfg) as gw:
            assert gw.nats_urls[0].startswith("tls://")
            assert await on_asyncio(lambda: scenario(gw.nats_urls[0])) == b"over tls"


async def test_nats_py_with_token_users_on_a_routed_cluster_and_across_a_gateway() -> None:
    """The secure setup of ``examples/node.toml``: token users, routes and a gateway.  A
    node that knows other NATS ports sends its second INFO (with ``connect_urls``) only
    after the PONG that answers the client's first PING, as nats-server orders it;
    nats-py waits for that PONG and would otherwise never leave CONNECTING."""

    async def subscriber(url: str, ready: trio.Event, token: trio.lowlevel.TrioToken) -> list[Any]:
        nc = await nats.connect(url, token=TOKEN, connect_timeout=5, max_reconnect_attempts=0)
        sub = await nc.subscribe("sec.>")
        await nc.flush(timeout=5)
        trio.from_thread.run_sync(ready.set, trio_token=token)
        got = [await sub.next_msg(timeout=10) for _ in range(2)]
        urls = nc.discovered_servers
        await nc.close()
        return [sorted((m.subject, m.data) for m in got), len(urls)]

    async def publisher(url: str) -> None:
        nc = await nats.connect(url, token=TOKEN, connect_timeout=5, max_reconnect_attempts=0)
        for _ in range(200):  # interest crosses routes and the gateway asynchronously
            try:
                await nc.request("probe.sec", b"", timeout=0.2)
            except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
                pass
            else:
                break
        await nc.publish("sec.a", b"1")
        await nc.publish("sec.b", b"2")
        await nc.flush(timeout=5)
        await nc.close()

    def extra(cluster: str, i: int) -> dict[str, Any]:
        return {
            "nats_listen": "127.0.0.1:0",
            "users": (meshgate.User(token=TOKEN),),
            "cluster_secret": f"route-secret-{cluster}-0123",
            "gateway_secrets": {"A": "gateway-secret-ab-0123", "B": "gateway-secret-ab-0123"},
        }

    async def responder(url: str, ready: trio.Event, token: trio.lowlevel.TrioToken) -> None:
        nc = await nats.connect(url, token=TOKEN, connect_timeout=5, max_reconnect_attempts=0)
        sub = await nc.subscribe("probe.sec")
        await nc.flush(timeout=5)
        trio.from_thread.run_sync(ready.set, trio_token=token)
        m = await sub.next_msg(timeout=20)
        await nc.publish(m.reply, b"ok")
        await nc.flush(timeout=5)
        await nc.close()

    async def over(sub_node: meshgate.Gateway, pub_node: meshgate.Gateway) -> list[Any]:
        token = trio.lowlevel.current_trio_token()
        ready, ready2 = trio.Event(), trio.Event()
        results: list[Any] = []

        async def run_sub() -> None:
            results.append(await on_asyncio(lambda: subscriber(nats_url(sub_node), ready, token)))

        async with trio.open_nursery() as n:
            n.start_soon(run_sub)
            n.start_soon(on_asyncio, lambda: responder(nats_url(sub_node), ready2, token))
            await ready.wait()
            await ready2.wait()
            await on_asyncio(lambda: publisher(nats_url(pub_node)))
        return results[0]  # type: ignore[no-any-return]

    with trio.fail_after(90):
        async with supercluster({"A": 2, "B": 1}, scheme="tcp", extra=extra) as sc:
            a0, a1, b0 = sc["A"][0], sc["A"][1], sc["B"][0]
            for pub_node in (a1, b0):  # over a route, over a gateway
                got, discovered = await over(a0, pub_node)
                assert got == [("sec.a", b"1"), ("sec.b", b"2")]
                # the authenticated client learned the cluster's other NATS port
                assert discovered >= 1


async def test_nats_js_with_token_users_on_a_routed_cluster_and_across_a_gateway() -> None:
    """The same secure setup with nats.js (from npm): over a route and over a gateway."""
    import os
    from pathlib import Path

    from ._npm import node_modules

    modules = node_modules()
    script = Path(__file__).parent / "js" / "nats_secure.cjs"

    def extra(cluster: str, i: int) -> dict[str, Any]:
        return {
            "nats_listen": "127.0.0.1:0",
            "users": (meshgate.User(token=TOKEN),),
            "cluster_secret": f"route-secret-{cluster}-0123",
            "gateway_secrets": {"A": "gateway-secret-ab-0123", "B": "gateway-secret-ab-0123"},
        }

    with trio.fail_after(90):
        async with supercluster({"A": 2, "B": 1}, scheme="tcp", extra=extra) as sc:
            a0, a1, b0 = sc["A"][0], sc["A"][1], sc["B"][0]
            for pub_node in (a1, b0):  # over a route, over a gateway
                done = await trio.run_process(
                    ["node", str(script), nats_url(a0), nats_url(pub_node), TOKEN],
                    capture_stdout=True,
                    capture_stderr=True,
                    check=False,
                    env={**os.environ, "NODE_PATH": str(modules)},
                )
                assert done.returncode == 0, done.stderr.decode()
                out = json.loads(done.stdout)
                assert out == {"seen": [["jsec.a", "1"], ["jsec.b", "2"]], "crossed": True}
