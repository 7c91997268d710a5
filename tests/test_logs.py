"""Logs an operator can run on: a route flap and a reload can be followed in the INFO
lines; refused peers are WARNINGs, rate-limited; ``--log-format json`` writes one
JSON object per line and the ready line names every URL."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import attrs
import pytest
import trio

import meshgate

from ._nats import free_port


class Waiter(logging.Handler):
    """Wakes a trio.Event when a record whose message contains ``text`` is logged (the
    node logs from the trio thread, so the event can be set directly)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self._waits: list[tuple[Callable[[str], bool], trio.Event]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        text = record.getMessage()
        for match, event in self._waits:
            if match(text):
                event.set()

    async def wait_for(self, *parts: str, since: int = 0) -> str:
        """The first message from record ``since`` on (logged so far or from now on)
        containing every part."""

        def match(text: str) -> bool:
            return all(p in text for p in parts)

        def found() -> str | None:
            return next(
                (r.getMessage() for r in self.records[since:] if match(r.getMessage())), None
            )

        event = trio.Event()
        self._waits.append((match, event))
        while (text := found()) is None:
            await event.wait()
            event = trio.Event()
            self._waits.append((match, event))
        return text

    def lines(self, level: int = logging.INFO) -> list[str]:
        return [r.getMessage() for r in self.records if r.levelno >= level]


@contextmanager
def captured() -> Iterator[Waiter]:
    handler = Waiter()
    logger = logging.getLogger("meshgate")
    old = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)


def node(name: str, port: int, **kw: object) -> meshgate.GatewayConfig:
    return meshgate.GatewayConfig(
        name=name,
        cluster="C",
        listen="127.0.0.1:0",
        cluster_listen=f"127.0.0.1:{port}",
        reconnect_wait=0.05,
        **kw,  # type: ignore[arg-type]
    )


async def test_an_operator_can_follow_a_route_flap() -> None:
    """b1 keeps a route to its seed a0; a0 goes away and comes back on the same port: b1's
    INFO lines say the route went down and why, each failed dial with its backoff, and
    the route coming back up."""
    port = free_port()
    seed = f"127.0.0.1:{port}"
    with captured() as logs, trio.fail_after(30):
        async with meshgate.open_gateway(node("b1", 0, routes=(seed,))) as b1:
            async with meshgate.open_gateway(node("a0", port)):
                await b1.wait_routes(1)
                first_up = await logs.wait_for("route a0 (", "dialed) up")
            down = await logs.wait_for("route a0 (", "down:")
            failed = await logs.wait_for(
                f"route {seed}: dial failed", "next attempt in", since=len(logs.records)
            )
            assert b1.readiness()
            assert f"route {seed}" in b1.readiness()[0]
            mark = len(logs.records)
            async with meshgate.open_gateway(node("a0", port)):
                await b1.wait_routes(1)
                again = await logs.wait_for("route a0 (", "dialed) up", since=mark)
                assert b1.readiness() == []
    lines = logs.lines()
    b1_lines = [line for line in lines if line.startswith(("route a0", f"route {seed}"))]
    # in order: up, down (with the reason), failed dials (with the wait), up again
    assert b1_lines.index(first_up) < b1_lines.index(down)
    last_failed = len(b1_lines) - 1 - b1_lines[::-1].index(failed)
    assert b1_lines.index(down) < last_failed < b1_lines.index(again, last_failed), b1_lines
    assert "down: " in down
    assert down.split("down: ", 1)[1]  # a reason, not nothing
    # the listeners are logged at start, each with its URL
    assert any(line.startswith("cluster: listening on tcp://127.0.0.1:") for line in lines)


async def test_an_operator_can_follow_a_reload(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="meshgate")
    cfg = meshgate.GatewayConfig(name="r0", listen="127.0.0.1:0")
    with trio.fail_after(20):
        async with meshgate.open_gateway(cfg) as gw:
            caplog.clear()
            restart = gw.reconfigure(attrs.evolve(cfg, max_payload=2048, name="r1"))
            assert restart == ["name"]
            gw.reconfigure(gw.config)
            lines = list(caplog.messages)
            warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert lines == [
        "configuration reloaded; applied: max_payload (1048576 -> 2048)",
        "configuration reloaded; these need a restart and were not applied: name",
        "configuration reloaded; nothing changed",
    ]
    assert warnings == ["configuration reloaded; these need a restart and were not applied: name"]


def test_a_changed_secret_is_named_not_shown() -> None:
    from meshgate import GatewayConfig

    a = GatewayConfig(cluster_listen="127.0.0.1:0", cluster_secret="s" * 20)
    b = attrs.evolve(a, cluster_secret="t" * 20, max_resyncs=5)
    from meshgate import Gateway

    gw = Gateway(a)
    with captured() as logs:
        gw.reconfigure(b)
    text = "\n".join(logs.lines())
    assert "not applied: cluster_secret" in text
    assert "max_resyncs (3 -> 5)" in text
    assert "ssss" not in text
    assert "tttt" not in text


async def test_refused_peers_are_warnings_at_most_one_per_address_per_interval() -> None:
    cfg = meshgate.GatewayConfig(name="p0", listen="127.0.0.1:0", cluster_listen="127.0.0.1:0")
    with captured() as logs, trio.fail_after(20):
        async with meshgate.open_gateway(cfg) as gw:
            assert gw.cluster_url
            _, _, port = gw.cluster_url.rpartition(":")
            for _ in range(3):  # not a route peer: refused three times
                stream = await trio.open_tcp_stream("127.0.0.1", int(port))
                async with stream:
                    await stream.send_all(b"GET / HTTP/1.1\r\n\r\n" * 10)
                    while await stream.receive_some(4096):
                        pass
    warnings = [line for line in logs.lines(logging.WARNING) if "refused" in line]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("route peer 127.0.0.1:")


def test_the_limiter_holds_back_and_counts() -> None:
    from meshgate.logs import LogLimiter

    limit = LogLimiter(interval=10.0, max_keys=2)
    assert limit.allow("a", 0.0) == 0
    assert limit.allow("a", 1.0) is None
    assert limit.allow("a", 2.0) is None
    assert limit.allow("a", 10.5) == 2  # two held back since the last line
    assert limit.allow("b", 11.0) == 0
    assert limit.allow("c", 11.0) == 0  # bounded: "a" (seen longest ago) is forgotten
    assert limit.allow("a", 12.0) == 0


async def test_serve_logs_json_and_its_ready_line_names_every_url(tmp_path: Path) -> None:
    monitor = free_port()
    cfg = tmp_path / "node.toml"
    cfg.write_text(
        'name = "j1"\nlisten = "127.0.0.1:0"\ncluster_listen = "127.0.0.1:0"\n'
        'gateway_listen = "127.0.0.1:0"\nnats_listen = "127.0.0.1:0"\n'
        f'monitor_listen = "127.0.0.1:{monitor}"\n'
    )
    with trio.fail_after(30):
        proc = await trio.lowlevel.open_process(
            [sys.executable, "-m", "meshgate", "serve", "-c", str(cfg), "--log-format", "json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            assert proc.stdout is not None
            assert proc.stderr is not None
            buf = b""
            while b"\n" not in buf:
                buf += await proc.stdout.receive_some(4096)
            ready = json.loads(buf.split(b"\n")[0])
            proc.send_signal(signal.SIGTERM)
            assert await proc.wait() == 0
            err = b""
            while chunk := await proc.stderr.receive_some(65536):
                err += chunk
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    for key in ("client_url", "cluster_url", "gateway_url", "monitor_url"):
        assert ready[key], key
    assert ready["monitor_url"] == f"http://127.0.0.1:{monitor}"
    assert ready["nats_urls"]
    records = [json.loads(line) for line in err.decode().splitlines()]
    assert all({"time", "level", "logger", "msg"} <= set(r) for r in records)
    msgs = [r["msg"] for r in records]
    ready_log = next(m for m in msgs if m.startswith("ready: "))
    for url in (ready["client_url"], ready["cluster_url"], ready["gateway_url"]):
        assert url in ready_log
    assert ready["monitor_url"] in ready_log
    assert ready["nats_urls"][0] in ready_log
    assert any(m.startswith("lame duck: ") for m in msgs)
