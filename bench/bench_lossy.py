"""What a player sees over a lossy link (issue 20): the age of the freshest state each
client holds, and how long its inputs take to reach the node.

One node (in this process) serves ``tcp://`` and ``quic://``.  A publisher next to the
node sends the keyed state of ``--entities`` entities at ``--rate`` Hz each (one
``state.<entity>`` message per update, ``key=<entity>``).  ``--clients`` clients
subscribe to all of it and send an input every 50 ms, in three scenarios run one after
the other in one run:

* ``quic-datagrams``: QUIC through the UDP fault proxy (``--loss`` in each direction,
  ``--delay`` +- ``--jitter`` one way); keyed state as unreliable datagrams (every 8th
  update of a key on the stream, the node's default refresh);
* ``quic-stream``: the same link, everything on the reliable stream
  (``datagram_refresh = 1``): a lost packet holds back everything after it;
* ``tcp-clean``: TCP on a clean loopback link (the reference).

Every 10 ms a sampler takes, per client and entity, the age of the freshest state the
client holds (now minus the time that state was published); the report gives p50, p99
and max of those ages, and p50/p99/max of the inputs' one-way delivery latency (a
client's publish to its arrival at a subscriber next to the node).  One clock for
everything: all of it runs in one trio process.

    python bench/bench_lossy.py --clients 10 --entities 5 --seconds 10

writes ``bench/results/lossy-<time>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import ssl
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import attrs
import trio
import trustme

import meshgate
from meshgate import GatewayConfig, open_gateway
from meshgate.testing.chaos import UdpFaults, open_udp_fault_proxy
from meshgate.transports import QuicLimits

RESULTS = Path(__file__).resolve().parent / "results"
INPUT_INTERVAL = 0.05


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _summary(values: list[float], limit: float | None = None) -> dict[str, float]:
    out = {
        "n": len(values),
        "p50_ms": round(_pct(values, 0.50) * 1000, 2),
        "p99_ms": round(_pct(values, 0.99) * 1000, 2),
        "max_ms": round(max(values, default=float("nan")) * 1000, 2),
        "mean_ms": round(statistics.fmean(values) * 1000, 2) if values else float("nan"),
    }
    if limit is not None and values:
        # the share of the time a player looks at state older than the target: a
        # head-of-line stall holds every entity back at once, a lost datagram one
        out["over_target_pct"] = round(100 * sum(v > limit for v in values) / len(values), 3)
        out["over_2x_target_pct"] = round(100 * sum(v > 2 * limit for v in values) / len(values), 3)
    return out


async def _scenario(
    name: str, args: argparse.Namespace, certs: tuple[str, str, str]
) -> dict[str, Any]:
    cert_file, key_file, ca_file = certs
    datagrams = name == "quic-datagrams"
    cfg = GatewayConfig(
        listen=["tcp://127.0.0.1:0", "quic://127.0.0.1:0"],
        tls_cert_file=cert_file,
        tls_key_file=key_file,
        datagram_refresh=8 if datagrams else 1,
        max_pending_bytes=8 * 1024 * 1024,
        quic_limits=QuicLimits(max_datagram_bytes=args.max_datagram_bytes)
        if args.max_datagram_bytes
        else None,
    )
    faults = UdpFaults(drop=args.loss, delay=args.delay, jitter=args.jitter)
    entities = [f"e{i}" for i in range(args.entities)]
    input_latency: list[float] = []
    async with open_gateway(cfg) as gw:
        tcp_url, quic_url = gw.client_urls
        async with (
            open_udp_fault_proxy(quic_url, faults=faults, seed=args.seed) as proxy,
            meshgate.connect(tcp_url) as publisher,
            publisher.subscribe("input.>") as inputs,
            trio.open_nursery() as nursery,
        ):
            await publisher.flush()
            url = f"quic://127.0.0.1:{proxy.address[1]}" if name.startswith("quic") else tcp_url
            if args.no_proxy and name.startswith("quic"):
                url = quic_url
            running = False

            async def publish_state() -> None:
                period = 1 / args.rate
                start = trio.current_time()
                n = 0
                while True:
                    await trio.sleep_until(start + n * period)
                    for e in entities:
                        await publisher.publish(
                            f"state.{e}", f"{n} {time.monotonic()!r}".encode(), key=e
                        )
                    n += 1

            async def collect_inputs() -> None:
                async for msg in inputs:
                    if running:
                        input_latency.append(  # noqa: PERF401 (a flag read per arrival)
                            time.monotonic() - float(msg.payload)
                        )

            nursery.start_soon(publish_state)
            nursery.start_soon(collect_inputs)
            # the clients run in worker processes: their QUIC stacks (aioquic is pure
            # Python where it is not crypto) must not share the node's CPU and loop
            per = [len(range(k, args.clients, args.procs)) for k in range(args.procs)]
            workers = []
            first = 0
            for count in per:
                if not count:
                    continue
                cmd = [
                    sys.executable,
                    __file__,
                    "--worker",
                    url,
                    "--ca",
                    ca_file,
                    "--first",
                    str(first),
                    "--clients",
                    str(count),
                    "--entities",
                    str(args.entities),
                    "--seconds",
                    str(args.seconds),
                    "--warmup",
                    str(args.warmup),
                ]
                first += count
                workers.append(await trio.lowlevel.open_process(cmd, stdout=subprocess.PIPE))
            outputs: list[bytes] = []

            async def read(proc: trio.Process) -> None:
                assert proc.stdout is not None
                chunks = []
                while chunk := await proc.stdout.receive_some(1 << 20):
                    chunks.append(chunk)
                await proc.wait()
                outputs.append(b"".join(chunks))

            async with trio.open_nursery() as readers:
                for w in workers:
                    readers.start_soon(read, w)
                await trio.sleep(args.warmup + 2.0)  # connections, then the workers' warmup
                running = True
            running = False
            stats = gw.statistics()
            proxy_stats = attrs.asdict(proxy.stats)
            nursery.cancel_scope.cancel()
    ages: list[float] = []
    received = {"datagram": 0, "stream": 0}
    for out in outputs:
        r = json.loads(out)
        ages += r["ages"]
        for k in received:
            received[k] += r["received"][k]
    return {
        "scenario": name,
        "link": "clean loopback"
        if name == "tcp-clean"
        else f"{args.loss:.0%} loss each way, {args.delay * 1000:.0f} ms +- "
        f"{args.jitter * 1000:.0f} ms one way",
        "freshest_state_age": _summary(ages, 2 / args.rate + args.delay),
        "input_latency": _summary(input_latency),
        "state_received": received,
        "node_datagrams_out": stats.datagrams_out,
        "node_datagrams_superseded": stats.datagrams_superseded,
        "proxy": proxy_stats if name.startswith("quic") else None,
    }


async def _worker(args: argparse.Namespace) -> None:
    """Clients ``--first`` .. of one scenario: subscribe, send inputs, sample the age of
    the freshest state held; print the ages as JSON when done."""
    url: str = args.worker
    ctx = ssl.create_default_context(cafile=args.ca) if url.startswith("quic") else None
    entities = [f"e{i}" for i in range(args.entities)]
    freshest: list[dict[str, float]] = [{} for _ in range(args.clients)]
    received = {"datagram": 0, "stream": 0}
    ages: list[float] = []
    async with trio.open_nursery() as nursery:
        clients = [
            await nursery.start(_client, url, ctx, freshest[i], received)
            for i in range(args.clients)
        ]

        async def send_inputs(c: meshgate.Client, i: int) -> None:
            start = trio.current_time() + (i % 10) * INPUT_INTERVAL / 10
            n = 0
            while True:
                await trio.sleep_until(start + n * INPUT_INTERVAL)
                await c.publish(f"input.{i}", repr(time.monotonic()).encode())
                n += 1

        for i, c in enumerate(clients):
            nursery.start_soon(send_inputs, c, args.first + i)
        await trio.sleep(args.warmup)
        end = trio.current_time() + args.seconds
        while trio.current_time() < end:
            await trio.sleep(0.01)
            now = time.monotonic()
            for held in freshest:
                for e in entities:
                    t = held.get(e)
                    if t is not None:
                        ages.append(now - t)
        nursery.cancel_scope.cancel()
    sys.stdout.write(json.dumps({"ages": ages, "received": received}))


async def _client(
    url: str,
    ctx: ssl.SSLContext | None,
    held: dict[str, float],
    received: dict[str, int],
    task_status: trio.TaskStatus[meshgate.Client] = trio.TASK_STATUS_IGNORED,
) -> None:
    async with meshgate.connect(url, ssl_context=ctx) as c, c.subscribe("state.>") as sub:
        await c.flush()
        task_status.started(c)
        async for msg in sub:
            _, sent = msg.payload.split()
            t = float(sent)
            e = msg.subject[6:]
            if t > held.get(e, 0.0):
                held[e] = t
            received["datagram" if msg.unreliable else "stream"] += 1


def _certs(directory: str) -> tuple[str, str, str]:
    """The node's certificate and key files, and its CA's certificate file."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    cert_file, key_file = d / "lossy-cert.pem", d / "lossy-key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    ca_file = d / "lossy-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return str(cert_file), str(key_file), str(ca_file)


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    certs = _certs(args.tmp)
    out = []
    load_before = os.getloadavg()
    for name in ("quic-datagrams", "quic-stream", "tcp-clean"):
        result = await _scenario(name, args, certs)
        print(json.dumps(result), file=sys.stderr, flush=True)
        out.append(result)
    interval = 1 / args.rate
    target = 2 * interval + args.delay
    dg = out[0]["freshest_state_age"]["p99_ms"] / 1000
    return {
        "bench": "lossy",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": platform.python_version(),
        "core": meshgate.CORE,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        # the machine's load (1, 5, 15 min) before and after: a shared machine's other
        # work takes CPU from the pure-Python QUIC path first
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "params": {
            "clients": args.clients,
            "entities": args.entities,
            "rate_hz": args.rate,
            "loss": args.loss,
            "delay_ms": args.delay * 1000,
            "jitter_ms": args.jitter * 1000,
            "seconds": args.seconds,
            "seed": args.seed,
            "max_datagram_bytes": args.max_datagram_bytes or QuicLimits().max_datagram_bytes,
        },
        "target_p99_ms": round(target * 1000, 1),
        "datagrams_within_target": dg <= target,
        "scenarios": out,
    }


def main() -> None:
    """Run the three scenarios and write the JSON result."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=10)
    p.add_argument("--entities", type=int, default=5)
    p.add_argument("--rate", type=float, default=20.0, help="state updates per entity per s")
    p.add_argument("--loss", type=float, default=0.02)
    p.add_argument("--delay", type=float, default=0.020)
    p.add_argument("--jitter", type=float, default=0.005)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=20)
    p.add_argument("--no-proxy", action="store_true", help="QUIC straight to the node")
    p.add_argument("--procs", type=int, default=2, help="worker processes for the clients")
    p.add_argument(
        "--max-datagram-bytes",
        type=int,
        default=0,
        help="QuicLimits.max_datagram_bytes of the node (0: the default)",
    )
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--ca", default=None, help=argparse.SUPPRESS)
    p.add_argument("--first", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--tmp", default="/tmp/meshgate-bench-lossy")
    p.add_argument("--out", default=None, help="result file (default bench/results/lossy-*)")
    args = p.parse_args()
    if args.worker:
        trio.run(_worker, args)
        return
    result = trio.run(_main, args)
    path = Path(args.out) if args.out else RESULTS / f"lossy-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "scenarios"}, indent=2))
    for s in result["scenarios"]:
        print(s["scenario"], "age", s["freshest_state_age"], "input", s["input_latency"])
    print("wrote", path)


if __name__ == "__main__":
    main()
