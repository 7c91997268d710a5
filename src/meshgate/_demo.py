"""``meshgate demo``: a local super-cluster of node processes and hundreds of game clients.

Clusters of nodes run as separate ``meshgate serve`` processes on loopback TCP, formed
from minimal configuration (one route seed per node, one gateway URL per cluster).
Simulated game clients connect to every node, fly ships over a grid of cells, publish
their state on their cell's subject and keep a 3x3 area of interest that moves with
them.  A ship's state is a game's replicated record (:class:`ShipState`, 28 bytes:
id, quantised position and move, heading, hit points, shield, input sequence, hull,
flags), published keyed by the ship; the nodes send it to players as deltas against
what each player acknowledged (``keyed_deltas``).  The demo prints live progress, then a table: nodes and connections of each kind
beside the formulas, messages routed, cross-cluster copies avoided by interest,
delivery latency, coalesced and slow-consumer events.  Child processes die with the
demo, even when it is interrupted.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import secrets
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import trio

from ._reserved import CONF_PREFIX, CORR_PREFIX, PROV_PREFIX
from ._shipstate import POSITION_SCALE, ShipState
from .client import Client, ConnectionClosedError, Subscription, connect
from .replicant import InMemoryReplicant, connect_replicant
from .spatial import Grid
from .topology import fetch_json

_STAMP = struct.Struct("!dI")
#: every game client's bandwidth budget, bytes per second (docs/scheduling.md)
_CLIENT_BANDWIDTH = 32_000
#: the replicant credential of this demo run (the region replicants are remote adapters)
_REPLICANT_TOKEN = secrets.token_urlsafe(24)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Linux: the kernel kills this child if the demo process dies, however it dies."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class _Node:
    def __init__(self, name: str, cluster: str, proc: subprocess.Popen[bytes]) -> None:
        self.name = name
        self.cluster = cluster
        self.proc = proc
        self.client_url = ""
        self.monitor_url = ""


def find_nats_server() -> str | None:
    """The nats-server binary, if installed."""
    for candidate in (shutil.which("nats-server"), "/usr/sbin/nats-server", "/usr/bin/nats-server"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def _start_nats_backbone(
    binary: str, names: list[str], workdir: Path, started: list[subprocess.Popen[bytes]]
) -> dict[str, int]:
    """One nats-server per cluster, joined by gateways; their leafnode ports."""
    gw = {c: _free_port() for c in names}
    leaf = {c: _free_port() for c in names}
    for c in names:
        remotes = ", ".join(
            f"{{name: {o}, url: nats://127.0.0.1:{gw[o]}}}" for o in names if o != c
        )
        conf = workdir / f"nats-{c}.conf"
        conf.write_text(
            # leaf nodes beside gateways need a system account; leaf nodes and anonymous
            # clients land in APP
            "accounts { SYS: { users: [{user: sys, password: "
            f'"{secrets.token_hex(8)}"}}] }}, APP: {{ users: [{{user: app, password: '
            f'"{secrets.token_hex(8)}"}}] }} }}\n'
            "system_account: SYS\nno_auth_user: app\n"
            f"server_name: hub-{c}\nlisten: 127.0.0.1:{_free_port()}\n"
            + (
                f"gateway {{ name: {c}, listen: 127.0.0.1:{gw[c]}, gateways: [{remotes}] }}\n"
                if len(names) > 1
                else ""
            )
            + f"leafnodes {{ listen: 127.0.0.1:{leaf[c]} }}\n"
        )
        proc = subprocess.Popen(
            [binary, "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
        started.append(proc)
        print(f"  nats-server hub-{c} (cluster {c}) pid {proc.pid}, leaf nodes at :{leaf[c]}")
    return leaf


@contextlib.asynccontextmanager
async def _super_cluster(
    clusters: int, nodes: int, workdir: Path, *, backbone: str | None = None
) -> AsyncIterator[list[_Node]]:
    names = [chr(ord("A") + i) for i in range(clusters)]
    ports = {
        f"{c.lower()}{i}": (_free_port(), _free_port(), _free_port(), _free_port())
        for c in names
        for i in range(nodes)
    }
    started: list[_Node] = []
    hubs: list[subprocess.Popen[bytes]] = []
    leaf: dict[str, int] = {}
    try:
        if backbone is not None:
            leaf = _start_nats_backbone(backbone, names, workdir, hubs)
        for ci, c in enumerate(names):
            for i in range(nodes):
                name = f"{c.lower()}{i}"
                client, route, gw, mon = ports[name]
                lines = [
                    f'name = "{name}"',
                    f'cluster = "{c}"',
                    f'listen = "127.0.0.1:{client}"',
                    f'monitor_listen = "127.0.0.1:{mon}"',
                    "reconnect_wait = 0.2",
                    "interest_only_threshold = 200",
                    'slow_consumer_policy = "coalesce"',
                    f"client_bandwidth = {_CLIENT_BANDWIDTH}",
                    "keyed_deltas = true",
                    "replicants = true",
                    f'replicant_token = "{_REPLICANT_TOKEN}"',
                    'speculative = ["world.>"]',
                    'interest_prefix = "world."',
                ]
                if backbone is not None:  # the nats-server of its cluster carries it
                    lines.append(f'backbone = ["nats://127.0.0.1:{leaf[c]}"]')
                else:
                    lines.append(f'cluster_listen = "127.0.0.1:{route}"')
                    lines.append(f'gateway_listen = "127.0.0.1:{gw}"')
                if i and backbone is None:
                    lines.append(f'routes = ["tcp://127.0.0.1:{ports[c.lower() + "0"][1]}"]')
                if ci and not i and backbone is None:
                    first = ports[names[0].lower() + "0"][2]
                    lines.append(f'[gateways]\n{names[0]} = ["tcp://127.0.0.1:{first}"]')
                conf = workdir / f"{name}.toml"
                conf.write_text("\n".join(lines) + "\n")
                # Popen from the main thread: the parent-death signal is tied to the thread
                # that forks, and trio's process helpers fork from short-lived worker threads
                proc = subprocess.Popen(  # noqa: ASYNC220 - see above; returns at once
                    [sys.executable, "-m", "meshgate", "serve", "-c", str(conf)],
                    stdout=subprocess.PIPE,
                    preexec_fn=_die_with_parent if sys.platform == "linux" else None,
                )
                started.append(_Node(name, c, proc))
                assert proc.stdout is not None
                with trio.fail_after(20):
                    line = await trio.to_thread.run_sync(
                        proc.stdout.readline, abandon_on_cancel=True
                    )
                if not line:
                    raise RuntimeError(f"node {name} failed to start")
                ready = json.loads(line)
                started[-1].client_url = ready["client_url"]
                started[-1].monitor_url = f"http://127.0.0.1:{mon}"
                print(
                    f"  node {name} (cluster {c}) pid {proc.pid} at {ready['client_url']}"
                    f" ({ready.get('core', '?')} core)"
                )
        yield started
    finally:
        for n in started:
            with contextlib.suppress(ProcessLookupError):
                n.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        for n in started:
            try:
                n.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                n.proc.kill()
                n.proc.wait()
            if n.proc.stdout is not None:
                n.proc.stdout.close()
        for hub in hubs:
            hub.terminate()
            try:
                hub.wait(5)
            except subprocess.TimeoutExpired:
                hub.kill()
                hub.wait()


async def _wait_formed(
    nodes: list[_Node], clusters: int, per_cluster: int, *, backbone: bool = False
) -> dict[str, Any]:
    with trio.fail_after(30):
        while True:
            varz = {n.name: await fetch_json(n.monitor_url, "/varz") for n in nodes}
            if backbone:
                if all(v["leafnodes"] == 1 for v in varz.values()):
                    return varz
                await trio.sleep(0.2)
                continue
            done = all(
                v["routes"] == per_cluster - 1 and v["outbound_gateways"] == clusters - 1
                for v in varz.values()
            ) and sum(v["inbound_gateways"] for v in varz.values()) == len(nodes) * (clusters - 1)
            if done:
                return varz
            await trio.sleep(0.2)


_GRID = 24


class _Ship:
    def __init__(self, sid: int, rng: random.Random, region: int, regions: int) -> None:
        self.id = sid
        # players of one cluster fly in one band of the world (clusters serve regions),
        # drifting slowly, so most updates interest only their own cluster
        band = _GRID / regions
        self.x = rng.uniform(region * band, (region + 1) * band)
        self.y = rng.uniform(0, _GRID)
        self.vx = rng.uniform(-0.3, 0.3)
        self.vy = rng.uniform(-1.0, 1.0)

    def cell(self) -> tuple[int, int]:
        return int(self.x) % _GRID, int(self.y) % _GRID

    def step(self, dt: float) -> None:
        self.x = (self.x + self.vx * dt) % _GRID
        self.y = (self.y + self.vy * dt) % _GRID


class _Stats:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.published = 0
        self.received = 0
        self.aoi_changes = 0
        self.connected = 0
        self.disconnects = 0
        self.disconnect_reasons: Counter[str] = Counter()
        self.provisional = 0
        self.confirms = 0
        self.corrections = 0
        self.state_updates = 0
        self.handovers = 0
        self.inputs_applied = 0
        self.published_states = 0
        self.skipped_states = 0


#: an input's move (dx, dy), after its stamp; a ship's state is a ShipState record
_MOVE = struct.Struct("!dd")
_SPEED_LIMIT = 1.1  # world units per move


def _ship_state(ship: int, x: float, y: float) -> bytes:
    """A ship's first state: at (x, y), full hit points and shield."""
    span = _GRID * POSITION_SCALE  # quantised and wrapped, as the owner keeps it
    qx, qy = (round(v * POSITION_SCALE) % span / POSITION_SCALE for v in (x, y))
    return ShipState(ship, qx, qy, kind=ship % 4).pack()


def _apply_move(state: bytes, data: bytes) -> bytes:
    """The authoritative rule (:meth:`ShipState.moved`): a move is clamped to the speed
    limit; the world wraps; the record gets the move, its heading, one more input
    applied, and whether the move was corrected."""
    s = ShipState.unpack(state) if state else ShipState(0, 0.0, 0.0)
    dx, dy = _MOVE.unpack_from(data, _STAMP.size)
    return s.moved(dx, dy, _SPEED_LIMIT, _GRID).pack()


def _validate_move(state: bytes, data: bytes) -> bytes | None:
    """None if the client's predicted move stands; else the corrected state."""
    dx, dy = _MOVE.unpack_from(data, _STAMP.size)
    if abs(dx) <= _SPEED_LIMIT and abs(dy) <= _SPEED_LIMIT:
        return None
    return _apply_move(state, data)


def _locate(entity: str, state: bytes) -> tuple[float, float]:
    if not state:
        return 0.0, 0.0
    s = ShipState.unpack(state)
    return s.x, s.y


async def _fly(
    client: Client, ship: _Ship, end: float, rate: float, stats: _Stats, stagger: float
) -> None:
    """A pilot: predicts its ship's moves, sends them as speculative inputs (relayed at
    once to nearby players, validated by the region's replicant), keeps a 3x3 area of
    interest around the predicted position."""
    subs: dict[str, Subscription] = {}

    async def area(cx: int, cy: int, nursery: trio.Nursery) -> None:
        want = {
            f"world.{(cx + dx) % _GRID}.{(cy + dy) % _GRID}.>"
            for dx in (-1, 0, 1)
            for dy in (-1, 0, 1)
        }
        for p in list(subs):
            if p not in want:
                await subs.pop(p).unsubscribe()
                stats.aoi_changes += 1
        for p in sorted(want - subs.keys()):
            sub = subs[p] = await client.add_subscription(p, max_buffered=1024)
            nursery.start_soon(receive, sub)
            stats.aoi_changes += 1

    async def receive(sub: Subscription) -> None:
        async for m in sub:
            reply = m.reply or ""
            if reply.startswith(PROV_PREFIX):
                sent_at, _ = _STAMP.unpack_from(m.payload)
                stats.latencies.append(time.perf_counter() - sent_at)
                stats.provisional += 1
                stats.received += 1
            elif reply.startswith(CONF_PREFIX):
                stats.confirms += 1
            elif reply.startswith(CORR_PREFIX):
                stats.corrections += 1
            else:
                stats.state_updates += 1

    async def own_answers() -> None:
        while True:
            answer = await client.receive_correction()
            if answer.reply and answer.reply.startswith(CORR_PREFIX):
                # the owner corrected our prediction: snap to the authoritative position
                s = ShipState.unpack(answer.payload)
                ship.x, ship.y = s.x, s.y

    entity = f"ship{ship.id}"
    async with trio.open_nursery() as nursery:
        nursery.start_soon(own_answers)
        cell = ship.cell()
        await area(*cell, nursery)
        await trio.sleep(stagger)
        period = 1 / rate
        seq = 0
        rng = random.Random(ship.id)
        while trio.current_time() < end:
            # now and then the client predicts an illegal jump; the owner corrects it
            jump = 3.0 / period if rng.random() < 0.05 else 1.0
            dx, dy = ship.vx * period, ship.vy * period * jump
            ship.x, ship.y = (ship.x + dx) % _GRID, (ship.y + dy) % _GRID
            if ship.cell() != cell:
                cell = ship.cell()
                await area(*cell, nursery)
            data = _STAMP.pack(time.perf_counter(), ship.id) + _MOVE.pack(dx, dy)
            x, y = cell
            await client.send_input(entity, seq, data, relay=f"world.{x}.{y}.{entity}")
            seq += 1
            stats.published += 1
            await trio.sleep(period)
        await client.flush()
        nursery.cancel_scope.cancel()


async def _replicants_session(
    regions: dict[str, InMemoryReplicant],
    link_of: dict[str, Any],
    ships: dict[int, _Ship],
    fleet: list[_Node],
    names: list[str],
    band: float,
    clients: int,
    duration: float,
    rate: float,
    rng: random.Random,
    stats: _Stats,
) -> None:
    """Run the region replicants and fly the ships until the duration is over."""

    def region_of(x: float) -> str:
        return names[int(x // band) % len(names)]

    async with trio.open_nursery() as replicants:
        for c in names:
            replicants.start_soon(regions[c].run, link_of[c])
            await regions[c].wait_ready()
        for i, ship in ships.items():
            await regions[region_of(ship.x)].own(f"ship{i}", 1, _ship_state(i, ship.x, ship.y))
        print(f"  {len(names)} region replicants own {clients} ships; flying ...")
        end = trio.current_time() + duration

        async def one(i: int) -> None:
            node = fleet[i % len(fleet)]
            try:
                async with connect(node.client_url, name=f"ship-{i}") as client:
                    stats.connected += 1
                    try:
                        stagger = rng.uniform(0, 1 / rate)
                        await _fly(client, ships[i], end, rate, stats, stagger)
                    finally:
                        stats.connected -= 1
            except* ConnectionClosedError as group:
                stats.disconnects += 1
                stats.disconnect_reasons[str(group.exceptions[0])] += 1

        async def borders() -> None:
            """Ships that fly into another region are handed over to its replicant."""
            while True:
                await trio.sleep(0.3)
                for c, owner in regions.items():
                    for entity in list(owner.epochs):
                        target = region_of(_locate(entity, owner.states[entity])[0])
                        if target != c:
                            await owner.hand_over(entity, regions[target])
                            stats.handovers += 1

        async with trio.open_nursery() as outer:

            async def progress() -> None:
                start = time.perf_counter()
                while True:
                    await trio.sleep(2)
                    lat = sorted(stats.latencies[-5000:])
                    p50 = lat[len(lat) // 2] * 1000 if lat else float("nan")
                    print(
                        f"  t={time.perf_counter() - start:5.1f}s  "
                        f"clients={stats.connected:4d}  inputs={stats.published:7d}  "
                        f"relayed={stats.provisional:8d}  hand-overs={stats.handovers:4d}"
                        f"  p50={p50:6.2f} ms",
                        flush=True,
                    )

            outer.start_soon(progress)
            outer.start_soon(borders)
            async with trio.open_nursery() as fleet_tasks:
                for i in range(clients):
                    fleet_tasks.start_soon(one, i)
            outer.cancel_scope.cancel()
        stats.inputs_applied = sum(len(log) for r in regions.values() for log in r.log.values())
        stats.published_states = sum(r.published for r in regions.values())
        stats.skipped_states = sum(r.skipped for r in regions.values())
        replicants.cancel_scope.cancel()


async def _main(
    clusters: int,
    nodes: int,
    clients: int,
    duration: float,
    rate: float,
    seed: int,
    backbone: str | None = None,
    dashboard: bool = False,
) -> int:
    rng = random.Random(seed)
    stats = _Stats()
    with tempfile.TemporaryDirectory(prefix="meshgate-demo-") as tmp:
        print(
            f"meshgate demo: {clusters} clusters x {nodes} nodes as separate processes, "
            f"{clients} game clients, {duration:.0f} s"
        )
        async with _super_cluster(clusters, nodes, Path(tmp), backbone=backbone) as fleet:
            t0 = time.perf_counter()
            varz0 = await _wait_formed(fleet, clusters, nodes, backbone=backbone is not None)
            how = "attached to the nats-server backbone" if backbone else "formed"
            print(f"  super-cluster {how} in {time.perf_counter() - t0:.1f} s from minimal config")
            if dashboard:
                _open_dashboard(fleet[0].monitor_url)
            names = sorted({n.cluster for n in fleet})
            band = _GRID / len(names)
            ships = {
                i: _Ship(i, rng, names.index(fleet[i % len(fleet)].cluster), len(names))
                for i in range(clients)
            }
            grid = Grid(1.0, prefix="world")
            regions = {
                c: InMemoryReplicant(
                    f"region-{c}", grid, apply=_apply_move, validate=_validate_move, locate=_locate
                )
                for c in names
            }

            async with AsyncExitStack() as links:
                # each region's replicant is a remote adapter over TCP to its cluster
                link_of = {}
                for c in names:
                    node = next(n for n in fleet if n.cluster == c)
                    link_of[c] = await links.enter_async_context(
                        connect_replicant(node.client_url, f"region-{c}", token=_REPLICANT_TOKEN)
                    )
                await _replicants_session(
                    regions, link_of, ships, fleet, names, band, clients, duration, rate, rng, stats
                )
            varz = {n.name: await fetch_json(n.monitor_url, "/varz") for n in fleet}
            gatewayz = {n.name: await fetch_json(n.monitor_url, "/gatewayz") for n in fleet}
            report = (clusters, nodes, clients, stats, varz0, varz, gatewayz)
            if dashboard:  # the nodes stay up for the dashboard until interrupted
                _report(*report, backbone=backbone is not None)
                print(f"\ndashboard stays at {fleet[0].monitor_url}/ - Ctrl-C stops", flush=True)
                await trio.sleep_forever()
    _report(*report, backbone=backbone is not None)
    return 0


def _open_dashboard(url: str) -> None:
    """Print the dashboard's URL; open it in a browser where there is a display."""
    print(f"  dashboard: {url}/", flush=True)
    if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or sys.platform != "linux":
        import webbrowser

        with contextlib.suppress(Exception):
            webbrowser.open(url + "/")


def _report(
    m: int,
    n: int,
    clients: int,
    stats: _Stats,
    varz0: dict[str, Any],
    varz: dict[str, Any],
    gatewayz: dict[str, Any],
    *,
    backbone: bool = False,
) -> None:
    routes = sum(v["routes"] for v in varz0.values()) // 2
    outbound = sum(v["outbound_gateways"] for v in varz0.values())
    inbound = sum(v["inbound_gateways"] for v in varz0.values())
    gw_sent = sum(
        g["connection"]["out_msgs"]
        for z in gatewayz.values()
        for g in z["outbound_gateways"].values()
    ) - sum(v["gateway_control_msgs"] for v in varz.values())
    # world traffic: provisional relays and state updates, one copy per remote cluster
    potential = (stats.published + stats.published_states) * (m - 1)
    modes = sorted(
        {
            a["interest_mode"]
            for z in gatewayz.values()
            for g in z["outbound_gateways"].values()
            for a in g["accounts"]
        }
    )
    lat = sorted(stats.latencies)
    p50 = statistics.median(lat) * 1000 if lat else float("nan")
    p99 = lat[max(0, int(len(lat) * 0.99) - 1)] * 1000 if lat else float("nan")
    mesh_rows = [
        ("route connections", f"{routes}", f"M*N(N-1)/2 = {m * n * (n - 1) // 2}"),
        ("outbound gateway connections", f"{outbound}", f"M*N*(M-1) = {m * n * (m - 1)}"),
        ("inbound gateway connections", f"{inbound}", "= outbound"),
    ]
    if backbone:
        leafs = sum(v["leafnodes"] for v in varz0.values())
        mesh_rows = [
            ("backbone", f"{m} nats-server clusters", "joined by nats-server gateways"),
            ("leaf node connections", f"{leafs}", f"one per node = {m * n}"),
        ]
        potential = gw_sent = 0  # the backbone's gateways are nats-server's to count
    rows = [
        ("clusters x nodes (M x N)", f"{m} x {n}", ""),
        *mesh_rows,
        ("game client connections", f"{clients}", ""),
        ("region replicants", f"{m}", "remote adapters over TCP, one per cluster"),
        ("inputs sent (speculative moves)", f"{stats.published}", ""),
        ("inputs applied by owners", f"{stats.inputs_applied}", "in order, none lost or twice"),
        ("hand-overs at region borders", f"{stats.handovers}", ""),
        ("provisional relays received", f"{stats.received}", "interest-matched, at once"),
        (
            "owner answers received",
            f"{stats.confirms} / {stats.corrections}",
            "confirms / corrections",
        ),
        (
            "state updates published / skipped",
            f"{stats.published_states} / {stats.skipped_states}",
            "skipped: nobody watching the cell",
        ),
        ("messages routed by all nodes", f"{sum(v['out_msgs'] for v in varz.values())}", ""),
        *(
            []
            if backbone
            else [
                (
                    "cross-cluster world copies sent",
                    f"{gw_sent}",
                    f"without interest: {potential}",
                ),
                (
                    "cross-cluster copies avoided",
                    f"{max(0, potential - gw_sent)}",
                    f"{100 * max(0, potential - gw_sent) / potential:.1f} %" if potential else "",
                ),
                ("gateway interest modes", ", ".join(modes) or "-", ""),
            ]
        ),
        ("relay latency p50 / p99", f"{p50:.2f} ms / {p99:.2f} ms", "input to other players"),
        ("coalesced (keyed state)", f"{sum(v['coalesced_msgs'] for v in varz.values())}", ""),
        *_scheduler_rows(varz),
        *_delta_rows(varz),
        ("slow-consumer events", f"{sum(v['slow_consumers'] for v in varz.values())}", ""),
        ("protocol errors", f"{sum(v['protocol_errors'] for v in varz.values())}", ""),
        ("area-of-interest changes", f"{stats.aoi_changes}", "subscribe + unsubscribe"),
        (
            "clients disconnected early",
            f"{stats.disconnects}",
            "; ".join(f"{n}x {r}" for r, n in stats.disconnect_reasons.most_common(2)),
        ),
    ]
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    print("\nSummary")
    print("-" * (w0 + w1 + 36))
    for a, b, c in rows:
        print(f"{a:<{w0}}  {b:>{w1}}  {c}")


def _scheduler_rows(varz: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The per-client scheduler's figures over all nodes (docs/scheduling.md)."""
    sc = [v["scheduler"] for v in varz.values() if "scheduler" in v]
    total = {k: sum(s[k] for s in sc) for k in sc[0]} if sc else {}
    sent = total.get("keyed_bytes", 0) + total.get("reliable_bytes", 0)
    if not sent:
        return []
    share = 100 * total["keyed_bytes"] / sent
    return [
        ("client bandwidth budget", f"{_CLIENT_BANDWIDTH} B/s", "per client (client_bandwidth)"),
        (
            "keyed values sent / superseded",
            f"{total['keyed_msgs']} / {total['superseded']}",
            "superseded: a newer value went instead",
        ),
        ("keyed share of scheduled bytes", f"{share:.1f} %", f"{sent} bytes in all"),
    ]


def _delta_rows(varz: dict[str, Any]) -> list[tuple[str, str, str]]:
    """What deltas against acknowledged state did over all nodes (docs/scheduling.md)."""
    dz = [v["deltas"] for v in varz.values() if "deltas" in v]
    msgs = sum(d["msgs"] for d in dz)
    full = sum(d["full_msgs"] for d in dz)
    plain = sum(d.get("skipped", 0) for d in dz)
    saved = sum(d["bytes_saved"] for d in dz)
    if not msgs + full + plain:
        return []
    sc = [v["scheduler"] for v in varz.values() if "scheduler" in v]
    keyed = sum(s["keyed_bytes"] for s in sc)
    # the keyed bytes sent, against what they would have been with whole values
    share = f"{100 * saved / (keyed + saved):.1f} % of keyed bytes" if keyed + saved else ""
    return [
        (
            "keyed values as deltas / whole",
            f"{msgs} / {full + plain}",
            "keyed_deltas: against what each player acknowledged",
        ),
        ("payload bytes saved by deltas", f"{saved}", share),
    ]


def run_demo(
    *,
    clusters: int,
    nodes: int,
    clients: int,
    duration: float,
    rate: float,
    seed: int,
    backbone: str = "meshgate",
    dashboard: bool = False,
) -> int:
    """Run the demo; returns the exit status.  Ctrl-C or SIGTERM stop it cleanly.

    ``backbone="nats"`` runs the same game with the nodes attached to nats-server
    clusters (one per cluster, joined by gateways) instead of meshgate's own mesh.
    ``dashboard``: print the live dashboard's URL (open it where there is a display)
    and keep the nodes up after the summary until interrupted."""
    if clusters < 1 or nodes < 1 or clients < 0 or duration <= 0 or rate <= 0:
        print("meshgate demo: clusters, nodes, duration and rate must be positive", file=sys.stderr)
        return 2
    nats_binary: str | None = None
    if backbone == "nats":
        nats_binary = find_nats_server()
        if nats_binary is None:
            print(
                "meshgate demo --backbone nats needs nats-server on the PATH "
                "(e.g. apt-get install nats-server, or a release from "
                "https://github.com/nats-io/nats-server/releases)",
                file=sys.stderr,
            )
            return 2

    async def guarded() -> int:
        async with trio.open_nursery() as nursery:
            result: list[int] = []

            async def watch_signals() -> None:
                with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                    async for _ in signals:
                        print("\ninterrupted: stopping the nodes", file=sys.stderr)
                        nursery.cancel_scope.cancel()
                        return

            async def work() -> None:
                result.append(
                    await _main(
                        clusters, nodes, clients, duration, rate, seed, nats_binary, dashboard
                    )
                )
                nursery.cancel_scope.cancel()

            nursery.start_soon(watch_signals)
            nursery.start_soon(work)
        return result[0] if result else 130

    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    return trio.run(guarded)
