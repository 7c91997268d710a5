"""``meshgate demo``: what meshgate does today, end to end, in under a minute.

Part 1 — a gateway node on loopback TCP with a few hundred simulated game
clients.  Each client flies a ship over a grid of cells, publishes its state
on its cell's subject and subscribes to the 3x3 cells around it, moving its
area of interest as it crosses cells.  Delivery latency is measured from the
publisher's timestamp to the subscriber's receipt.

Part 2 — interest propagation between two clusters on the sans-IO core:
optimistic mode, no-interest notices, then the switch to interest-only, with
every frame really encoded and decoded.
"""

from __future__ import annotations

import random
import statistics
import struct
import time

import trio

from ._gateway import open_gateway
from .client import Client, Subscription, connect
from .config import GatewayConfig
from .interest import InboundInterest, InterestGraph, OutboundInterest
from .protocol import Decoder, Encoder, GatewayMessage, Opcode, to_frame

_GRID = 12
_STAMP = struct.Struct("!dI")


def _cell_pattern(x: int, y: int) -> str:
    return f"world.cell.{x % _GRID}.{y % _GRID}.>"


class _Ship:
    def __init__(self, sid: int, rng: random.Random) -> None:
        self.id = sid
        self.x = rng.uniform(0, _GRID)
        self.y = rng.uniform(0, _GRID)
        self.vx = rng.uniform(-1.5, 1.5)
        self.vy = rng.uniform(-1.5, 1.5)

    @property
    def cell(self) -> tuple[int, int]:
        return int(self.x) % _GRID, int(self.y) % _GRID

    def step(self, dt: float) -> None:
        self.x = (self.x + self.vx * dt) % _GRID
        self.y = (self.y + self.vy * dt) % _GRID


async def _fly(
    client: Client,
    ship: _Ship,
    duration: float,
    rate: float,
    lat: list[float],
    counts: dict[str, int],
) -> None:
    """One game client: publish state at ``rate`` Hz; keep a 3x3 area of interest."""
    subs: dict[str, Subscription] = {}

    async def area(cx: int, cy: int) -> None:
        want = {_cell_pattern(cx + dx, cy + dy) for dx in (-1, 0, 1) for dy in (-1, 0, 1)}
        for p in list(subs):
            if p not in want:
                await subs.pop(p).unsubscribe()
                counts["unsubscribes"] += 1
        for p in want - subs.keys():
            subs[p] = await client._subscribe(p, None, 4096)
            counts["subscribes"] += 1

    async def receive_all(sub: Subscription) -> None:
        async for m in sub:
            sent_at, _ = _STAMP.unpack_from(m.payload)
            lat.append(time.perf_counter() - sent_at)

    cell = ship.cell
    await area(*cell)
    async with trio.open_nursery() as nursery:
        started: set[str] = set()
        for p, s in subs.items():
            nursery.start_soon(receive_all, s)
            started.add(p)
        end = trio.current_time() + duration
        period = 1 / rate
        while trio.current_time() < end:
            ship.step(period)
            if ship.cell != cell:
                cell = ship.cell
                await area(*cell)
                for p, s in subs.items():
                    if p not in started:
                        nursery.start_soon(receive_all, s)
                        started.add(p)
            x, y = cell
            payload = _STAMP.pack(time.perf_counter(), ship.id) + b"\0" * 40
            await client.publish(f"world.cell.{x}.{y}.ship.{ship.id}", payload)
            counts["published"] += 1
            await trio.sleep(period)
        await client.flush()
        nursery.cancel_scope.cancel()


async def _part1(clients: int, duration: float, rate: float, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    lat: list[float] = []
    counts = {"published": 0, "subscribes": 0, "unsubscribes": 0}
    config = GatewayConfig(name="demo-1", cluster="demo", listen="127.0.0.1:0")
    async with open_gateway(config) as gw:
        assert gw.client_url is not None
        url = gw.client_url
        print(f"  gateway node listening on {url}; connecting {clients} clients ...", flush=True)
        t0 = time.perf_counter()

        async def one(i: int) -> None:
            async with connect(url, name=f"ship-{i}") as client:
                await _fly(client, _Ship(i, rng), duration, rate, lat, counts)

        async with trio.open_nursery() as outer:

            async def progress() -> None:
                while True:
                    await trio.sleep(1)
                    st = gw.statistics()
                    print(
                        f"  t={time.perf_counter() - t0:4.1f}s  clients={st.clients:4d}  "
                        f"subs={st.subscriptions:5d}  in={st.messages_in:7d}  "
                        f"out={st.messages_out:8d}",
                        flush=True,
                    )

            outer.start_soon(progress)
            async with trio.open_nursery() as fleet:
                for i in range(clients):
                    fleet.start_soon(one, i)
            outer.cancel_scope.cancel()
        st = gw.statistics()
    lat.sort()
    p50 = statistics.median(lat) * 1000 if lat else float("nan")
    p99 = lat[int(len(lat) * 0.99) - 1] * 1000 if lat else float("nan")
    return [
        ("game clients (loopback TCP)", f"{clients}"),
        ("updates published", f"{st.messages_in}"),
        ("deliveries (interest-matched)", f"{st.messages_out}"),
        ("area-of-interest changes", f"+{counts['subscribes']} / -{counts['unsubscribes']} subs"),
        ("delivery latency p50 / p99", f"{p50:.2f} ms / {p99:.2f} ms"),
        ("bytes in / out", f"{st.bytes_in:,} / {st.bytes_out:,}"),
        ("slow consumers / dropped", f"{st.slow_consumers} / {st.dropped_messages}"),
        ("protocol errors", f"{st.protocol_errors}"),
    ]


def _part2(clients: int, messages: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    cells = 40
    b_interest: InterestGraph[int] = InterestGraph()
    inbound = InboundInterest(b_interest, threshold=100)
    outbound = OutboundInterest()
    enc = Encoder()
    to_a = Decoder()  # interest frames B -> A
    to_b = Decoder()  # messages A -> B
    wanted_cells = set()
    for cid in range(clients):
        cell = rng.randrange(cells // 4)  # clients crowd into a quarter of the world
        wanted_cells.add(cell)
        b_interest.add("$G", f"world.cell.{cell}.>", cid)
    sent = avoided = delivered = interest_frames = 0
    for i in range(messages):
        subject = f"world.cell.{rng.randrange(cells)}.ship.{rng.randrange(500)}"
        if not outbound.should_forward("$G", subject):
            avoided += 1
            continue
        sent += 1
        to_b.feed(enc.encode(GatewayMessage(None, "$G", subject, None, i.to_bytes(4, "big"))))
        while (raw := to_b.next_raw()) is not None:
            assert raw[0] == Opcode.GMSG
            m = b_interest.match(raw[2], raw[3])
            if m is not None and m.plain:
                delivered += len(m.plain)
            else:
                for frame in inbound.on_unwanted(raw[2], raw[3]):
                    interest_frames += 1
                    to_a.feed(enc.encode(frame))
        while (raw := to_a.next_raw()) is not None:
            outbound.receive(to_frame(raw))
    return [
        ("subscribers in cluster B", f"{clients} over {len(wanted_cells)} of {cells} cells"),
        ("messages published in cluster A", f"{messages}"),
        ("crossed the gateway", f"{sent}"),
        ("avoided by interest", f"{avoided} ({100 * avoided / max(messages, 1):.1f} %)"),
        ("deliveries in cluster B", f"{delivered}"),
        ("interest frames B -> A", f"{interest_frames}"),
        ("account mode at the end", outbound.mode("$G").value),
    ]


def _table(title: str, rows: list[tuple[str, str]]) -> None:
    w = max(len(r[0]) for r in rows)
    print(f"\n{title}")
    print("-" * (w + 40))
    for k, v in rows:
        print(f"{k:<{w}}  {v}")


def run_demo(*, clients: int, duration: float, rate: float, messages: int, seed: int) -> int:
    """Run both parts and print their summary tables; returns the exit status."""
    print("meshgate demo — part 1: one gateway node, game clients over loopback TCP")
    rows1 = trio.run(_part1, clients, duration, rate, seed)
    print("\nmeshgate demo — part 2: interest propagation between two clusters (sans-IO core)")
    rows2 = _part2(clients, messages, seed)
    _table("Part 1: gateway node", rows1)
    _table("Part 2: optimistic -> interest-only between clusters", rows2)
    return 0
