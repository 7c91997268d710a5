"""Bad input and limits: the offender gets an error frame and is closed; everyone else carries on."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import msgpack
import pytest
import trio

import meshgate
from meshgate import ErrorCode
from meshgate.protocol import GatewayMessage, Message, Publish, Subscribe

from .helpers import LISTENS, Raw, collect, config, raw

pytestmark = pytest.mark.parametrize("listen", LISTENS)


@asynccontextmanager
async def bystanders(gw: meshgate.Gateway) -> AsyncIterator[Callable[[], Awaitable[None]]]:
    """A publisher and a subscriber; the returned check proves every message still arrives."""
    assert gw.client_url
    async with (
        meshgate.connect(gw.client_url) as pub,
        meshgate.connect(gw.client_url) as subc,
        subc.subscribe("ok.>") as sub,
    ):
        await subc.flush()
        sent = 0

        async def check() -> None:
            nonlocal sent
            for i in range(50):
                await pub.publish(f"ok.{sent + i}", b"p")
            await pub.flush()
            got = await collect(sub, 50)
            assert [m.subject for m in got] == [f"ok.{sent + i}" for i in range(50)]
            sent += 50

        await check()
        yield check


async def expect_closed(
    gw: meshgate.Gateway,
    code: ErrorCode,
    send: Callable[[Raw], Awaitable[None]],
    hello: bool = True,
) -> str:
    assert gw.client_url
    async with bystanders(gw) as check, raw(gw.client_url) as r:
        if hello:
            await r.hello()
        await send(r)
        err = await r.error_and_close()
        assert err.code == code, err
        assert err.reason
        await check()
    assert gw.statistics().clients == 0
    return err.reason


async def test_oversized_payload(listen: str) -> None:
    with trio.fail_after(10):
        async with meshgate.open_gateway(config(listen, max_payload=1000)) as gw:

            async def send(r: Raw) -> None:
                await r.send(Publish("big", None, b"x" * 1001, None))

            reason = await expect_closed(gw, ErrorCode.PAYLOAD_TOO_LARGE, send)
            assert "max_payload=1000" in reason


async def test_frame_far_above_limit_is_refused_while_streaming(listen: str) -> None:
    with trio.fail_after(10):
        async with meshgate.open_gateway(config(listen, max_payload=1000)) as gw:

            async def send(r: Raw) -> None:
                frame = msgpack.packb([1, "big", None, b"x" * 200_000, None])
                with pytest.raises(trio.BrokenResourceError):  # the node hangs up mid-way
                    await r.send_bytes(frame)
                    await r.send_bytes(frame)

            async def send_tolerant(r: Raw) -> None:
                try:
                    await send(r)
                except pytest.fail.Exception:
                    pass  # the node may read it all before closing; the error frame decides

            await expect_closed(gw, ErrorCode.FRAME_TOO_LARGE, send_tolerant)


async def test_client_refuses_oversized_publish_locally(listen: str) -> None:
    with trio.fail_after(10):
        async with meshgate.open_gateway(config(listen, max_payload=100)) as gw:
            assert gw.client_url
            async with meshgate.connect(gw.client_url) as c:
                assert c.max_payload == 100
                with pytest.raises(meshgate.PayloadTooLargeError):
                    await c.publish("x", b"y" * 101)
                await c.flush()
                assert gw.statistics().messages_in == 0


async def test_too_many_subscriptions(listen: str) -> None:
    with trio.fail_after(10):
        async with meshgate.open_gateway(config(listen, max_subscriptions=3)) as gw:

            async def send(r: Raw) -> None:
                await r.send(*(Subscribe(i, f"s.{i}", None) for i in range(4)))

            assert "max_subscriptions=3" in await expect_closed(gw, ErrorCode.LIMIT_EXCEEDED, send)
            assert gw.statistics().subscriptions == 0  # the offender's were all removed


async def test_too_many_connections(listen: str) -> None:
    with trio.fail_after(10):
        async with meshgate.open_gateway(config(listen, max_connections=2)) as gw:
            assert gw.client_url
            async with bystanders(gw) as check:
                async with raw(gw.client_url) as r:
                    err = await r.error_and_close()
                    assert err.code == ErrorCode.LIMIT_EXCEEDED
                    assert "max_connections=2" in err.reason
                await check()
                assert gw.statistics().clients == 2


@pytest.mark.parametrize(
    "frame",
    [
        Publish("a..b", None, b"", None),
        Publish("a.*", None, b"", None),
        Publish("ok.x", "bad reply", b"", None),
        Subscribe(1, "a.>.b", None),
        Subscribe(1, "ok", "bad queue"),
    ],
    ids=["empty-token", "wildcard-publish", "bad-reply", "bad-pattern", "bad-queue"],
)
async def test_invalid_subject_or_pattern(listen: str, frame: Publish | Subscribe) -> None:
    with trio.fail_after(10):
        async with meshgate.open_gateway(config(listen)) as gw:

            async def send(r: Raw) -> None:
                await r.send(frame)

            await expect_closed(gw, ErrorCode.INVALID_SUBJECT, send)


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"\xc1\xc1\xc1", ErrorCode.MALFORMED),
        (msgpack.packb([1, "a"]), ErrorCode.MALFORMED),
        (msgpack.packb([77, "x"]), ErrorCode.UNKNOWN_OPCODE),
        (b"\x91" * 3000 + b"\x01", ErrorCode.MALFORMED),
    ],
    ids=["bad-msgpack", "wrong-shape", "unknown-opcode", "deep-nesting"],
)
async def test_malformed_frames(listen: str, data: bytes, code: ErrorCode) -> None:
    with trio.fail_after(10):
        async with meshgate.open_gateway(config(listen)) as gw:

            async def send(r: Raw) -> None:
                await r.send_bytes(data)

            await expect_closed(gw, code, send)
            assert gw.statistics().protocol_errors == 1


@pytest.mark.parametrize(
    "frame",
    [Message(1, "x", None, b""), GatewayMessage(None, "$G", "x", None, b"")],
    ids=["MSG-from-client", "GMSG-on-client-port"],
)
async def test_frame_illegal_for_role(listen: str, frame: Message | GatewayMessage) -> None:
    with trio.fail_after(10):
        async with meshgate.open_gateway(config(listen)) as gw:

            async def send(r: Raw) -> None:
                await r.send(frame)

            reason = await expect_closed(gw, ErrorCode.ILLEGAL_FOR_ROLE, send)
            assert "not legal on a client connection" in reason


async def test_route_role_on_client_port_is_refused(listen: str) -> None:
    with trio.fail_after(10):
        async with meshgate.open_gateway(config(listen)) as gw:

            async def send(r: Raw) -> None:
                await r.hello(role="route")

            await expect_closed(gw, ErrorCode.HANDSHAKE_REFUSED, send, hello=False)


async def test_frame_before_hello_is_refused(listen: str) -> None:
    with trio.fail_after(10):
        async with meshgate.open_gateway(config(listen)) as gw:

            async def send(r: Raw) -> None:
                await r.send(Subscribe(1, "x", None))

            await expect_closed(gw, ErrorCode.HANDSHAKE_REFUSED, send, hello=False)


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
        bytes(range(256)) * 4,
        b"\x00" * 64,
    ],
    ids=["http-request", "byte-ramp", "zeros"],
)
async def test_garbage_on_client_port(listen: str, data: bytes) -> None:
    with trio.fail_after(10):
        async with meshgate.open_gateway(config(listen)) as gw:

            async def send(r: Raw) -> None:
                await r.send_bytes(data)

            await expect_closed(gw, ErrorCode.MALFORMED, send, hello=False)


async def test_no_handshake_within_auth_timeout(
    listen: str, autojump_clock: trio.abc.Clock
) -> None:
    with trio.fail_after(30):
        async with meshgate.open_gateway(config(listen, auth_timeout=2.0)) as gw:
            assert gw.client_url
            async with raw(gw.client_url) as r:
                start = trio.current_time()
                err = await r.error_and_close()
                waited = trio.current_time() - start
            assert err.code == ErrorCode.AUTH_FAILED
            assert "auth_timeout" in err.reason
            assert 2.0 <= waited <= 3.0
            assert gw.statistics().auth_failures == 1


async def test_stale_connection_is_closed(listen: str, autojump_clock: trio.abc.Clock) -> None:
    with trio.fail_after(300):
        async with meshgate.open_gateway(config(listen, ping_interval=10.0, max_pings_out=2)) as gw:
            assert gw.client_url
            async with raw(gw.client_url) as r:
                await r.hello()
                frames = await r.until_closed()  # never answers the pings
            kinds = [type(f).__name__ for f in frames]
            assert kinds.count("Ping") == 2
            assert frames[-1].code == ErrorCode.STALE_CONNECTION  # type: ignore[union-attr]
            # a client that answers stays connected through many intervals
            async with meshgate.connect(gw.client_url) as good:
                await trio.sleep(100)  # virtual time: ten ping intervals
                await good.flush()
                assert not good.is_closed


@pytest.mark.parametrize("policy", ["disconnect", "drop-new", "drop-oldest"])
async def test_slow_consumer_policies(listen: str, policy: str) -> None:
    limit = 64 * 1024
    with trio.fail_after(20):
        async with meshgate.open_gateway(
            config(listen, max_pending_bytes=limit, max_payload=1024, slow_consumer_policy=policy)
        ) as gw:
            assert gw.client_url
            async with bystanders(gw) as check, raw(gw.client_url) as stalled:
                await stalled.hello()
                await stalled.send(Subscribe(1, "flood", None))
                async with meshgate.connect(gw.client_url) as pub:
                    await pub.flush()
                    # far more than the limit plus every kernel buffer on the way
                    for _ in range(8000):
                        await pub.publish("flood", b"z" * 1000)
                    await pub.flush()
                await check()
                stats = gw.statistics()
                assert stats.slow_consumers >= 1
                if policy == "disconnect":
                    assert stats.clients == 2  # the stalled one is gone
                else:
                    assert stats.dropped_messages > 0
                    assert stats.clients == 3
                    # memory stays bounded by the configured limit
                    stalled = [c for c in gw.connz() if c.pending_bytes > 0]
                    assert stalled
                    assert all(c.pending_bytes <= limit for c in stalled)


@pytest.mark.parametrize("port", ["cluster", "gateway"])
async def test_frame_far_above_limit_on_peer_ports_gets_an_error_frame(
    listen: str, port: str
) -> None:
    """Route and gateway ports answer an oversized frame like the client port: an error
    frame, then the close (authenticated dialer, so the node has spoken)."""
    from meshgate.protocol import PROTOCOL_VERSION, Error, Hello, Opcode
    from meshgate.transports import connect_stream

    from .helpers import Raw

    scheme_listen = listen if listen != "memory://" else f"memory://big-{port}"
    cfg = meshgate.GatewayConfig(
        name="a1",
        cluster="A",
        listen="127.0.0.1:0",
        cluster_listen=scheme_listen if port == "cluster" else None,
        gateway_listen=scheme_listen if port == "gateway" else None,
        max_payload=1000,
        cluster_secret="route-secret-0123456789",
        gateway_secrets={"B": "gateway-secret-0123456789"},
    )
    with trio.fail_after(10):
        async with meshgate.open_gateway(cfg) as gw:
            url = gw.cluster_url if port == "cluster" else gw.gateway_url
            assert url
            async with connect_stream(url) as stream:
                r = Raw(stream)
                if port == "cluster":
                    hello = Hello(
                        PROTOCOL_VERSION, "route", "x", cluster="A", token="route-secret-0123456789"
                    )
                    frame = msgpack.packb(
                        [int(Opcode.RMSG), None, "$G", "big", None, b"x" * 200_000]
                    )
                else:
                    hello = Hello(
                        PROTOCOL_VERSION,
                        "gateway",
                        "b1",
                        cluster="B",
                        token="gateway-secret-0123456789",
                    )
                    frame = msgpack.packb(
                        [int(Opcode.GMSG), None, "$G", "big", None, b"x" * 200_000]
                    )
                await r.send(hello)
                with contextlib.suppress(trio.BrokenResourceError):
                    await r.send_bytes(frame)
                frames = await r.until_closed()
            errors = [f for f in frames if isinstance(f, Error)]
            assert [e.code for e in errors] == [ErrorCode.FRAME_TOO_LARGE], frames
