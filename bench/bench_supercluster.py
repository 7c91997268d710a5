"""Cross-cluster benchmark: meshgate against nats-server, same machine, same run.

Two clusters of one node each, joined by gateways; publishers and requesters in
cluster A, subscribers and responders in cluster B.  Three deployments: meshgate's own
gateways, pure nats-server, and meshgate nodes attached to those nats-server clusters
as leaf nodes (the backbone; clients on the meshgate nodes).  Scenarios: throughput at
16/128/1024-byte payloads, fan-out to 10 and 100 subscribers (128 B), request/reply
latency p50/p99.  Same raw-socket load generators as ``bench_node.py``; every server
runs in its own process (meshgate via ``meshgate serve -c``).

Run: ``python bench/bench_supercluster.py`` (``--quick`` for a smoke run,
``--no-nats`` to skip the reference).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import bench_node as bn


def start_meshgate_pair(tmp: str) -> tuple[list[subprocess.Popen[bytes]], int, int]:
    ports = {n: (bn.free_port(), bn.free_port()) for n in ("a0", "b0")}
    procs = []
    for name, cluster, remote in (("a0", "A", None), ("b0", "B", "a0")):
        client, gw = ports[name]
        conf = Path(tmp) / f"{name}.toml"
        text = (
            f'name = "{name}"\ncluster = "{cluster}"\nlisten = "127.0.0.1:{client}"\n'
            f'gateway_listen = "127.0.0.1:{gw}"\nmax_pending_bytes = 536870912\n'
            "ping_interval = 600.0\nreconnect_wait = 0.1\n"
        )
        if remote:
            text += f'[gateways]\nA = ["tcp://127.0.0.1:{ports[remote][1]}"]\n'
        conf.write_text(text)
        proc = subprocess.Popen(
            [sys.executable, "-m", "meshgate", "serve", "-c", str(conf)], stdout=subprocess.PIPE
        )
        assert proc.stdout is not None
        json.loads(proc.stdout.readline())  # ready
        procs.append(proc)
    return procs, ports["a0"][0], ports["b0"][0]


def start_nats_pair(
    binary: str, tmp: str
) -> tuple[list[subprocess.Popen[bytes]], int, int, int, int]:
    """Two nats-servers (clusters A and B) joined by gateways, with leafnode listeners:
    (processes, client port A, client port B, leafnode port A, leafnode port B)."""
    ports = {n: (bn.free_port(), bn.free_port(), bn.free_port()) for n in ("A", "B")}
    procs = []
    for name, other in (("A", "B"), ("B", "A")):
        client, gw, leaf = ports[name]
        conf = Path(tmp) / f"nats-{name}.conf"
        conf.write_text(
            # leaf nodes beside gateways need a system account; everyone else is in APP
            "accounts { SYS: { users: [{user: sys, password: sys-bench}] }, "
            "APP: { users: [{user: app, password: app-bench}] } }\n"
            "system_account: SYS\nno_auth_user: app\n"
            f'server_name: "{name.lower()}0"\nlisten: "127.0.0.1:{client}"\n'
            "max_pending: 512MB\nmax_payload: 1MB\n"
            f'gateway {{ name: "{name}", listen: "127.0.0.1:{gw}", gateways: '
            f'[{{name: "{other}", urls: ["nats://127.0.0.1:{ports[other][1]}"]}}] }}\n'
            f'leafnodes {{ listen: "127.0.0.1:{leaf}" }}\n'
        )
        proc = subprocess.Popen([binary, "-c", str(conf)], stderr=subprocess.DEVNULL)
        bn.wait_port(client, proc)
        bn.wait_port(leaf, proc)
        procs.append(proc)
    return procs, ports["A"][0], ports["B"][0], ports["A"][2], ports["B"][2]


def start_meshgate_on_backbone(
    tmp: str, leaf_a: int, leaf_b: int
) -> tuple[list[subprocess.Popen[bytes]], int, int]:
    """One meshgate node per nats-server cluster, attached as a leaf node."""
    procs = []
    clients = []
    for name, cluster, leaf in (("ba0", "A", leaf_a), ("bb0", "B", leaf_b)):
        client = bn.free_port()
        conf = Path(tmp) / f"{name}.toml"
        conf.write_text(
            f'name = "{name}"\ncluster = "{cluster}"\nlisten = "127.0.0.1:{client}"\n'
            f'backbone = ["nats://127.0.0.1:{leaf}"]\nmax_pending_bytes = 536870912\n'
            "ping_interval = 600.0\nreconnect_wait = 0.1\n"
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "meshgate", "serve", "-c", str(conf)], stdout=subprocess.PIPE
        )
        assert proc.stdout is not None
        json.loads(proc.stdout.readline())  # ready
        procs.append(proc)
        clients.append(client)
    return procs, clients[0], clients[1]


def main() -> None:
    args, n1, n10, n100, rounds = bn.parse_args(__doc__)
    tmp = tempfile.mkdtemp()
    procs: list[subprocess.Popen[bytes]] = []
    servers: dict[str, tuple[bn.Flavour, int, int]] = {}
    try:
        mp, ma, mb = start_meshgate_pair(tmp)
        procs += mp
        servers["meshgate"] = (bn.MeshgateFlavour(), ma, mb)
        nats = None if args.no_nats else bn.find_nats()
        if nats:
            np_, na, nb, la, lb = start_nats_pair(nats, tmp)
            procs += np_
            servers["nats"] = (bn.NatsFlavour(), na, nb)
            bp, ba, bb = start_meshgate_on_backbone(tmp, la, lb)
            procs += bp
            servers["meshgate-backbone"] = (bn.MeshgateFlavour(), ba, bb)
        elif not args.no_nats:
            print("nats-server unavailable: reference columns empty", file=sys.stderr)
        rows: list[bn.Row] = []
        reps = args.repeat
        for size in (16, 128, 1024):
            row = bn.Row(f"A -> B throughput, {size} B", "msg/s")
            for k, (fl, a, b) in servers.items():
                bn.sample(
                    row,
                    k,
                    lambda fl=fl, a=a, b=b, size=size: bn.throughput(
                        fl, a, size, 1, n1, sub_port=b
                    ),
                    reps,
                )
            rows.append(row)
        for n, cnt in ((10, n10), (100, n100)):
            row = bn.Row(f"A -> {n} in B, 128 B", "deliveries/s")
            for k, (fl, a, b) in servers.items():
                bn.sample(
                    row,
                    k,
                    lambda fl=fl, a=a, b=b, n=n, cnt=cnt: bn.throughput(
                        fl, a, 128, n, cnt, sub_port=b
                    ),
                    reps,
                )
            rows.append(row)
        p50, p99 = (
            bn.Row("A -> B request/reply p50", "us"),
            bn.Row("A -> B request/reply p99", "us"),
        )
        for k, (fl, a, b) in servers.items():
            bn.request_reply(fl, a, rounds, responder_port=b)  # warm-up
            runs = [bn.request_reply(fl, a, rounds, responder_port=b) for _ in range(reps)]
            p50.samples[k] = [r[0] for r in runs]
            p99.samples[k] = [r[1] for r in runs]
        rows += [p50, p99]
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    bn.print_table(rows)
    if args.json:
        bn.write_json(args.json, "supercluster", rows, args.repeat)


if __name__ == "__main__":
    main()
