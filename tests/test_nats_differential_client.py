"""Differential: one scripted nats-py session against a real nats-server and against
meshgate's NATS port; what the client saw must be the same."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import trio

import meshgate

from ._nats import run_nats

nats = pytest.importorskip("nats", reason="nats-py is not installed (pip install nats-py)")


async def session(url: str) -> dict[str, Any]:
    """Everything a client can observe, in a form that does not depend on the server."""
    seen: dict[str, list[Any]] = {}
    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc).lower())

    nc = await nats.connect(url, error_cb=on_error)
    quiet = await nats.connect(url, no_echo=True)

    def recorder(name: str) -> Any:
        seen[name] = []

        async def cb(m: Any) -> None:
            seen[name].append([m.subject, m.data, m.headers, m.reply is not None and m.reply != ""])

        return cb

    await nc.subscribe("d.*", cb=recorder("star"))
    await nc.subscribe("d.>", cb=recorder("tail"))
    limited = await nc.subscribe("d.x", cb=recorder("limited"))
    await limited.unsubscribe(limit=2)
    queue_hits: list[str] = []

    async def member(m: Any) -> None:
        queue_hits.append(m.subject)

    await nc.subscribe("d.q", queue="workers", cb=member)
    await nc.subscribe("d.q", queue="workers", cb=member)
    await quiet.subscribe("e.echo", cb=recorder("quiet-own"))
    await nc.subscribe("e.echo", cb=recorder("echo-other"))

    async def service(m: Any) -> None:
        await nc.publish(
            m.reply, m.data.upper(), headers={"Answered": "yes"} if m.headers else None
        )

    await nc.subscribe("svc.upper", cb=service)
    await nc.flush()
    await quiet.flush()
    for i in range(3):
        await nc.publish("d.x", f"x{i}".encode())
    await nc.publish("d.y.z", b"deep")
    await nc.publish("d.h", b"with headers", headers={"A": "1", "B": "two words"})
    await nc.publish("d.empty", b"")
    await nc.publish("d.big", b"b" * 60000)
    for _ in range(6):
        await nc.publish("d.q", b"job")
    await nc.flush()
    await quiet.publish("e.echo", b"not to myself")
    await quiet.flush()
    r1 = await nc.request("svc.upper", b"abc", timeout=5)
    r2 = await nc.request("svc.upper", b"hdr", timeout=5, headers={"X": "y"})
    try:
        await nc.request("svc.none", b"", timeout=5)
        no_responders = "answered"
    except nats.errors.NoRespondersError:
        no_responders = "no responders"
    await nc.flush()
    await quiet.flush()
    await quiet.drain()
    await nc.drain()
    return {
        "seen": seen,
        "queue_hits": len(queue_hits),
        "replies": [[r1.data, r1.headers], [r2.data, r2.headers]],
        "no_responders": no_responders,
        "errors": errors,
    }


async def run(url: str) -> dict[str, Any]:
    return await trio.to_thread.run_sync(lambda: asyncio.run(session(url)))  # type: ignore[arg-type]


async def test_a_nats_py_session_sees_the_same_on_nats_server_and_meshgate() -> None:
    with trio.fail_after(60):
        with run_nats() as port:
            reference = await run(f"nats://127.0.0.1:{port}")
        cfg = meshgate.GatewayConfig(listen="127.0.0.1:0", nats_listen="127.0.0.1:0")
        async with meshgate.open_gateway(cfg) as gw:
            ours = await run(gw.nats_urls[0].replace("tcp://", "nats://"))
    assert reference["seen"]["limited"] == [
        ["d.x", b"x0", None, False],
        ["d.x", b"x1", None, False],
    ]
    assert reference["queue_hits"] == 6
    for key in reference:
        if key == "seen":
            for name in reference["seen"]:
                assert ours["seen"].get(name) == reference["seen"][name], name
        assert ours[key] == reference[key], key
