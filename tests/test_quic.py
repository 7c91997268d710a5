"""QUIC client listeners (issue 20): the same protocol as TCP over one QUIC stream,
keyed state over unreliable datagrams, and bad input on the UDP port."""

from __future__ import annotations

import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

import meshgate
from meshgate import GatewayConfig, open_gateway
from meshgate.client import connect_with_stream
from meshgate.replicant import InMemoryReplicant, connect_replicant
from meshgate.spatial import Grid
from meshgate.transports import QuicStream, connect_stream, get_transport

pytest.importorskip("aioquic", reason="quic:// needs aioquic (pip install 'meshgate[quic]')")
trustme = pytest.importorskip("trustme", reason="the tests' certificates need trustme")


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, ssl.SSLContext]:
    """The node's certificate and key files, and a client context trusting its CA."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    d: Path = tmp_path_factory.mktemp("quic-certs")
    cert_file, key_file = d / "cert.pem", d / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return str(cert_file), str(key_file), client


GRID = Grid(10.0)
TOKEN = "quic-replicant-token-0123"
KEY = "quic-pilot-session-key-0123456789"


def validate(state: bytes, data: bytes) -> bytes | None:
    """The owner corrects every input ``bad``."""
    return b"fixed" if data == b"bad" else None


async def state_ending(sub: meshgate.Subscription, tail: bytes) -> None:
    """Wait for a plain state update (no speculation marker) ending with ``tail``."""
    while True:
        m = await sub.receive()
        if m.reply is None and m.payload.endswith(tail):
            return


def quic_config(certs: tuple[str, str, ssl.SSLContext], **kw: object) -> GatewayConfig:
    cert_file, key_file, _ = certs
    return GatewayConfig(
        listen=["tcp://127.0.0.1:0", "quic://127.0.0.1:0"],
        tls_cert_file=cert_file,
        tls_key_file=key_file,
        **kw,  # type: ignore[arg-type]
    )


async def test_a_budgeted_quic_client_gets_its_scheduled_state_as_datagrams(
    certs: tuple[str, str, ssl.SSLContext],
) -> None:
    """A bandwidth budget (issue 21) and datagrams (issue 20) compose: the send tick
    picks the values, the datagram lane carries them."""
    cfg = quic_config(certs, client_bandwidth=200_000, send_interval=0.02, datagram_refresh=8)
    with trio.fail_after(20):
        async with open_gateway(cfg) as gw:
            tcp_url, quic_url = gw.client_urls
            async with (
                meshgate.connect(quic_url, ssl_context=certs[2]) as q,
                meshgate.connect(tcp_url) as t,
            ):
                state = await q.add_subscription("state.>")
                await q.flush()
                keys = [f"e{i}" for i in range(10)]
                for r in range(5):
                    for k in keys:
                        await t.publish(f"state.{k}", b"%d" % r, key=k)
                for k in keys:
                    await t.publish(f"state.{k}", b"last", key=k)
                await t.flush()
                last: set[str] = set()
                unreliable = 0
                while last != set(keys):
                    m = await state.receive()
                    unreliable += m.unreliable
                    if m.payload == b"last":
                        last.add(m.subject[6:])
            st = gw.statistics()
            assert st.scheduled_clients == 2  # the node's budget: both clients have it
            assert st.scheduled_keyed_msgs >= 10
            assert unreliable > 0
            assert st.datagrams_out >= unreliable


async def test_quic_client_talks_to_tcp_client(certs: tuple[str, str, ssl.SSLContext]) -> None:
    with trio.fail_after(20):
        async with open_gateway(quic_config(certs)) as gw:
            assert len(gw.client_urls) == 2
            tcp_url, quic_url = gw.client_urls
            assert gw.client_url == tcp_url
            assert quic_url.startswith("quic://127.0.0.1:")
            async with (
                meshgate.connect(quic_url, ssl_context=certs[2]) as q,
                meshgate.connect(tcp_url) as t,
            ):
                sub_q = await q.add_subscription("to.quic")
                sub_t = await t.add_subscription("to.tcp")
                await q.flush()
                await t.flush()
                await t.publish("to.quic", b"hello quic")
                await q.publish("to.tcp", b"hello tcp")
                assert (await sub_q.receive()).payload == b"hello quic"
                assert (await sub_t.receive()).payload == b"hello tcp"
            # the clients left: the endpoint holds nothing of them any more
            endpoint = get_transport(quic_url).endpoints[quic_url]  # type: ignore[attr-defined]
            await endpoint.wait_no_connections()
            assert endpoint.table_sizes() == {
                "connections": 0,
                "connection_ids": 0,
                "handshakes": 0,
            }


async def test_keyed_state_travels_as_datagrams_and_the_rest_reliably(
    certs: tuple[str, str, ssl.SSLContext],
) -> None:
    with trio.fail_after(20):
        async with open_gateway(quic_config(certs, datagram_refresh=8)) as gw:
            tcp_url, quic_url = gw.client_urls
            async with (
                meshgate.connect(quic_url, ssl_context=certs[2]) as q,
                meshgate.connect(tcp_url) as t,
            ):
                state = await q.add_subscription("state.>")
                events = await q.add_subscription("event.>")
                await q.flush()
                for i in range(1, 21):
                    await t.publish("state.e1", str(i).encode(), key="e1")
                await t.publish("event.hit", b"boom")  # no key: the reliable stream
                await t.flush()
                got = []
                while not got or got[-1].payload != b"20":
                    got.append(await state.receive())
                hit = await events.receive()
            values = [int(m.payload) for m in got]
            assert values == sorted(set(values))  # never an older state after a newer one
            unreliable = {int(m.payload) for m in got if m.unreliable}
            assert 20 in unreliable
            # every 8th update of the key is a reliable refresh
            assert not ({8, 16} & unreliable)
            assert not hit.unreliable
            st = gw.statistics()
            assert st.datagrams_out >= 15
            assert st.datagram_refreshes == 2


async def test_the_same_game_over_quic_as_over_tcp(certs: tuple[str, str, ssl.SSLContext]) -> None:
    """A replicant and a pilot over QUIC, a watcher over TCP, one node: inputs reach the
    owner, provisional updates are confirmed or corrected, and a pilot that restarts
    with its session key has its retried inputs applied once."""
    ctx = certs[2]
    cfg = quic_config(certs, replicants=True, replicant_token=TOKEN, speculative=("cell.>",))
    owner = InMemoryReplicant("east", GRID, {"ship": (5, 5)}, validate=validate)
    with trio.fail_after(30):
        async with open_gateway(cfg) as gw:
            tcp_url, quic_url = gw.client_urls
            async with (
                connect_replicant(quic_url, "east", token=TOKEN, ssl_context=ctx) as link,
                trio.open_nursery() as nursery,
            ):
                nursery.start_soon(owner.run, link)
                await owner.wait_ready()
                async with (
                    meshgate.connect(tcp_url) as watcher,
                    watcher.subscribe("cell.0.0.>") as seen,
                ):
                    await watcher.flush()
                    while not link.wants("cell.0.0.ship"):
                        await link.interest_change()
                    with trio.CancelScope() as crash:
                        async with meshgate.connect(
                            quic_url, ssl_context=ctx, session=KEY
                        ) as pilot:
                            await pilot.send_input("ship", 0, b"good", relay="cell.0.0.ship")
                            await pilot.send_input("ship", 1, b"bad", relay="cell.0.0.ship")
                            answers = set()
                            for _ in range(2):
                                answer = await pilot.receive_correction()
                                assert answer.reply is not None
                                answers.add((answer.reply.split(".", 1)[0], answer.payload))
                            assert answers == {("$CONF", b""), ("$CORR", b"fixed")}
                            crash.cancel()  # the game client dies without a goodbye
                            await trio.sleep_forever()
                    # restarted, it sends everything again: the retries are applied once
                    async with meshgate.connect(quic_url, ssl_context=ctx, session=KEY) as again:
                        for seq in range(3):
                            await again.send_input("ship", seq, b"+")
                        await state_ending(seen, b"+")
                nursery.cancel_scope.cancel()
    (identity,) = {client for client, _ in owner.log["ship"]}
    assert identity.startswith("s-")
    assert [seq for _, seq in owner.log["ship"]] == [0, 1, 2]
    assert owner.states["ship"] == b"goodbad+"


async def test_a_client_whose_address_changes_keeps_its_connection(
    certs: tuple[str, str, ssl.SSLContext],
) -> None:
    """QUIC connection migration: the client moves to a new UDP port (as after a NAT
    rebinding); the node follows it on the same connection, subscriptions and all."""
    with trio.fail_after(20):
        async with open_gateway(quic_config(certs)) as gw:
            tcp_url, quic_url = gw.client_urls
            async with (
                connect_stream(quic_url, ssl_context=certs[2]) as stream,
                connect_with_stream(stream, session=KEY) as q,
                meshgate.connect(tcp_url) as t,
            ):
                assert isinstance(stream, QuicStream)
                sub = await q.add_subscription("news")
                await q.flush()
                await t.publish("news", b"before")
                assert (await sub.receive()).payload == b"before"
                before = {c.cid for c in gw.connz()}
                old_address = stream.local_address
                await stream.migrate()
                assert stream.local_address != old_address
                await q.publish("news", b"from the new port")
                assert (await sub.receive()).payload == b"from the new port"
                await t.publish("news", b"after")
                assert (await sub.receive()).payload == b"after"
                assert {c.cid for c in gw.connz()} == before  # the same connections
                assert gw.varz().quic[quic_url]["address_changes"] >= 1


def check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "meshgate", "serve", "--check", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_serve_check_names_the_tls_field_a_quic_listener_lacks(
    tmp_path: Path, certs: tuple[str, str, ssl.SSLContext]
) -> None:
    cert_file, key_file, _ = certs
    good = tmp_path / "good.toml"
    good.write_text(
        'listen = ["tcp://127.0.0.1:0", "wss://127.0.0.1:0", "quic://127.0.0.1:0"]\n'
        f'[tls]\ncert_file = "{cert_file}"\nkey_file = "{key_file}"\n'
    )
    assert check(good).returncode == 0, check(good).stderr
    no_tls = tmp_path / "no-tls.toml"
    no_tls.write_text('listen = ["tcp://127.0.0.1:0", "quic://127.0.0.1:0"]\n')
    proc = check(no_tls)
    assert proc.returncode == 2
    assert "tls.cert_file: a quic:// listener needs it" in proc.stderr
    unreadable = tmp_path / "unreadable.toml"
    unreadable.write_text(
        'listen = "quic://127.0.0.1:0"\n'
        f'[tls]\ncert_file = "{cert_file}"\nkey_file = "{tmp_path / "nope.pem"}"\n'
    )
    proc = check(unreadable)
    assert proc.returncode == 2
    assert "tls.key_file: cannot load" in proc.stderr


def test_listen_takes_one_url_or_a_list(certs: tuple[str, str, ssl.SSLContext]) -> None:
    assert GatewayConfig(listen="127.0.0.1:0").listen == "127.0.0.1:0"  # as before
    assert GatewayConfig(listen=["127.0.0.1:0"]).listen == "127.0.0.1:0"
    cfg = quic_config(certs)
    assert cfg.client_listeners == (
        ("listen[0]", "tcp://127.0.0.1:0"),
        ("listen[1]", "quic://127.0.0.1:0"),
    )
    # QUIC is UDP: it may share a port number with a TCP listener
    GatewayConfig(
        listen=["tcp://127.0.0.1:4999", "quic://127.0.0.1:4999"],
        tls_cert_file=certs[0],
        tls_key_file=certs[1],
    )
    with pytest.raises(meshgate.ConfigError, match=r"listen\[1\]"):
        GatewayConfig(listen=["tcp://127.0.0.1:4999", "tcp://127.0.0.1:4999"])
    with pytest.raises(meshgate.ConfigError, match="tls"):
        GatewayConfig(listen=["tcp://127.0.0.1:0", "wss://127.0.0.1:0"])


async def test_wss_serves_websocket_over_tls(certs: tuple[str, str, ssl.SSLContext]) -> None:
    pytest.importorskip("trio_websocket", reason="wss:// needs trio-websocket")
    cert_file, key_file, client_ctx = certs
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert_file, key_file)
    cfg = GatewayConfig(listen=["tcp://127.0.0.1:0", "wss://127.0.0.1:0"], tls=server_ctx)
    with trio.fail_after(20):
        async with open_gateway(cfg) as gw:
            tcp_url, wss_url = gw.client_urls
            assert wss_url.startswith("wss://127.0.0.1:")
            async with (
                meshgate.connect(wss_url, ssl_context=client_ctx, reconnect=False) as w,
                meshgate.connect(tcp_url) as t,
            ):
                sub = await w.add_subscription("secure")
                await w.flush()
                await t.publish("secure", b"over tls")
                assert (await sub.receive()).payload == b"over tls"


async def test_a_lost_quic_connection_reconnects_and_resumes(
    certs: tuple[str, str, ssl.SSLContext],
) -> None:
    """The client redials ``quic://`` after losing its connection: its subscription
    resumes, and its session key keeps inputs retried across the loss applied once."""
    ctx = certs[2]
    cfg = quic_config(certs, replicants=True)
    owner = InMemoryReplicant("west", GRID, {"ship": (5, 5)})
    with trio.fail_after(30):
        async with open_gateway(cfg) as gw:
            tcp_url, quic_url = gw.client_urls
            gw.attach_replicant(owner)
            await owner.wait_ready()
            endpoint = get_transport(quic_url).endpoints[quic_url]  # type: ignore[attr-defined]
            async with (
                meshgate.connect(quic_url, ssl_context=ctx, session=KEY, reconnect_wait=0.01) as q,
                meshgate.connect(tcp_url) as t,
                t.subscribe("cell.0.0.>") as seen,
            ):
                news = await q.add_subscription("news")
                await q.flush()
                await t.flush()
                for seq in range(3):
                    await q.send_input("ship", seq, b"+")
                await state_ending(seen, b"+++")
                assert endpoint.close_connections() == 1  # the connection breaks
                async for event in q.connection_events():
                    if event.kind == "reconnected":
                        break
                for seq in range(5):  # the pilot retries everything
                    await q.send_input("ship", seq, b"+")
                await state_ending(seen, b"+++++")
                await t.publish("news", b"resumed")
                assert (await news.receive()).payload == b"resumed"
    assert [seq for _, seq in owner.log["ship"]] == list(range(5))
    (identity,) = {client for client, _ in owner.log["ship"]}
    assert identity.startswith("s-")


async def test_serve_names_a_quic_listener_whose_udp_port_is_taken(
    tmp_path: Path, certs: tuple[str, str, ssl.SSLContext]
) -> None:
    held = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    await held.bind(("127.0.0.1", 0))
    port = held.getsockname()[1]
    cfg = tmp_path / "node.toml"
    cfg.write_text(
        f'listen = ["127.0.0.1:0", "quic://127.0.0.1:{port}"]\n'
        f'[tls]\ncert_file = "{certs[0]}"\nkey_file = "{certs[1]}"\n'
    )
    with trio.fail_after(30), held:
        proc = await trio.run_process(
            [sys.executable, "-m", "meshgate", "serve", "-c", str(cfg)],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert proc.returncode == 1
    assert proc.stderr.decode().splitlines() == [
        f"meshgate serve: listen[1] quic://127.0.0.1:{port}: address in use"
    ]


async def test_max_msgs_counts_datagrams_too(certs: tuple[str, str, ssl.SSLContext]) -> None:
    """A subscription limited to 3 more messages ends after 3, datagrams included."""
    with trio.fail_after(20):
        async with open_gateway(quic_config(certs, datagram_refresh=0)) as gw:
            tcp_url, quic_url = gw.client_urls
            async with (
                meshgate.connect(quic_url, ssl_context=certs[2]) as q,
                meshgate.connect(tcp_url) as t,
            ):
                sub = await q.add_subscription("state.>")
                await sub.unsubscribe(max_msgs=3)
                await q.flush()
                for i in range(1, 4):
                    await t.publish("state.e1", str(i).encode(), key="e1")
                await t.flush()
                got = [m async for m in sub]
                assert [m.payload for m in got] == [b"1", b"2", b"3"]
                assert all(m.unreliable for m in got)
                assert gw.statistics().subscriptions == 0  # the node removed it


@asynccontextmanager
async def raw_quic_stream(certs: tuple[str, str, ssl.SSLContext]) -> AsyncIterator[QuicStream]:
    """A node serving QUIC, and a bare QUIC connection to it (no meshgate client)."""
    async with (
        open_gateway(quic_config(certs)) as gw,
        connect_stream(gw.client_urls[1], ssl_context=certs[2]) as stream,
    ):
        assert isinstance(stream, QuicStream)
        yield stream


async def test_datagram_room_is_one_packet_and_reopens_once_it_left(
    certs: tuple[str, str, ssl.SSLContext],
) -> None:
    """The datagram lane's flow control: a connection offers room for one packet, less
    what it was handed and has not sent; the room reopens (the callback runs once) as
    soon as the packet has left."""
    with trio.fail_after(20):
        async with raw_quic_stream(certs) as stream:
            room = stream.datagram_room()
            assert 0 < room <= stream.peer.max_datagram_size
            opened = trio.Event()
            calls: list[int] = []

            def reopened() -> None:
                calls.append(stream.datagram_room())
                opened.set()

            for _ in range(4):  # fill the room: datagrams handed, not yet sent
                left = stream.datagram_room()
                if left == 0:
                    break
                assert stream.send_datagram(b"x" * min(left, stream.max_datagram_payload))
            assert stream.datagram_room() == 0
            stream.notify_datagram_room(reopened)
            await opened.wait()
            assert calls[0] > 0  # the packet left
            await trio.testing.wait_all_tasks_blocked()
            assert len(calls) == 1  # once per registration


async def test_datagram_room_does_not_wait_behind_queued_stream_data(
    certs: tuple[str, str, ssl.SSLContext],
) -> None:
    """A large reliable write still queued in the connection does not close the
    datagram lane: datagrams go first in every packet, so only datagrams handed and
    not yet sent count against the room."""
    with trio.fail_after(20):
        async with raw_quic_stream(certs) as stream:
            room = stream.datagram_room()
            # queue far more stream data than the congestion window lets go at once,
            # without waiting for it to leave
            stream.peer.send_stream_data(stream.stream_id, b"\x00" * 512 * 1024)
            assert stream.peer.unsent > room
            assert stream.datagram_room() == room
            assert stream.send_datagram(b"x" * 100)
            assert stream.datagram_room() == room - 100
