"""The UDP fault proxy (``meshgate.testing.chaos.open_udp_fault_proxy``) in front of a
plain UDP echo: each fault does what it says, decisions are reproducible from the seed,
and the delay queue and the client table stay bounded.

Time is the autojump clock: a delay of 20 ms costs no wall-clock time, and "nothing more
arrives" is a receive that times out once every task is blocked (the proxy's delayed
datagrams are timers, so the clock only jumps past them when they have been sent)."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from meshgate.testing.chaos import UdpFaultProxy, UdpFaults, open_udp_fault_proxy

#: after the last expected arrival, how long "nothing more arrives" waits (virtual time)
QUIET = 1.0


async def _echo(sock: trio.socket.SocketType) -> None:
    while True:
        data, addr = await sock.recvfrom(65536)
        await sock.sendto(data, addr)


@asynccontextmanager
async def _echo_behind_proxy(**kwargs: object) -> AsyncIterator[UdpFaultProxy]:
    server = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    await server.bind(("127.0.0.1", 0))
    with server:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_echo, server)
            port = server.getsockname()[1]
            async with open_udp_fault_proxy(f"udp://127.0.0.1:{port}", **kwargs) as proxy:  # type: ignore[arg-type]
                yield proxy
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def _client(proxy: UdpFaultProxy) -> AsyncIterator[trio.socket.SocketType]:
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    await sock.bind(("127.0.0.1", 0))
    await sock.connect(proxy.address)
    with sock:
        yield sock


async def _collect(sock: trio.socket.SocketType) -> list[tuple[int, float]]:
    """Every datagram that arrives until nothing has for ``QUIET`` seconds: (number,
    arrival time)."""
    got: list[tuple[int, float]] = []
    while True:
        with trio.move_on_after(QUIET) as scope:
            data = await sock.recv(65536)
        if scope.cancelled_caught:
            return got
        got.append((int(data), trio.current_time()))


async def _round(proxy: UdpFaultProxy, count: int, *, spacing: float = 0.0) -> list[int]:
    """Send ``count`` numbered datagrams through the proxy to the echo (``spacing``
    seconds apart); the numbers that came back, in arrival order."""
    async with _client(proxy) as sock, trio.open_nursery() as nursery:
        results: list[list[tuple[int, float]]] = []

        async def collect() -> None:
            results.append(await _collect(sock))

        nursery.start_soon(collect)
        for n in range(count):
            await sock.send(str(n).encode())
            if spacing:
                await trio.sleep(spacing)
    return [n for n, _ in results[0]]


async def test_a_clean_proxy_forwards_everything_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with _echo_behind_proxy() as proxy:
        assert await _round(proxy, 100) == list(range(100))
        assert proxy.stats.up.forwarded == proxy.stats.down.forwarded == 100
        assert proxy.stats.clients == 1


async def test_drop_everything(autojump_clock: trio.testing.MockClock) -> None:
    async with _echo_behind_proxy(faults=UdpFaults(drop=1.0)) as proxy:
        assert await _round(proxy, 50) == []
        assert proxy.stats.up.dropped == 50
        assert proxy.stats.down.received == 0


async def test_a_seeded_drop_rate_is_reproducible(autojump_clock: trio.testing.MockClock) -> None:
    rounds = []
    for seed in (7, 7, 8):
        async with _echo_behind_proxy(faults=UdpFaults(drop=0.1), seed=seed) as proxy:
            got = await _round(proxy, 400)
            rounds.append(got)
            # each leg drops ~10 %, so ~19 % of round trips are lost
            assert 400 * 0.09 < 400 - len(got) < 400 * 0.30
            assert proxy.stats.up.dropped + proxy.stats.down.dropped == 400 - len(got)
    assert rounds[0] == rounds[1], "the same seed drops the same datagrams"
    assert rounds[0] != rounds[2], "another seed drops others"


async def test_delay_and_jitter(autojump_clock: trio.testing.MockClock) -> None:
    faults = UdpFaults(delay=0.020, jitter=0.005)
    async with _echo_behind_proxy(faults=faults) as proxy, _client(proxy) as sock:
        for n in range(30):
            sent = trio.current_time()
            await sock.send(str(n).encode())
            with trio.fail_after(1):
                assert int(await sock.recv(100)) == n
            rtt = trio.current_time() - sent
            # two legs, each 20 ms +- 5 ms
            assert 0.030 - 1e-9 <= rtt <= 0.050 + 1e-9


async def test_jitter_reorders_closely_spaced_datagrams(
    autojump_clock: trio.testing.MockClock,
) -> None:
    faults = UdpFaults(delay=0.020, jitter=0.010)
    async with _echo_behind_proxy(faults=faults, seed=3) as proxy:
        got = await _round(proxy, 100, spacing=0.001)
    assert sorted(got) == list(range(100)), "nothing lost, nothing doubled"
    assert got != list(range(100)), "but not in order"


async def test_reordering_holds_datagrams_back(autojump_clock: trio.testing.MockClock) -> None:
    faults = UdpFaults(reorder=0.2, reorder_by=0.05)
    async with _echo_behind_proxy(faults=faults, seed=1) as proxy:
        got = await _round(proxy, 200, spacing=0.001)
        held = proxy.stats.up.reordered + proxy.stats.down.reordered
    assert sorted(got) == list(range(200))
    late = sum(1 for i, n in enumerate(got) if n < max(got[:i], default=-1))
    assert 0 < late <= held


async def test_duplication_doubles(autojump_clock: trio.testing.MockClock) -> None:
    async with _echo_behind_proxy(faults=UdpFaults(duplicate=1.0)) as proxy:
        got = await _round(proxy, 20)
        # doubled on the way there, each copy doubled on the way back
        assert sorted(got) == sorted(list(range(20)) * 4)
        assert proxy.stats.up.duplicated == 20
        assert proxy.stats.down.duplicated == 40


async def test_a_blackout_window(autojump_clock: trio.testing.MockClock) -> None:
    async with _echo_behind_proxy() as proxy, _client(proxy) as sock:

        async def ping(n: int) -> bool:
            await sock.send(str(n).encode())
            with trio.move_on_after(0.1):
                return int(await sock.recv(100)) == n
            return False

        assert await ping(0)
        proxy.blackout(2.0)
        start = trio.current_time()
        answered = []
        for n in range(1, 31):  # a ping every 100 ms for 3 s
            await trio.sleep_until(start + (n - 1) * 0.1)
            answered.append((trio.current_time() - start, await ping(n)))
        n += 1
        dark = [ok for t, ok in answered if t < 2.0 - 0.1]
        light = [ok for t, ok in answered if t >= 2.0]
        assert dark
        assert not any(dark), "nothing passes during the blackout"
        assert light
        assert all(light), "everything passes after it"
        assert proxy.stats.up.blacked_out == len(dark) + (len(answered) - len(dark) - len(light))
        proxy.blackout()
        assert not await ping(n)
        proxy.heal()
        assert await ping(n + 1)


async def test_each_client_address_gets_its_own_upstream(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with _echo_behind_proxy() as proxy:
        async with _client(proxy) as a, _client(proxy) as b:
            await a.send(b"1")
            await b.send(b"2")
            with trio.fail_after(1):
                assert await a.recv(10) == b"1"
                assert await b.recv(10) == b"2"
        assert proxy.stats.clients == 2


async def test_the_client_table_is_bounded_and_idle_clients_expire(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        _echo_behind_proxy(max_clients=1, idle_timeout=5.0) as proxy,
        _client(proxy) as a,
        _client(proxy) as b,
    ):
        await a.send(b"1")
        with trio.fail_after(1):
            assert await a.recv(10) == b"1"
        await b.send(b"2")
        with trio.move_on_after(1):
            await b.recv(10)
            pytest.fail("a second client passed a table of one")
        assert proxy.stats.refused_clients == 1
        await trio.sleep(5.0)  # virtual: a's entry expires
        assert proxy.stats.expired_clients == 1
        await b.send(b"3")
        with trio.fail_after(1):
            assert await b.recv(10) == b"3"


async def test_the_delay_queue_is_bounded(autojump_clock: trio.testing.MockClock) -> None:
    async with _echo_behind_proxy(faults=UdpFaults(delay=0.2), max_queued=10) as proxy:
        got = await _round(proxy, 30)
        assert proxy.stats.up.overflowed == 20
        assert sorted(got) == list(range(10))
        assert proxy.queued == 0


async def test_the_target_may_be_given_as_an_address() -> None:
    with trio.fail_after(5):
        listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        listener.bind(("127.0.0.1", 0))
        with listener:
            async with open_udp_fault_proxy(listener.getsockname()) as proxy:
                assert proxy.target == listener.getsockname()
                assert proxy.url.startswith("udp://127.0.0.1:")
